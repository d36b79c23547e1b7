"""Read a PyTorch state dict (the legacy, non-zip `torch.save` format) into numpy arrays, without torch.

A .pth file is a pickle, and unpickling runs whatever the file names: a weight file from the
internet must not be able to call anything. `RestrictedUnpickler` resolves exactly the globals a
state dict needs (an OrderedDict, the tensor-rebuild function, the storage types) to harmless
stand-ins and refuses every other one with `UnsafeWeightsError`.

The legacy layout (torch.serialization's `_legacy_save`): pickles of a magic number, the protocol
version and system information, then the state dict (its tensors refer to storages by key through
`persistent_load`), then the sorted list of storage keys, then each storage's raw bytes after an
8-byte little-endian element count.
"""

from __future__ import annotations

import collections
import pickle
import struct
from dataclasses import dataclass

import numpy as np

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "ShortStorage": np.int16,
                  "CharStorage": np.int8, "ByteStorage": np.uint8, "BoolStorage": np.bool_}


class UnsafeWeightsError(pickle.UnpicklingError):
    """The weight file names a global that a state dict never needs."""


@dataclass(frozen=True)
class _StorageType:
    name: str


@dataclass(frozen=True)
class _TensorRef:
    """What torch._utils._rebuild_tensor_v2 would build: a strided view of a storage."""

    storage_key: str
    offset: int
    size: tuple
    stride: tuple


def _rebuild_tensor(storage_key, offset, size, stride, *unused):
    return _TensorRef(storage_key, int(offset), tuple(size), tuple(stride))


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickles a state dict; any other global is refused (see the module docstring)."""

    def __init__(self, file, storages: dict):
        super().__init__(file)
        self.storages = storages  # key -> storage type name, filled by persistent_load

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            return collections.OrderedDict
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name)
        raise UnsafeWeightsError(f"refusing the global {module}.{name}: a weight file needs only tensors")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)):
            raise UnsafeWeightsError(f"unexpected persistent id {pid!r:.80}")
        self.storages[str(pid[2])] = pid[1].name
        return str(pid[2])


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    """{name: array} of a legacy-format PyTorch state dict (numpy layouts: the tensors' own shapes)."""
    with open(path, "rb") as f:
        if RestrictedUnpickler(f, {}).load() != LEGACY_MAGIC:
            raise UnsafeWeightsError(f"{path}: not a legacy torch.save file (bad magic number)")
        RestrictedUnpickler(f, {}).load()  # protocol version
        RestrictedUnpickler(f, {}).load()  # system information (byte order, type sizes)
        storages: dict[str, str] = {}
        state = RestrictedUnpickler(f, storages).load()
        keys = RestrictedUnpickler(f, {}).load()
        data = {}
        for key in keys:
            count = struct.unpack("<q", f.read(8))[0]
            dtype = np.dtype(STORAGE_DTYPES[storages[key]])
            data[key] = np.frombuffer(f.read(count * dtype.itemsize), dtype=dtype).copy()
    if not isinstance(state, dict):
        raise UnsafeWeightsError(f"{path}: holds a {type(state).__name__}, not a state dict")
    return {name: _view(data[ref.storage_key], ref) for name, ref in state.items()}


def _view(storage: np.ndarray, ref: _TensorRef) -> np.ndarray:
    """The tensor `ref` describes, copied out of its storage."""
    strides = tuple(s * storage.itemsize for s in ref.stride)
    return np.lib.stride_tricks.as_strided(storage[ref.offset:], ref.size, strides).copy()
