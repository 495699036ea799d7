"""layerkit's own rules for the batch-coupled layers (see :mod:`layerkit.fast.rules`): BatchNorm and Dropout.
Importing this module (``layerkit.fast`` does) registers them.

A batch-coupled layer must never see perturbed copies of the batch stacked along the example axis: its
statistics would mix them (BatchNorm) or its mask would not fit (Dropout).  These rules keep every
perturbation's batch apart: a batch of ``B`` changes is a ``(B, m, ...)`` array, and each batch item is
normalized over its own ``m`` examples (``batch_aware``: the engine may carry changes through the layer;
without such a rule a batch-coupled layer keeps the engine out, :func:`~layerkit.fast.probe.supports_engine`).

BatchNorm is columnwise in its features: feature ``c``'s output depends on feature ``c``'s input alone (over
every example), so a column change stays a column change.  ``propagate`` re-normalizes the changed columns
and subtracts the output (``cancels``: about ``eps |y|`` of rounding per output, plus the statistics'
own, which the rounding bound of a cancelling rule counts through the magnitudes below the layer).  Its own
parameters are per-feature vectors: ``gamma[r] += t`` moves output feature ``r`` alone, by ``t xhat[:, r]``,
and ``beta[r] += t`` by ``t`` (``param_change``, ``feature_inputs``; exact, since the statistics do not depend
on them).  Dropout multiplies by its fixed mask (linear, exact).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..nn.batch import BatchNorm, Dropout
from .changes import Change, ColumnChange, ColumnsChange, DenseChange
from .rules import register_rule


class BatchNormRule:
    """BatchNorm with batch statistics, each perturbation's batch normalized on its own (module docstring)."""

    cancels = True
    batch_aware = True

    def __init__(self, layer: BatchNorm) -> None:
        self.layer = layer
        self._xhat: tuple[NDArray, NDArray] | None = None

    def feature_inputs(self, name: str, x: NDArray) -> NDArray:
        """What entry ``r`` of ``gamma`` or ``beta`` multiplies, shaped like the output: ``gamma[r] += t`` adds
        ``t xhat[:, r]`` to output feature (channel) ``r`` and ``beta[r] += t`` adds ``t`` (exact: the layer is
        linear in both, and the statistics do not depend on them)."""
        if name == "beta":
            return np.ones_like(x)
        memo = self._xhat
        if memo is None or memo[0] is not x:  # xhat: the input normalized with unit scale, no shift
            memo = self._xhat = (x, self._normalized(x[None], 1.0, 0.0, (1,) if x.ndim == 2 else (1, 3, 4))[0])
        return memo[1]

    def param_change(self, name: str, row: int, cols: Any, steps: NDArray, x: NDArray) -> ColumnChange:
        """Output change of ``gamma[row] += steps[b]`` (or ``beta``), one batch item per step: feature ``row``
        alone moves, by ``steps[b]`` times :meth:`feature_inputs` there (a vector's only column is 0).  Returns a
        ColumnChange of shape ``(B, m)``, or ``(B, m, H, W)`` for images."""
        index = np.arange(1)[cols] if isinstance(cols, slice) else np.asarray(cols)
        if np.any(index != 0):
            raise IndexError(f"BatchNorm.{name} is a vector: its only column is 0, got {cols!r}")
        g = self.feature_inputs(name, x)[:, row]
        steps = np.asarray(steps)
        return ColumnChange(row, steps.reshape((-1,) + (1,) * g.ndim) * g[None])

    def _normalized(self, v: NDArray, gamma: Any, beta: Any, axes: tuple[int, ...]) -> NDArray:
        """``gamma (v - mu) / sqrt(var + eps) + beta`` for a batch of inputs ``v`` (B, m, ...), with the
        statistics of each batch item over ``axes`` (its examples, and pixels); ``gamma`` and ``beta`` broadcast
        against ``v``."""
        mu = v.mean(axis=axes, keepdims=True)
        inv = 1.0 / np.sqrt(v.var(axis=axes, keepdims=True) + self.layer.eps)
        return gamma * ((v - mu) * inv) + beta

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """The changed inputs normalized by their own batch's statistics, minus the output (exact)."""
        gamma, beta = self.layer.params["gamma"], self.layer.params["beta"]
        images = x.ndim == 4
        if isinstance(change, ColumnChange):  # (B, m) or, for images, one channel (B, m, H, W)
            c = change.col
            out = self._normalized(x[:, c][None] + change.delta, gamma[c], beta[c], (1, 2, 3) if images else (1,))
            out -= y[:, c][None]
            return ColumnChange(c, out)
        if isinstance(change, ColumnsChange) and not images:
            cs = change.cols
            out = self._normalized(x[:, cs][None] + change.delta, gamma[cs], beta[cs], (1,))
            out -= y[:, cs][None]
            return ColumnsChange(cs, out)
        shape = (-1, 1, 1) if images else (-1,)
        out = self._normalized(x[None] + change.dense(x.shape), gamma.reshape(shape), beta.reshape(shape),
                               (1, 3, 4) if images else (1,))
        out -= y[None]
        return DenseChange(out)

    def columnwise(self, x: NDArray, y: NDArray) -> bool:
        return False  # a unit's output depends on the other examples' values of its feature

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: the three terms of the input gradient, ``|gamma| inv (A + mean(A) + |xhat|
        mean(A |xhat|))`` (means over each statistic's values)."""
        layer = self.layer
        axes = (0,) if x.ndim == 2 else (0, 2, 3)
        shape = (1, -1) if x.ndim == 2 else (1, -1, 1, 1)
        xf = np.asarray(x, dtype=np.float64)
        inv = 1.0 / np.sqrt(xf.var(axis=axes, keepdims=True) + layer.eps)
        xhat = np.abs((xf - xf.mean(axis=axes, keepdims=True)) * inv)
        A = np.asarray(A, dtype=np.float64)
        g = np.abs(layer.params["gamma"].astype(np.float64)).reshape(shape)
        return g * inv * (A + A.mean(axis=axes, keepdims=True) + xhat * (A * xhat).mean(axis=axes, keepdims=True))


class DropoutRule:
    """Dropout: the change times the layer's fixed mask for this input shape (the identity in evaluation
    mode); each batch item keeps its own examples' mask."""

    batch_aware = True

    def __init__(self, layer: Dropout) -> None:
        self.layer = layer

    def _mask(self, x: NDArray) -> NDArray | None:
        layer = self.layer
        if not layer.training:
            return None
        return layer.mask(x.shape).astype(x.dtype if np.issubdtype(x.dtype, np.floating) else np.float64)

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        mask = self._mask(x)
        if mask is None:
            return change
        if isinstance(change, ColumnChange):
            return ColumnChange(change.col, change.delta * mask[:, change.col][None])
        if isinstance(change, ColumnsChange):
            return ColumnsChange(change.cols, change.delta * mask[:, change.cols][None])
        return DenseChange(change.dense(x.shape) * mask[None])

    def columnwise(self, x: NDArray, y: NDArray) -> bool:
        return True

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        mask = self._mask(x)
        return np.asarray(A, dtype=np.float64) if mask is None else np.asarray(A, dtype=np.float64) * np.abs(mask)


register_rule(BatchNorm, BatchNormRule, reads=("forward",))
register_rule(Dropout, DropoutRule, reads=("forward", "mask"))
