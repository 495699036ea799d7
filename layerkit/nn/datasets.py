"""Deterministic data of the classic course's gradient-checking script, and its debug problem."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from .._validate import positive_int


def debug_matrix(shape: tuple[int, int], dtype: object = np.float64) -> NDArray:
    """``sin(1), sin(2), ..., sin(n)`` divided by 10, laid out in **Fortran order** into ``shape``.

    This is the course's ``debugInitializeWeights``: MATLAB's ``reshape`` fills column by column, so entry
    ``(i, j)`` holds ``sin(1 + i + j * shape[0]) / 10``.
    """
    n = int(np.prod(shape))
    return (np.sin(np.arange(1, n + 1, dtype=np.float64)).reshape(shape, order="F") / 10).astype(np.dtype(dtype))  # type: ignore[call-overload]


def debug_data(m: int = 5, n_features: int = 3, dtype: object = np.float64) -> tuple[NDArray, NDArray]:
    """Inputs and labels of the course's gradient check.

    Returns
    -------
    X : NDArray, shape (m, n_features)
        ``debug_matrix((m, n_features))``.
    y : NDArray of int, shape (m,)
        0-based labels ``i mod 3`` for ``i = 1..m`` (the course's 1-based ``1 + mod(i, 3)`` minus one).
    """
    m = positive_int(m, "m")
    n_features = positive_int(n_features, "n_features")
    return debug_matrix((m, n_features), dtype), np.arange(1, m + 1) % 3
