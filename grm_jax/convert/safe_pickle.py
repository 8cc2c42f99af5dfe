"""A pickle module that cannot run code from the file it reads.

Official GRM checkpoints pickle the trainer's ``Settings`` object next to the weights, so
``torch.load(weights_only=True)`` refuses them, and ``weights_only=False`` would import and call whatever
the file names. This module is handed to ``torch.load(pickle_module=...)``: every global the pickle asks
for is looked up in a fixed allowlist (tensor rebuild helpers, dtypes, plain containers); any other global
becomes a :class:`ForeignObject` subclass that records its name and the arguments it was "called" with but
never imports or calls anything. Plain-Python unpickling (``pickle._Unpickler``) is used so that the
BUILD opcode can be restricted as well: it may only set state on data objects, never on classes, functions
or modules of this process.
"""
from __future__ import annotations

import _codecs
import _compat_pickle
import collections
import importlib.util
import io
import pickle
import sys
import types

import numpy as np

__all__ = ["ForeignObject", "Unpickler", "load", "loads", "foreign_objects"]


class ForeignObject:
    """Inert stand-in for an object whose class the checkpoint names but we refuse to import.

    ``foreign_module`` / ``foreign_name`` say what the pickle asked for; ``args`` / ``kwargs`` / ``state``
    hold what it tried to construct the object with, so callers can still inspect e.g. a pickled settings
    object's attributes without running its code.
    """

    foreign_module = "?"
    foreign_name = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.args = args
        obj.kwargs = kwargs
        obj.state = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __call__(self, *args, **kwargs):
        # A pickle may try to call the result of a foreign call (e.g. getattr(module, 'system')(cmd)).
        # Record it as one more inert object instead.
        return _placeholder_class(self.foreign_module, f"{self.foreign_name}(...)")(*args, **kwargs)

    def __repr__(self):
        return f"<ForeignObject {self.foreign_module}.{self.foreign_name} (not imported)>"

    def __reduce__(self):
        raise pickle.PicklingError(f"refusing to re-pickle a placeholder for {self.foreign_module}.{self.foreign_name}")


_PLACEHOLDER_CLASSES: dict[tuple[str, str], type] = {}


def _placeholder_class(module: str, name: str) -> type:
    key = (module, name)
    if key not in _PLACEHOLDER_CLASSES:
        _PLACEHOLDER_CLASSES[key] = type(
            f"Foreign[{module}.{name}]",
            (ForeignObject,),
            {"foreign_module": module, "foreign_name": name, "__module__": __name__},
        )
    return _PLACEHOLDER_CLASSES[key]


def _allowed_globals() -> dict[tuple[str, str], object]:
    allowed: dict[tuple[str, str], object] = {
        ("collections", "OrderedDict"): collections.OrderedDict,
        ("collections", "Counter"): collections.Counter,
        ("builtins", "set"): set,
        ("builtins", "frozenset"): frozenset,
        ("builtins", "complex"): complex,
        ("builtins", "bytearray"): bytearray,
        ("builtins", "slice"): slice,
        ("builtins", "range"): range,
    }
    # protocol-2 pickles of bytes go through _codecs.encode(str, 'latin1'): a pure conversion.
    allowed[("_codecs", "encode")] = _codecs.encode

    multiarray = np._core.multiarray if hasattr(np, "_core") else np.core.multiarray
    for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
        allowed[(mod, "_reconstruct")] = multiarray._reconstruct
        allowed[(mod, "scalar")] = multiarray.scalar
    allowed[("numpy", "ndarray")] = np.ndarray
    allowed[("numpy", "dtype")] = np.dtype
    for dt in ("float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool_"):
        allowed[("numpy", dt)] = getattr(np, dt)
    for dtype_cls in set(type(np.dtype(c)) for c in "?bhilqBHILQefdgFDG"):
        allowed[("numpy.dtypes", dtype_cls.__name__)] = dtype_cls

    if "torch" in sys.modules or _torch_importable():
        # torch is an optional dependency: imported only when installed, for its tensor-rebuild functions
        import torch
        import torch._utils as tu

        for fn in ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
                   "_rebuild_parameter_with_state"):
            if hasattr(tu, fn):
                allowed[("torch._utils", fn)] = getattr(tu, fn)
        allowed[("torch", "Size")] = torch.Size
        allowed[("torch", "device")] = torch.device
        allowed[("torch.nn.parameter", "Parameter")] = torch.nn.Parameter
        allowed[("torch", "Tensor")] = torch.Tensor
        for attr in dir(torch):
            value = getattr(torch, attr, None)
            if isinstance(value, torch.dtype):
                allowed[("torch", attr)] = value
    return allowed


def _torch_importable() -> bool:
    return importlib.util.find_spec("torch") is not None


_ALLOWED: dict[tuple[str, str], object] | None = None


def _allowlist() -> dict[tuple[str, str], object]:
    global _ALLOWED
    if _ALLOWED is None:
        _ALLOWED = _allowed_globals()
    return _ALLOWED


# Objects whose state BUILD may set. Anything else (a class, a function, a module, a torch.Size) is part
# of this process and must not be mutated by a file.
def _may_build(inst) -> bool:
    if isinstance(inst, (type, types.FunctionType, types.BuiltinFunctionType, types.ModuleType,
                         types.MethodType)):
        return False
    if isinstance(inst, ForeignObject):
        return True
    if isinstance(inst, (dict, list, set)):
        return True
    if isinstance(inst, (np.ndarray, np.generic, np.dtype)):
        return True
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(inst, torch.Tensor):
        return True
    return False


class Unpickler(pickle._Unpickler):
    """Restricted unpickler: allowlisted globals are real, every other global is a ForeignObject subclass."""

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.foreign: list[str] = []

    def find_class(self, module, name):
        if self.proto < 3 and self.fix_imports:
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            elif module in _compat_pickle.IMPORT_MAPPING:
                module = _compat_pickle.IMPORT_MAPPING[module]
        allowed = _allowlist()
        if (module, name) in allowed:
            return allowed[(module, name)]
        qualified = f"{module}.{name}"
        if qualified not in self.foreign:
            self.foreign.append(qualified)
        _FOREIGN_SEEN.append(qualified)
        return _placeholder_class(module, name)

    def load_build(self):
        inst = self.stack[-2]
        if not _may_build(inst):
            raise pickle.UnpicklingError(
                f"checkpoint pickle tries to set state on {inst!r} (a {type(inst).__name__}); refused")
        return pickle._Unpickler.load_build(self)

    dispatch[pickle.BUILD[0]] = load_build


# Names of the foreign globals met since the last reset (read by read_torch_checkpoint for its report).
_FOREIGN_SEEN: list[str] = []


def foreign_objects(reset: bool = False) -> list[str]:
    seen = list(dict.fromkeys(_FOREIGN_SEEN))
    if reset:
        _FOREIGN_SEEN.clear()
    return seen


def load(file, **kwargs):
    return Unpickler(file, **kwargs).load()


def loads(data: bytes, **kwargs):
    return Unpickler(io.BytesIO(data), **kwargs).load()
