"""Snapshot dtypes: how each is stored, and what readers hand out.

A store keeps θ in the model's own precision. ``float32`` and ``float64`` are stored as they
are. ``float16`` is Zarr's ``float16``. ``bfloat16`` has no Zarr v3 data type (nor a numpy
one), so it is stored as ``uint16`` holding the bfloat16 bit patterns, and the group's
``dtype`` attribute says ``"bfloat16"``; a plain reader converts with
``(raw.astype(np.uint32) << 16).view(np.float32)`` (exact).

Readers hand out float32 for both 2-byte dtypes (every bfloat16 and float16 value is a float32
value exactly), so an analysis of a bfloat16 store equals, bit for bit, the same analysis of
the same weights stored as float32: the engine accumulates in float64 either way, and the
precision floor is float32's. What the 2-byte dtypes save is half of every byte read, decoded
and copied.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = [
    "SNAPSHOT_DTYPES",
    "decode",
    "default_dtype",
    "encode",
    "fill_value",
    "lossy_from",
    "storage_dtype",
    "value_dtype",
]

#: The snapshot dtypes a store may hold (the group's ``dtype`` attribute).
SNAPSHOT_DTYPES = ("float32", "float64", "bfloat16", "float16")
#: The Zarr data type each is stored as.
_STORED = {"float32": "float32", "float64": "float64", "bfloat16": "uint16", "float16": "float16"}
#: The quiet NaN of bfloat16 (a row that was never written reads as NaN, as in float stores).
BF16_NAN = 0x7FC0


def storage_dtype(name: str) -> np.dtype:
    """The numpy dtype of the stored array for snapshot dtype ``name``."""
    return np.dtype(_STORED[name])


def value_dtype(name: str) -> np.dtype:
    """The dtype readers hand out: float64 for float64, float32 for every other."""
    return np.dtype("float64" if name == "float64" else "float32")


def fill_value(name: str) -> Any:
    """The stored fill value (NaN, as bits for bfloat16)."""
    return np.uint16(BF16_NAN) if name == "bfloat16" else np.nan


def decode(raw: np.ndarray, name: str) -> np.ndarray:
    """Stored values of snapshot dtype ``name`` as the values readers hand out (exact)."""
    if name == "bfloat16":
        return (np.asarray(raw, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)
    if name == "float16":
        return np.asarray(raw).astype(np.float32)
    return raw


def encode(values: np.ndarray, name: str) -> np.ndarray:
    """Values as stored for snapshot dtype ``name``.

    For bfloat16, a ``uint16`` array is taken as bit patterns already (what a bfloat16 tensor
    viewed as 16-bit integers gives); floating-point values are rounded to nearest, ties to even,
    as ``torch.Tensor.to(torch.bfloat16)`` does (float64 through float32). NaN stays NaN.
    """
    values = np.asarray(values)
    if name != "bfloat16":
        return values.astype(storage_dtype(name), copy=False)
    if values.dtype == np.uint16:
        return values
    if values.dtype.kind == "u" or values.dtype.kind == "i":
        values = values.astype(np.float32)
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = BF16_NAN
    return rounded


def default_dtype(dtypes: Iterable[Any]) -> str:
    """The store dtype that keeps parameters of these dtypes exactly, as small as that allows: their
    own when they all share one floating dtype, float64 when any is float64, else float32."""
    names = {str(d).removeprefix("torch.") for d in dtypes}
    if len(names) == 1 and names <= {"float32", "float64", "bfloat16", "float16"}:
        return names.pop()
    return "float64" if "float64" in names else "float32"


_BITS = {"float64": 53, "float32": 24, "bfloat16": 8, "float16": 11}
_EXPONENT = {"float64": 11, "float32": 8, "bfloat16": 8, "float16": 5}


def lossy_from(dtypes: Iterable[Any], stored: str) -> dict[str, Any] | None:
    """``{"from": [...], "to": stored}`` when storing values of ``dtypes`` as ``stored`` rounds
    them (fewer significand or exponent bits), else None: written to the store's attributes."""
    names = sorted({str(d).removeprefix("torch.") for d in dtypes})
    wider = [n for n in names if n in _BITS and (_BITS[n] > _BITS[stored] or _EXPONENT[n] > _EXPONENT[stored])]
    return {"from": wider, "to": stored} if wider else None
