"""The recorded-experience chunk: one compressed block of transitions, the unit the service stores and exports.

Every session step the API serves while a model records is one transition: the observation the client sent, the
action served (the policy's action plus exploration noise, clipped to the action bounds), the reward the client
reported for it, the next observation, and how the step ended, gymnasium's way:

- `terminated`: the episode reached a terminal state; a learner must not bootstrap past it (target = reward).
- `truncated`: the episode was cut (time limit, or stopped by the client); a learner bootstraps from
  next_observation as usual. At most one of the two is true.

The columns, in this order (n transitions, obs_dim and act_dim the model's):

    observation       float32 [n, obs_dim]
    action            float32 [n, act_dim]   the action served: what the environment received
    reward            float32 [n]
    next_observation  float32 [n, obs_dim]
    terminated        bool    [n]
    truncated         bool    [n]
    policy_id         int64   [n]            NO_POLICY (-1) when none is known
    session           string  [n]            the client's session id
    episode           int64   [n]            unique per episode of a session (not a count: see below)
    step              int32   [n]            0 for an episode's first transition, then 1, 2, ...
    noise             float32 [n, act_dim]   the noise added to the policy's action (zeros without exploration)
    noise_scale       float32 [n]            the exploration sigma, a fraction of each action dimension's
                                             half-range (high - low) / 2; 0 without exploration
    time              float64 [n]            unix seconds when the step was answered

`episode` is an id drawn when the episode starts (random 63 bits), so that two processes can never give the same
number to two episodes of one session; (session, episode) names an episode, `step` orders its transitions. The
policy's own action is `action - noise` wherever no clipping happened (clipping is recorded in the action itself).

A chunk is an Arrow IPC stream with zstd-compressed buffers (FORMAT below in the schema metadata, with obs_dim and
act_dim); the vector columns are fixed-size lists. Arrow over numpy's npz: a reader in any language opens it, and
columns decode without copying. `encode_chunk` and `decode_chunk` are the only two ways in and out; the store keeps
a chunk's bytes either in its own row or under an external storage key.

Torch-free: the API writes chunks, exporters read them.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa

FORMAT = "ddpg-experience/1"
NO_POLICY = -1
# A chunk larger than this is refused when read: no flush writes one (see the recorder's chunk size), and a reader
# must not be made to allocate without bound by a damaged or foreign blob.
MAX_CHUNK_BYTES = 256 * 1024 * 1024
COMPRESSION = "zstd"

# Column name -> (dtype, whether it is a vector of obs_dim / act_dim per row).
COLUMN_DTYPES: dict[str, tuple[type[np.generic], str | None]] = {
    "observation": (np.float32, "obs_dim"),
    "action": (np.float32, "act_dim"),
    "reward": (np.float32, None),
    "next_observation": (np.float32, "obs_dim"),
    "terminated": (np.bool_, None),
    "truncated": (np.bool_, None),
    "policy_id": (np.int64, None),
    "session": (np.object_, None),
    "episode": (np.int64, None),
    "step": (np.int32, None),
    "noise": (np.float32, "act_dim"),
    "noise_scale": (np.float32, None),
    "time": (np.float64, None),
}
COLUMNS: tuple[str, ...] = tuple(COLUMN_DTYPES)


class ChunkFormatError(ValueError):
    """Bytes that are not a chunk of this format, or columns that do not fit it; the message says which."""


@dataclass(frozen=True, slots=True)
class ExperienceColumns:
    """n transitions as numpy arrays, one per column (see the module docstring for shapes and meaning)."""

    observation: npt.NDArray[np.float32]
    action: npt.NDArray[np.float32]
    reward: npt.NDArray[np.float32]
    next_observation: npt.NDArray[np.float32]
    terminated: npt.NDArray[np.bool_]
    truncated: npt.NDArray[np.bool_]
    policy_id: npt.NDArray[np.int64]
    session: npt.NDArray[np.object_]  # Python str per row
    episode: npt.NDArray[np.int64]
    step: npt.NDArray[np.int32]
    noise: npt.NDArray[np.float32]
    noise_scale: npt.NDArray[np.float32]
    time: npt.NDArray[np.float64]

    def __len__(self) -> int:
        return int(self.reward.shape[0])

    @property
    def obs_dim(self) -> int:
        return int(self.observation.shape[1])

    @property
    def act_dim(self) -> int:
        return int(self.action.shape[1])

    def episodes_ended(self) -> int:
        """How many episodes end in these transitions (terminated or truncated)."""
        return int(np.count_nonzero(self.terminated | self.truncated))

    def check(self) -> None:
        """ChunkFormatError unless every column has its dtype and the same length, vectors their dimension."""
        n, obs_dim, act_dim = len(self), self.observation.shape[-1], self.action.shape[-1]
        dims = {"obs_dim": obs_dim, "act_dim": act_dim}
        for name, (dtype, dim) in COLUMN_DTYPES.items():
            array = getattr(self, name)
            shape = (n,) if dim is None else (n, dims[dim])
            if array.dtype != np.dtype(dtype) or array.shape != shape:
                raise ChunkFormatError(
                    f"column {name!r}: expected {np.dtype(dtype)} {list(shape)}, got {array.dtype} {list(array.shape)}"
                )
        if np.any(self.terminated & self.truncated):
            raise ChunkFormatError("a transition is both terminated and truncated")

    @classmethod
    def concat(cls, parts: list[ExperienceColumns]) -> ExperienceColumns:
        """The transitions of `parts`, in order (at least one part)."""
        return cls(**{f.name: np.concatenate([getattr(p, f.name) for p in parts]) for f in fields(cls)})

    def take(self, rows: npt.NDArray[np.intp] | slice) -> ExperienceColumns:
        """The selected rows (an index array or a slice)."""
        return type(self)(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})


def schema(obs_dim: int, act_dim: int) -> pa.Schema:
    """The Arrow schema of a chunk for these dimensions, FORMAT and the dimensions in its metadata."""

    def vector(dim: int) -> pa.DataType:
        return pa.list_(pa.float32(), dim)

    return pa.schema(
        [
            pa.field("observation", vector(obs_dim), nullable=False),
            pa.field("action", vector(act_dim), nullable=False),
            pa.field("reward", pa.float32(), nullable=False),
            pa.field("next_observation", vector(obs_dim), nullable=False),
            pa.field("terminated", pa.bool_(), nullable=False),
            pa.field("truncated", pa.bool_(), nullable=False),
            pa.field("policy_id", pa.int64(), nullable=False),
            pa.field("session", pa.string(), nullable=False),
            pa.field("episode", pa.int64(), nullable=False),
            pa.field("step", pa.int32(), nullable=False),
            pa.field("noise", vector(act_dim), nullable=False),
            pa.field("noise_scale", pa.float32(), nullable=False),
            pa.field("time", pa.float64(), nullable=False),
        ],
        metadata={"format": FORMAT, "obs_dim": str(obs_dim), "act_dim": str(act_dim)},
    )


def to_table(columns: ExperienceColumns) -> pa.Table:
    """The transitions as an Arrow table of the chunk schema (numbers and vectors without a copy of their values).

    Every column is built from its buffers (`_arrow`), never with `pa.array`: pyarrow's conversions look for pandas
    first, and importing it costs a process about a quarter of a second of CPU, holding the GIL, at its first flush."""
    columns.check()
    types = schema(columns.obs_dim, columns.act_dim)
    arrays: list[Any] = []
    for name, (_dtype, dim) in COLUMN_DTYPES.items():
        value = getattr(columns, name)
        field_type = types.field(name).type
        if dim is not None:
            flat = _arrow(np.ascontiguousarray(value).reshape(-1), field_type.value_type)
            arrays.append(pa.FixedSizeListArray.from_arrays(flat, value.shape[1]))
        else:
            arrays.append(_arrow(value, field_type))
    return pa.Table.from_arrays(arrays, schema=types)


def _arrow(values: npt.NDArray[Any], arrow_type: pa.DataType) -> pa.Array:
    """One column as an Arrow array of `arrow_type`, from its buffers: fixed-width numbers as they are (no copy),
    booleans packed to bits, strings (an object column of str) as UTF-8 bytes and their offsets."""
    n = len(values)
    if pa.types.is_boolean(arrow_type):
        return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(np.packbits(values, bitorder="little"))])
    if pa.types.is_string(arrow_type):
        texts = values.tolist()
        joined = "".join(texts)
        offsets = np.zeros(n + 1, np.int64)
        if joined.isascii():
            # One character is one byte: the text encoded once and the lengths counted in C, rather than a
            # str.encode per row (most of a flush's per-transition cost before).
            data = joined.encode()
            np.cumsum(np.fromiter(map(len, texts), np.int64, n), out=offsets[1:])
        else:
            encoded = [text.encode() for text in texts]
            data = b"".join(encoded)
            np.cumsum(np.fromiter(map(len, encoded), np.int64, n), out=offsets[1:])
        if offsets[-1] > np.iinfo(np.int32).max:
            raise ChunkFormatError(f"column 'session': {offsets[-1]} bytes of text do not fit one chunk")
        buffers = [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
        return pa.Array.from_buffers(arrow_type, n, buffers)
    return pa.Array.from_buffers(arrow_type, n, [None, pa.py_buffer(np.ascontiguousarray(values))])


def encode_chunk(columns: ExperienceColumns) -> bytes:
    """The transitions as one chunk: an Arrow IPC stream, zstd-compressed (ChunkFormatError if columns misfit)."""
    table = to_table(columns)
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=COMPRESSION)
    with pa.ipc.new_stream(sink, table.schema, options=options) as writer:
        writer.write_table(table)
    return bytes(sink.getvalue().to_pybytes())


def read_table(data: bytes) -> pa.Table:
    """A chunk's transitions as an Arrow table, checked to be FORMAT (ChunkFormatError naming the problem)."""
    if len(data) > MAX_CHUNK_BYTES:
        raise ChunkFormatError(f"chunk of {len(data)} bytes exceeds the {MAX_CHUNK_BYTES}-byte limit")
    try:
        with pa.ipc.open_stream(pa.py_buffer(data)) as reader:
            table = reader.read_all()
    except (pa.ArrowInvalid, OSError) as exc:
        raise ChunkFormatError(f"not an Arrow IPC stream: {exc}") from None
    metadata = table.schema.metadata or {}
    if metadata.get(b"format") != FORMAT.encode():
        raise ChunkFormatError(f"not a {FORMAT} chunk (format {metadata.get(b'format')!r})")
    try:
        obs_dim, act_dim = int(metadata[b"obs_dim"]), int(metadata[b"act_dim"])
    except (KeyError, ValueError):
        raise ChunkFormatError("chunk metadata lacks obs_dim / act_dim") from None
    expected = schema(obs_dim, act_dim)
    if not table.schema.equals(expected, check_metadata=False):
        raise ChunkFormatError(f"chunk columns {table.schema.names} do not match {FORMAT}'s {expected.names}")
    return table


