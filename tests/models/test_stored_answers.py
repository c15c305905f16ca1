"""A stored `ddpg-actor/1` file answers what the three-layer actor answered before the general format.

The fixture's answers were written by the seed-only NumpyActor (act on a batch, act_one per observation) before
any reader of the general format existed. The one-observation kernel must give them bit for bit. The batch path
multiplies through numpy's BLAS, whose kernel (and so its order of summation) depends on the CPU: there, the test
replays the old actor's arithmetic on this machine and requires the same bits, and the stored answers (another
CPU's) within float32 rounding of the action range. A change of rounding anywhere on either path fails here.
"""

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt
from safetensors import safe_open
from safetensors.numpy import load_file

from models.policy import NumpyActor

FIXTURES = Path(__file__).parent / "fixtures"
STORED_FILE = FIXTURES / "ddpg_actor_v1.safetensors"
# Summation order alone moves these actions (range [-2, 2], 64-term dot products) by under 1e-6 (4e-7 measured
# between two CPUs); any change of formula or weights moves them by orders of magnitude more.
BLAS_TOLERANCE = 2e-6


def _answers() -> dict[str, list[list[str]] | list[list[float]]]:
    loaded: dict[str, list[list[str]] | list[list[float]]] = json.loads(
        (FIXTURES / "ddpg_actor_v1_answers.json").read_text()
    )
    return loaded


def _from_hex(rows: list[list[str]]) -> npt.NDArray[np.float32]:
    return np.array([[float.fromhex(value) for value in row] for row in rows], dtype=np.float32)


def _seed_actor_batch(observations: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """The seed-only NumpyActor.act, operation for operation (as it was before the general format)."""
    t = load_file(STORED_FILE)
    with safe_open(STORED_FILE, "np") as stored:
        meta = stored.metadata()
    low = np.array(json.loads(meta["action_low"]), dtype=np.float32)
    high = np.array(json.loads(meta["action_high"]), dtype=np.float32)
    h = observations @ np.ascontiguousarray(t["linear1.weight"].T)
    h += t["linear1.bias"]
    np.maximum(h, 0.0, out=h)
    h = h @ np.ascontiguousarray(t["linear2.weight"].T)
    h += t["linear2.bias"]
    np.maximum(h, 0.0, out=h)
    out = h @ np.ascontiguousarray(t["linear3.weight"].T)
    out += t["linear3.bias"]
    np.tanh(out, out=out)
    out *= ((high - low) / 2).astype(np.float32)
    out += ((high + low) / 2).astype(np.float32)
    np.maximum(out, low, out=out)
    np.minimum(out, high, out=out)
    result: npt.NDArray[np.float32] = out
    return result


def test_a_stored_ddpg_actor_file_answers_as_before() -> None:
    actor = NumpyActor.from_file(STORED_FILE)
    answers = _answers()
    observations = np.array(answers["observations"], dtype=np.float32)
    batch = actor.act(observations)
    one = np.array([actor.act_one(np.ascontiguousarray(row)) for row in observations], dtype=np.float32)
    np.testing.assert_array_equal(one, _from_hex(answers["act_one_float32_hex"]))  # type: ignore[arg-type]
    np.testing.assert_array_equal(batch, _seed_actor_batch(observations))
    stored_batch = _from_hex(answers["act_batch_float32_hex"])  # type: ignore[arg-type]
    np.testing.assert_allclose(batch, stored_batch, rtol=0, atol=BLAS_TOLERANCE)
