"""`python -m trainer import FILE --model NAME` as a user runs it: an SB3 zip becomes a policy of the model, with
its normalization and origin; a file the API refuses is refused here too, with nothing stored."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from models.policy import NumpyActor
from store.db import create_db_engine, make_session_factory
from store.policies import list_policies
from tests.models.test_imports import hostile_state_dict
from tests.sb3_models import Trained, observations
from tests.trainer.cli_run import run_cli

# Trains policies with Stable-Baselines3 and CleanRL (once per session, about 10 s) and runs the command line.
pytestmark = pytest.mark.slow


def stored(database_url: str) -> list[bytes]:
    engine = create_db_engine(database_url)
    try:
        with make_session_factory(engine)() as session:
            return [policy.weights for policy in list_policies(session)[0]]
    finally:
        engine.dispose()


def test_an_sb3_zip_with_vec_normalize_is_imported_and_a_hostile_one_refused(
    tmp_path: Path, foreign: dict[str, Trained]
) -> None:
    database_url = f"sqlite:///{tmp_path / 'store.sqlite3'}"
    item = foreign["ppo_normalized"]
    stats = tmp_path / "obs_normalization.json"
    stats.write_text(item.obs_normalization or "")
    done = run_cli(
        "import", str(item.path), "--model", "pendulum", "--obs-normalization", str(stats),
        "--database-url", database_url, cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["origin"].startswith("sb3:PPO ") and report["champion"] is True
    (weights,) = stored(database_url)
    obs = observations(200)
    served = NumpyActor.from_bytes(weights).act(obs)
    assert np.abs(served - np.asarray(item.predict(obs)).reshape(len(obs), -1)).max() <= 1e-5

    target = tmp_path / "created-by-the-import"
    hostile = tmp_path / "hostile.zip"
    with zipfile.ZipFile(foreign["td3"].path) as source, zipfile.ZipFile(hostile, "w") as copy:
        for info in source.infolist():
            content = hostile_state_dict(target) if info.filename == "policy.pth" else source.read(info.filename)
            copy.writestr(info.filename, content)
    refused = run_cli("import", str(hostile), "--model", "pendulum", "--database-url", database_url, cwd=tmp_path)
    assert refused.returncode == 1 and "file.policy.pth" in refused.stderr
    assert not target.exists() and len(stored(database_url)) == 1
