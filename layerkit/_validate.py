"""Small argument checks shared by the modules; each raises :class:`~layerkit.errors.InputError`."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from .errors import InputError

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def describe(a: Any) -> str:
    """Short description of a value for error messages: type, shape and dtype of arrays."""
    if isinstance(a, np.ndarray):
        return f"array of shape {a.shape} and dtype {a.dtype}"
    if isinstance(a, (list, tuple)):
        return f"{type(a).__name__} of length {len(a)}"
    return f"{type(a).__name__} {a!r}"[:120]


def float_dtype(dtype: Any, argument: str = "dtype") -> np.dtype:
    """Return ``dtype`` as a numpy dtype, refusing anything but float32 and float64."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise InputError(argument, "float32 or float64", repr(dtype)) from None
    if dt not in FLOAT_DTYPES:
        raise InputError(argument, "float32 or float64", str(dt))
    return dt


def positive_int(value: Any, argument: str, minimum: int = 1) -> int:
    """Return ``value`` as an int ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(argument, f"an integer >= {minimum}", describe(value))
    return int(value)


def nonnegative_float(value: Any, argument: str) -> float:
    """Return ``value`` as a finite float ``>= 0``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)) or value < 0:
        raise InputError(argument, "a finite number >= 0", describe(value))
    return float(value)


def finite_matrix(a: Any, argument: str, n_cols: int | None = None) -> np.ndarray:
    """Return ``a`` as a 2-D floating array with no NaN or inf (and ``n_cols`` columns if given)."""
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise InputError(argument, "a 2-D array (examples x features)", describe(arr))
    if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == bool):
        raise InputError(argument, "a numeric array", describe(arr))
    if n_cols is not None and arr.shape[1] != n_cols:
        raise InputError(argument, f"{n_cols} features (columns)", f"{arr.shape[1]} (shape {arr.shape})")
    if np.iscomplexobj(arr):
        bad = ~np.isfinite(arr)
    else:
        bad = ~np.isfinite(arr.astype(np.float64, copy=False))
    if bad.any():
        i, j = np.argwhere(bad)[0]
        raise InputError(argument, "finite values", f"{arr[i, j]} at row {i}, column {j} ({int(bad.sum())} in all)")
    return arr
