"""Read a torch state dict (`torch.save`'s zip format) into numpy arrays without torch and without running its code.

A `.pth` file is a zip: `<root>/data.pkl`, a pickle that describes the tensors, and `<root>/data/<key>`, the raw
bytes of each storage. Unpickling runs whatever callables the pickle names, so the pickle is read by a restricted
unpickler whose `find_class` admits only the few globals a state dict uses (an OrderedDict, torch's tensor and
parameter rebuild functions, the storage types), each mapped to a function of ours that builds a numpy array from
the zip's storage bytes. Any other global (`os.system`, `builtins.open`, `eval`...) is refused by name before it
is called, so a hostile file is an ImportRefusedError and nothing else happens. This is the same allowlist idea as
`torch.load(..., weights_only=True)`, narrowed to what a state dict of dense float tensors needs.
"""

from __future__ import annotations

import collections
import io
import pickle
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from models.imports.archive import SafeZip
from models.imports.errors import ImportRefusedError

# The storage classes a state dict names, and their element types (little-endian, as torch writes them).
_STORAGE_DTYPES: dict[str, np.dtype[Any]] = {
    "FloatStorage": np.dtype("<f4"),
    "DoubleStorage": np.dtype("<f8"),
    "HalfStorage": np.dtype("<f2"),
    "LongStorage": np.dtype("<i8"),
    "IntStorage": np.dtype("<i4"),
    "ShortStorage": np.dtype("<i2"),
    "CharStorage": np.dtype("i1"),
    "ByteStorage": np.dtype("u1"),
    "BoolStorage": np.dtype("?"),
}
MAX_TENSOR_ELEMENTS = 1 << 28


@dataclass(frozen=True)
class _StorageType:
    name: str
    dtype: np.dtype[Any]


class _Storage:
    """A storage's bytes as a flat numpy array (one per key, shared by the tensors that view it)."""

    def __init__(self, array: npt.NDArray[Any]) -> None:
        self.array = array


def _rebuild_tensor(
    storage: _Storage,
    storage_offset: int,
    size: tuple[int, ...],
    stride: tuple[int, ...],
    *_ignored: Any,
) -> npt.NDArray[Any]:
    """torch._utils._rebuild_tensor_v2: a view of the storage, bounds checked, copied out as its own array."""
    if not isinstance(storage, _Storage):
        raise pickle.UnpicklingError("a tensor must be built on a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride) <= 8):
        raise pickle.UnpicklingError("a tensor's size and stride must be tuples of equal length")
    if not all(isinstance(v, int) and v >= 0 for v in (storage_offset, *size, *stride)):
        raise pickle.UnpicklingError("a tensor's offset, size and stride must be non-negative integers")
    elements = int(np.prod(size, dtype=np.int64)) if size else 1
    if elements > MAX_TENSOR_ELEMENTS:
        raise pickle.UnpicklingError(f"a tensor of {elements} elements is over the limit")
    flat = storage.array
    if elements == 0:
        return np.zeros(size, dtype=flat.dtype)
    last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True))
    if last >= flat.size:
        raise pickle.UnpicklingError(f"a tensor reaches element {last} of a storage of {flat.size}")
    item = flat.dtype.itemsize
    view = np.lib.stride_tricks.as_strided(
        flat[storage_offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.array(view, copy=True)


def _rebuild_parameter(data: npt.NDArray[Any], *_ignored: Any) -> npt.NDArray[Any]:
    """torch._utils._rebuild_parameter(_with_state): a parameter is its tensor here."""
    if not isinstance(data, np.ndarray):
        raise pickle.UnpicklingError("a parameter must wrap a tensor")
    return data


def _ordered_dict(*args: Any) -> collections.OrderedDict[Any, Any]:
    return collections.OrderedDict(*args)


_ALLOWED: dict[tuple[str, str], Any] = {
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    **{("torch", name): _StorageType(name, dtype) for name, dtype in _STORAGE_DTYPES.items()},
}


class _StateDictUnpickler(pickle.Unpickler):
    def __init__(self, data: bytes, load_storage: Callable[[_StorageType, str, int], _Storage]) -> None:
        super().__init__(io.BytesIO(data))
        self._load_storage = load_storage
        self._storages: dict[str, _Storage] = {}

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(
                f"the pickle names {module}.{name}, which a state dict of tensors never needs (refused, not run)"
            ) from None

    def persistent_load(self, pid: Any) -> _Storage:
        # ('storage', storage_type, key, location, numel): the tensor bytes live in data/<key>.
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unknown persistent id {str(pid)[:80]!r}")
        _tag, storage_type, key, _location, numel = pid
        if not isinstance(storage_type, _StorageType) or not isinstance(key, str) or not isinstance(numel, int):
            raise pickle.UnpicklingError("malformed storage reference")
        if key not in self._storages:
            self._storages[key] = self._load_storage(storage_type, key, numel)
        return self._storages[key]


def read_state_dict(data: bytes, *, field: str, max_uncompressed: int) -> dict[str, npt.NDArray[Any]]:
    """The tensors of a `torch.save`d state dict, as numpy arrays by name; ImportRefusedError naming `field`.

    Refuses the legacy (pre-1.6, non-zip) format, pickles naming anything beyond the tensor globals, storages whose
    bytes are missing or short, and anything that does not come out as a mapping of names to tensors.
    """
    archive = SafeZip(data, field=field, max_uncompressed=max_uncompressed)
    pickles = [name for name in archive.names if name.endswith("/data.pkl") and name.count("/") == 1]
    if len(pickles) != 1:
        raise ImportRefusedError(field, "not a torch state dict file (torch.save's zip with one data.pkl)")
    root = pickles[0][: -len("data.pkl")]
    byteorder_entry = f"{root}byteorder"
    if archive.has(byteorder_entry) and archive.read(byteorder_entry).strip() not in (b"little", b""):
        raise ImportRefusedError(field, "the tensors are stored big-endian; only little-endian files are read")

    def load_storage(storage_type: _StorageType, key: str, numel: int) -> _Storage:
        entry = f"{root}data/{key}"
        if not archive.has(entry):
            raise pickle.UnpicklingError(f"storage {key!r} has no data entry")
        raw = archive.read(entry)
        needed = numel * storage_type.dtype.itemsize
        if numel < 0 or len(raw) < needed:
            raise pickle.UnpicklingError(f"storage {key!r} holds {len(raw)} bytes, {needed} needed")
        return _Storage(np.frombuffer(raw[:needed], dtype=storage_type.dtype))

    try:
        loaded = _StateDictUnpickler(archive.read(pickles[0]), load_storage).load()
    except ImportRefusedError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError, KeyError) as exc:
        raise ImportRefusedError(field, f"refused: {exc}") from None
    except Exception as exc:  # any other failure of a hostile pickle is still a refusal, never a 500
        raise ImportRefusedError(field, f"refused: {type(exc).__name__}: {exc}") from None
    if not isinstance(loaded, dict):
        raise ImportRefusedError(field, f"holds a {type(loaded).__name__}, not a state dict")
    tensors: dict[str, npt.NDArray[Any]] = {}
    for name, value in loaded.items():
        if not isinstance(name, str) or not isinstance(value, np.ndarray):
            raise ImportRefusedError(field, f"entry {str(name)[:80]!r} is not a named tensor")
        tensors[name] = value
    return tensors
