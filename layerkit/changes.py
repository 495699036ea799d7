"""Structured changes of an activation, for evaluating many parameter perturbations at once.

A batch of ``B`` perturbations changes an ``(m, n)`` activation ``a`` into ``a + D[b]``.  Most of those
changes have structure that is far cheaper to carry than ``B`` dense ``(m, n)`` arrays:

* :class:`ColumnChange`: only column ``col`` changes, ``D[b][:, col] = delta[b]`` -- what perturbing one
  entry of a Dense layer's ``Theta[col, c]`` does to its output, and what an elementwise layer keeps;
* :class:`RankOneChange`: ``D[b] = outer(u[b], v)`` -- what a Dense layer makes of a column change (and
  of a rank-one change: ``outer(u, v) W^T = outer(u, W v)``);
* :class:`ColumnsChange`: only a range of columns changes (a direction restricted to some rows of Theta);
* :class:`DenseChange`: anything, ``D[b] = delta[b]``.

Layers may implement ``propagate(x, y, change) -> change`` (exact: no linearization) and a Dense-like
layer ``param_change(name, row, cols, steps, x)``; see :mod:`layerkit.layers`.  Propagation *consumes* a
change: a layer may overwrite the arrays of the change it is given.
"""

from __future__ import annotations

from typing import Union

import numpy as np
from attrs import frozen
from numpy.typing import NDArray


@frozen(eq=False)
class ColumnChange:
    """Column ``col`` of an ``(m, n)`` activation changes by ``delta[b]`` (shape ``(B, m)``)."""

    col: int
    delta: NDArray

    @property
    def batch(self) -> int:
        return self.delta.shape[0]

    def take(self, lo: int, hi: int) -> ColumnChange:
        return ColumnChange(self.col, self.delta[lo:hi])

    def dense(self, shape: tuple[int, int]) -> NDArray:
        out = np.zeros((self.batch,) + shape, dtype=self.delta.dtype)
        out[:, :, self.col] = self.delta
        return out


@frozen(eq=False)
class ColumnsChange:
    """Only the columns ``cols`` (a slice) of an ``(m, n)`` activation change, by ``delta[b]`` (shape
    ``(B, m, len(cols))``) -- what a direction restricted to some rows of a Dense layer's Theta does."""

    cols: slice
    delta: NDArray

    @property
    def batch(self) -> int:
        return self.delta.shape[0]

    def take(self, lo: int, hi: int) -> ColumnsChange:
        return ColumnsChange(self.cols, self.delta[lo:hi])

    def dense(self, shape: tuple[int, int]) -> NDArray:
        if self.cols.indices(shape[1]) == (0, shape[1], 1):
            return self.delta  # every column: already dense
        out = np.zeros((self.batch,) + shape, dtype=self.delta.dtype)
        out[:, :, self.cols] = self.delta
        return out


@frozen(eq=False)
class RankOneChange:
    """The activation changes by ``outer(u[b], v)``; ``u`` is ``(B, m)``, ``v`` is ``(n,)``."""

    u: NDArray
    v: NDArray

    @property
    def batch(self) -> int:
        return self.u.shape[0]

    def take(self, lo: int, hi: int) -> RankOneChange:
        return RankOneChange(self.u[lo:hi], self.v)

    def dense(self, shape: tuple[int, int]) -> NDArray:
        # einsum writes the outer products in one pass, faster than broadcasting a short last axis
        return np.einsum("bi,k->bik", self.u, self.v)


@frozen(eq=False)
class DenseChange:
    """The activation changes by ``delta[b]`` (shape ``(B, m, n)``)."""

    delta: NDArray

    @property
    def batch(self) -> int:
        return self.delta.shape[0]

    def take(self, lo: int, hi: int) -> DenseChange:
        return DenseChange(self.delta[lo:hi])

    def dense(self, shape: tuple[int, int]) -> NDArray:
        return self.delta


Change = Union[ColumnChange, ColumnsChange, RankOneChange, DenseChange]


def sigmoid_change(s: NDArray, s_sc: NDArray, delta: NDArray, overwrite: bool = False) -> NDArray:
    """Exact ``sigmoid(z + delta) - sigmoid(z)`` from ``s = sigmoid(z)`` and ``s_sc = s (1 - s)``.

    Uses the identity ``s (1 - s) expm1(delta) / (1 + s expm1(delta))``, which has no cancellation: the
    difference of two nearly equal sigmoids is never formed.  ``s_sc`` should be computed as
    ``sigmoid(z) * sigmoid(-z)`` (no cancellation when ``s`` is near 1).  Shapes broadcast against
    ``delta``; with ``overwrite=True`` the result is written into ``delta``.
    """
    e = np.expm1(delta, out=delta if overwrite else None)
    t = s * e
    t += 1
    e *= s_sc
    e /= t
    return e


def softplus_change(s: NDArray, delta: NDArray) -> NDArray:
    """Exact ``softplus(z + delta) - softplus(z) = log1p(s expm1(delta))`` with ``s = sigmoid(z)``."""
    return np.log1p(s * np.expm1(delta))
