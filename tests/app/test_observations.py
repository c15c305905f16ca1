"""The hand-written /act body parser: every accepted shape and every rejected one, with the field named."""

from __future__ import annotations

import numpy as np
import orjson
import pytest

from app.infra.errors import ApiError
from app.serving.observations import parse_act_body


def parse(payload: object, max_batch: int = 4) -> object:
    return parse_act_body(orjson.dumps(payload), max_batch)


def test_one_observation_becomes_a_float32_vector() -> None:
    parsed = parse_act_body(b'{"observation": [1, 0.5, -2e3]}', 4)
    assert parsed.observations.dtype == np.float32
    assert parsed.observations.tolist() == [1.0, 0.5, -2000.0]
    assert not parsed.batched and parsed.count == 1 and parsed.obs_dim == 3 and parsed.policy_id is None


def test_a_batch_becomes_a_float32_matrix_and_keeps_the_policy_id() -> None:
    parsed = parse_act_body(b'{"observations": [[1, 2], [3, 4.5]], "policy_id": 7}', 4)
    assert parsed.observations.shape == (2, 2) and parsed.observations.dtype == np.float32
    assert parsed.batched and parsed.count == 2 and parsed.policy_id == 7


def test_integers_mixed_with_floats_and_a_null_policy_id_are_accepted() -> None:
    parsed = parse_act_body(b'{"observations": [[1, 2.5], [-3, 4]], "policy_id": null}', 4)
    assert parsed.observations.tolist() == [[1.0, 2.5], [-3.0, 4.0]] and parsed.policy_id is None


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (b"", "body", "required"),
        (b"not json", "body", "not valid JSON"),
        (b'{"observation": [NaN, 1]}', "body", "not valid JSON"),
        (b'{"observation": [Infinity, 1]}', "body", "not valid JSON"),
        (b'{"observation": [1e400, 1]}', "body", "not valid JSON"),
        (b"[1, 2, 3]", "body", "JSON object"),
        (b"{}", "observation", "required"),
        (b'{"observation": [1], "extra": 1}', "extra", "unknown field"),
        (b'{"observation": [1], "observations": [[1]]}', "observations", "not both"),
        (b'{"observation": "1,2,3"}', "observation", "list of numbers"),
        (b'{"observation": []}', "observation", "non-empty"),
        (b'{"observation": [1, "2", 3]}', "observation[1]", "got string"),
        (b'{"observation": [1, true, 3]}', "observation[1]", "got boolean"),
        (b'{"observation": [1, null, 3]}', "observation[1]", "got null"),
        (b'{"observation": [1, [2], 3]}', "observation[1]", "got array"),
        (b'{"observation": [1, {"a": 2}, 3]}', "observation[1]", "got object"),
        (b'{"observation": [[1, 2, 3]]}', "observation[0]", "got array"),
        (b'{"observation": [1e39, 0, 0]}', "observation[0]", "float32"),
        (b'{"observations": [1, 2, 3]}', "observations[0]", "list of numbers"),
        (b'{"observations": []}', "observations", "at least one"),
        (b'{"observations": {"a": 1}}', "observations", "list of observations"),
        (b'{"observations": [[1, 2], [3]]}', "observations[1]", "all must be equal"),
        (b'{"observations": [[1, 2], []]}', "observations[1]", "non-empty"),
        (b'{"observations": [[1, 2], [3, "x"]]}', "observations[1][1]", "got string"),
        (b'{"observations": [[1, 2], [3, [4, 5]]]}', "observations[1][1]", "got array"),
        (b'{"observations": [[1, 2], [3, false]]}', "observations[1][1]", "got boolean"),
        (b'{"observations": [[1], [2], [3], [4], [5]]}', "observations", "at most 4"),
        (b'{"observation": [1], "policy_id": 0}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": "3"}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": true}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": 1.5}', "policy_id", "positive integer"),
        (b'{"observation": [1], "policy_id": 99999999999}', "policy_id", "at most"),
    ],
)
def test_invalid_bodies_are_422_naming_the_field(body: bytes, field: str, words: str) -> None:
    with pytest.raises(ApiError) as caught:
        parse_act_body(body, 4)
    error = caught.value
    assert error.status_code == 422 and error.code == "validation_error"
    assert error.details[0]["field"] == field, error.details
    assert words in error.message, error.message
    assert error.message.startswith(field)