def decode_chunk(data: bytes) -> ExperienceColumns:
    """A chunk's transitions as numpy columns (ChunkFormatError for anything that is not a chunk of FORMAT)."""
    table = read_table(data)
    metadata = table.schema.metadata
    dims = {"obs_dim": int(metadata[b"obs_dim"]), "act_dim": int(metadata[b"act_dim"])}
    n = table.num_rows
    values: dict[str, Any] = {}
    for name, (dtype, dim) in COLUMN_DTYPES.items():
        column = table.column(name).combine_chunks()
        if column.null_count:  # the schema's fields are not nullable: a null is a damaged or foreign chunk
            raise ChunkFormatError(f"column {name!r}: {column.null_count} null values")
        if dim is not None:
            values[name] = _primitive_to_numpy(name, column.flatten(), dtype).reshape(n, dims[dim])
        elif name == "session":
            values[name] = np.array(column.to_pylist(), dtype=object).reshape(n)
        else:
            values[name] = _primitive_to_numpy(name, column, dtype)
    columns = ExperienceColumns(**values)
    columns.check()
    return columns


def _primitive_to_numpy(name: str, array: pa.Array, dtype: type[np.generic]) -> npt.NDArray[Any]:
    """A column of fixed-width values (or bits, for booleans) as numpy, read from its data buffer: numbers without a
    copy, as Array.to_numpy would give them. Not Array.to_numpy itself, which imports pandas the first time it runs
    (half a CPU second and tens of MiB in the learner process, which never uses pandas otherwise)."""
    if array.null_count:
        raise ChunkFormatError(f"column {name!r}: {array.null_count} null values")
    if len(array) == 0:
        return np.zeros(0, dtype)
    data = array.buffers()[1]
    if dtype is np.bool_:  # one bit a value, least significant first, the first `offset` bits not ours
        bits = np.unpackbits(np.frombuffer(data, np.uint8), count=array.offset + len(array), bitorder="little")
        return bits[array.offset :].astype(np.bool_)
    itemsize = np.dtype(dtype).itemsize
    return np.frombuffer(data, dtype, count=len(array), offset=array.offset * itemsize)


def empty_columns(obs_dim: int, act_dim: int) -> ExperienceColumns:
    """No transitions, with the right dtypes and dimensions."""
    return ExperienceColumns(
        observation=np.zeros((0, obs_dim), np.float32),
        action=np.zeros((0, act_dim), np.float32),
        reward=np.zeros(0, np.float32),
        next_observation=np.zeros((0, obs_dim), np.float32),
        terminated=np.zeros(0, np.bool_),
        truncated=np.zeros(0, np.bool_),
        policy_id=np.zeros(0, np.int64),
        session=np.zeros(0, object),
        episode=np.zeros(0, np.int64),
        step=np.zeros(0, np.int32),
        noise=np.zeros((0, act_dim), np.float32),
        noise_scale=np.zeros(0, np.float32),
        time=np.zeros(0, np.float64),
    )
