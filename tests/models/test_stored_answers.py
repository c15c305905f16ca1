"""A stored `ddpg-actor/1` file answers, bit for bit, what the three-layer actor answered before the general format.

The fixture's answers were written by the seed-only NumpyActor (act on a batch, act_one per observation) before
any reader of the general format existed; a change of rounding anywhere on either path fails here.
"""

import json
from pathlib import Path

import numpy as np

from models.policy import NumpyActor

FIXTURES = Path(__file__).parent / "fixtures"


def _answers() -> dict[str, list[list[str]] | list[list[float]]]:
    loaded: dict[str, list[list[str]] | list[list[float]]] = json.loads(
        (FIXTURES / "ddpg_actor_v1_answers.json").read_text()
    )
    return loaded


def _from_hex(rows: list[list[str]]) -> np.ndarray:
    return np.array([[float.fromhex(value) for value in row] for row in rows], dtype=np.float32)


def test_a_stored_ddpg_actor_file_answers_bit_for_bit_as_before() -> None:
    actor = NumpyActor.from_file(FIXTURES / "ddpg_actor_v1.safetensors")
    answers = _answers()
    observations = np.array(answers["observations"], dtype=np.float32)
    batch = actor.act(observations)
    one = np.array([actor.act_one(np.ascontiguousarray(row)) for row in observations], dtype=np.float32)
    np.testing.assert_array_equal(batch, _from_hex(answers["act_batch_float32_hex"]))  # type: ignore[arg-type]
    np.testing.assert_array_equal(one, _from_hex(answers["act_one_float32_hex"]))  # type: ignore[arg-type]
