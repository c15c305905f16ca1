"""POST /train accepts exactly the bodies the trainer accepts: no job ever fails on its config.

Hypothesis draws bodies field by field from the one config model (values inside, on and beyond each bound,
wrong types, and batch/replay sizes near each other so the cross-field rule is hit), posts them, and checks the
answer against the worker's own validation of the same preset and overrides plus the server's budget.
"""

from __future__ import annotations

from typing import Any

import annotated_types
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic.fields import FieldInfo

from models.training_config import PRESET_NAMES, PROMOTE_RULES, TrainingConfig, load_job_config
from tests.app.conftest import Api, ApiFactory

BUDGET = {"episodes": 50, "max_episode_steps": 300, "hidden_size": 128, "batch_size": 512, "replay_size": 200_000}
_WRONG_TYPES = st.sampled_from([True, "12", [1], {"x": 1}, "nan"])


def _bounds(info: FieldInfo) -> tuple[float, float]:
    low, high = -1e9, 1e9
    for bound in info.metadata:
        if isinstance(bound, annotated_types.Ge | annotated_types.Gt):
            low = float(getattr(bound, "ge", getattr(bound, "gt", low)))
        if isinstance(bound, annotated_types.Le | annotated_types.Lt):
            high = float(getattr(bound, "le", getattr(bound, "lt", high)))
    return low, high


def _values(name: str, info: FieldInfo) -> st.SearchStrategy[Any]:
    """Values for one field: mostly plausible, some on or past a bound, some of the wrong type."""
    annotation = str(info.annotation)
    if name == "noise":
        return st.sampled_from(["ou", "gaussian", "pink", None])
    if name == "export":
        return st.sampled_from(["best", "last", "first"])
    low, high = _bounds(info)
    if "float" in annotation:
        plausible: st.SearchStrategy[Any] = st.floats(min_value=max(low, -2.0), max_value=min(high, 2.0))
        edges = st.sampled_from([low, high, low - 1e-3, high + 1.0, 0.0, 1])
    else:
        plausible = st.integers(min_value=int(max(low, 0)), max_value=int(min(high, 600)))
        edges = st.sampled_from([int(low), int(high), int(low) - 1, int(high) + 1])
    return st.one_of(plausible, plausible, edges, _WRONG_TYPES, st.none())


_FIELDS = {name: info for name, info in TrainingConfig.model_fields.items() if name != "env_id"}


@st.composite
def train_bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {}
    if draw(st.booleans()):
        body["preset"] = draw(st.sampled_from([*PRESET_NAMES, "nope"]))
    if draw(st.booleans()):
        body["promote"] = draw(st.sampled_from([*PROMOTE_RULES, "sometimes"]))
    for name in draw(st.lists(st.sampled_from(sorted(_FIELDS)), max_size=6, unique=True)):
        body[name] = draw(_values(name, _FIELDS[name]))
    if draw(st.booleans()):  # the cross-field rule: replay_size must hold a batch
        body["batch_size"] = draw(st.integers(1, 600))
        body["replay_size"] = draw(st.integers(1, 600))
    return body


def _trainer_accepts(body: dict[str, Any]) -> bool:
    """What the worker would do with this body as a job config, and the server's budget on the result."""
    if body.get("promote", "if_better") not in PROMOTE_RULES:
        return False
    overrides = {key: value for key, value in body.items() if key != "promote" and value is not None}
    try:
        config = load_job_config(overrides)
    except ValueError:
        return False
    return all(getattr(config, name) is None or getattr(config, name) <= limit for name, limit in BUDGET.items())


def _train_api(make_api: ApiFactory) -> Api:
    return make_api(
        max_queued_jobs=100_000,
        train_max_episodes=BUDGET["episodes"],
        train_max_episode_steps=BUDGET["max_episode_steps"],
        train_max_hidden_size=BUDGET["hidden_size"],
        train_max_batch_size=BUDGET["batch_size"],
        train_max_replay_size=BUDGET["replay_size"],
    )


def test_post_train_accepts_exactly_what_the_trainer_accepts(make_api: ApiFactory) -> None:
    api = _train_api(make_api)  # one app for every example: starting one per body would dominate the run

    @settings(max_examples=200, deadline=None)
    @given(body=train_bodies())
    def check(body: dict[str, Any]) -> None:
        response = api.client.post("/train", json=body)
        expected = 202 if _trainer_accepts(body) else 422
        assert response.status_code == expected, (body, response.text)
        if response.status_code == 202:
            # What was queued is what the worker will validate again: it must pass there too.
            load_job_config(response.json()["config"])
        else:
            fields = {detail["field"] for detail in response.json()["error"]["details"]}
            # The field at fault, which may be one the preset filled in (a budget below the preset's value).
            assert fields and fields <= set(body) | set(_FIELDS) | {"body"}, (body, fields)

    check()


def test_replay_smaller_than_the_presets_batch_is_422_naming_replay_size(api: Api) -> None:
    response = api.client.post("/train", json={"replay_size": 100})
    assert response.status_code == 422
    assert [detail["field"] for detail in response.json()["error"]["details"]] == ["replay_size"]
    assert "batch_size (256)" in response.json()["error"]["message"]
    assert api.client.get("/jobs").json()["total"] == 0


def test_the_budget_applies_to_the_preset_values_too(make_api: ApiFactory) -> None:
    api = make_api(train_max_episodes=40)
    response = api.client.post("/train", json={"preset": "seed"})  # the seed preset runs 100 episodes
    assert response.status_code == 422 and "episodes" in response.json()["error"]["message"]
    assert api.client.post("/train", json={"preset": "seed", "episodes": 40}).status_code == 202
