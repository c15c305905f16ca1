"""The experience chunk format: exact round trips, and refusals that name the problem."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from models.experience_chunks import (
    COLUMNS,
    ChunkFormatError,
    ExperienceColumns,
    decode_chunk,
    empty_columns,
    encode_chunk,
    read_table,
)


def _columns(n: int, obs_dim: int = 3, act_dim: int = 2, seed: int = 0) -> ExperienceColumns:
    rng = np.random.default_rng(seed)
    terminated = np.zeros(n, np.bool_)
    truncated = np.zeros(n, np.bool_)
    terminated[n // 2] = True
    truncated[-1] = True
    return ExperienceColumns(
        observation=rng.normal(size=(n, obs_dim)).astype(np.float32),
        action=rng.normal(size=(n, act_dim)).astype(np.float32),
        reward=rng.normal(size=n).astype(np.float32),
        next_observation=rng.normal(size=(n, obs_dim)).astype(np.float32),
        terminated=terminated,
        truncated=truncated,
        policy_id=np.where(np.arange(n) % 3 == 0, -1, 7).astype(np.int64),
        session=np.array([f"s-{i % 4}-é" for i in range(n)], dtype=object),
        episode=rng.integers(0, 2**63 - 1, size=n, dtype=np.int64),
        step=np.arange(n, dtype=np.int32),
        noise=rng.normal(size=(n, act_dim)).astype(np.float32),
        noise_scale=np.full(n, 0.1, np.float32),
        time=1.7e9 + np.arange(n, dtype=np.float64) * 0.01,
    )


def test_round_trip_is_exact() -> None:
    columns = _columns(1000)
    decoded = decode_chunk(encode_chunk(columns))
    for name in COLUMNS:
        expected, got = getattr(columns, name), getattr(decoded, name)
        assert got.dtype == expected.dtype, name
        assert np.array_equal(got, expected), name
    assert decoded.episodes_ended() == 2


def test_compressed_below_the_raw_size() -> None:
    columns = _columns(5000)
    columns.noise[:] = 0  # as without exploration: constant columns cost almost nothing
    raw = sum(getattr(columns, name).nbytes for name in COLUMNS if name != "session")
    assert len(encode_chunk(columns)) < raw


def test_empty_round_trip() -> None:
    assert len(decode_chunk(encode_chunk(empty_columns(4, 1)))) == 0


def test_wrong_dtype_is_named() -> None:
    columns = _columns(4)
    bad = ExperienceColumns(**{**{n: getattr(columns, n) for n in COLUMNS}, "reward": columns.reward.astype(float)})
    with pytest.raises(ChunkFormatError, match="reward"):
        encode_chunk(bad)


def test_terminated_and_truncated_together_refused() -> None:
    columns = _columns(4)
    columns.terminated[0] = columns.truncated[0] = True
    with pytest.raises(ChunkFormatError, match="both terminated and truncated"):
        encode_chunk(columns)


def test_foreign_bytes_refused() -> None:
    with pytest.raises(ChunkFormatError, match="Arrow"):
        decode_chunk(b"not a chunk")
    import pyarrow as pa

    sink = pa.BufferOutputStream()
    table = pa.table({"x": [1, 2]})
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ChunkFormatError, match="format"):
        read_table(sink.getvalue().to_pybytes())


@pytest.mark.parametrize("rows", [slice(3, 500), np.arange(1, 999, 3)])
def test_round_trip_of_a_part_is_exact(rows: slice | np.ndarray) -> None:
    # What a flush encodes: a slice of its columns (views at an offset), lengths that are not a multiple of 8.
    columns = _columns(1000).take(rows)
    decoded = decode_chunk(encode_chunk(columns))
    for name in COLUMNS:
        assert np.array_equal(getattr(decoded, name), getattr(columns, name)), name


def test_encoding_does_not_import_pandas() -> None:
    # pyarrow's conversions import pandas when it is installed: a quarter of a second of CPU, GIL held, at an API
    # process's first flush. Encoding (what the API processes do) builds its columns from their buffers instead.
    code = (
        "import sys\n"
        "from models.experience_chunks import empty_columns, encode_chunk\n"
        "assert encode_chunk(empty_columns(3, 1))\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 0, finished.stderr


def test_decoding_does_not_import_pandas() -> None:
    # The learner process decodes every chunk it learns from and has no other use for pandas.
    code = (
        "import sys\n"
        "from models.experience_chunks import decode_chunk\n"
        f"assert len(decode_chunk({encode_chunk(_columns(21))!r})) == 21\n"
        "assert 'pandas' not in sys.modules, 'pandas was imported'\n"
    )
    finished = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False)
    assert finished.returncode == 0, finished.stderr


def test_a_null_value_is_refused() -> None:
    # The schema's fields are not nullable, but Arrow does not enforce it: a writer other than encode_chunk could.
    import pyarrow as pa

    table = read_table(encode_chunk(_columns(5)))
    index = table.schema.get_field_index("reward")
    table = table.set_column(index, table.schema.field(index), pa.array([1.0, None, 2.0, 3.0, 4.0], pa.float32()))
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(ChunkFormatError, match="'reward': 1 null values"):
        decode_chunk(sink.getvalue().to_pybytes())
