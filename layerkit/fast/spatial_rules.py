"""layerkit's own rules for the image layers (see :mod:`layerkit.fast.rules`): Conv2D, MaxPool2D, AvgPool2D
and Flatten.  Importing this module (``layerkit.fast`` does) registers them.

A convolution is a dense layer on patches: ``y[:, r] = sum_c W[r, c] P[:, c] + b[r]`` with ``P`` the patches
of the input (:func:`~layerkit.nn.spatial.im2col`, one ``(m, Ho, Wo)`` image per column ``c`` of
``W.reshape(F, -1)``).  So moving ``W[r, c]`` by ``t`` moves output channel ``r`` alone, by ``t P[:, c]``: a
:class:`~layerkit.fast.changes.ColumnChange` of the channel, the structure a Dense layer's entry has.  Each
layer after it carries that channel change as far as it stays one: an elementwise layer keeps it, a pooling
layer pools the one channel, Flatten turns it into a range of columns, and the next Dense layer makes the
logits' change from those columns alone.  Every rule restates the math of the layer's own ``forward`` with
the helpers that ``forward`` calls, on layerkit's own classes only.

Error model: the convolution, average pooling and Flatten rules are linear maps of the change (no
subtraction: relative rounding ``eps`` per term, as a Dense layer's); max pooling forms ``max(x + d) -
max(x)`` (``cancels``: about ``eps |y|`` per output, which the engine's rounding bound counts).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..nn.spatial import AvgPool2D, Conv2D, Flatten, MaxPool2D, avg_pool, col2im, im2col, max_pool
from .changes import Change, ColumnChange, ColumnsChange, DenseChange, ParamInputs
from .rules import register_rule


def _stacked(x: NDArray) -> tuple[NDArray, tuple[int, int]]:
    """A batch of images ``(B, m, C, H, W)`` as one ``(B m, C, H, W)`` stack (the images are independent:
    nothing here is batch-coupled), and ``(B, m)`` to unstack."""
    return x.reshape((-1,) + x.shape[2:]), (x.shape[0], x.shape[1])


class Conv2DRule:
    """Conv2D: linear in its input and in each parameter; ``W`` and ``b`` are Dense-like (module docstring)."""

    def __init__(self, layer: Conv2D) -> None:
        self.layer = layer
        self._memo: tuple[NDArray, NDArray] | None = None

    def _patches(self, x: NDArray) -> NDArray:
        """The patches of ``x`` by column: ``(C k k, m, Ho, Wo)``, contiguous, memoized per input."""
        memo = self._memo
        if memo is None or memo[0] is not x:
            layer = self.layer
            P = im2col(x, layer.kernel_size, layer.stride, layer.padding)
            memo = self._memo = (x, np.ascontiguousarray(P.transpose(3, 0, 1, 2)))
        return memo[1]

    def param_inputs(self, name: str, x: NDArray) -> ParamInputs:
        """``W[r, c] += t`` adds ``t P[:, c]`` (m, Ho, Wo) to output channel ``r``; ``b[r] += t`` adds ``t``."""
        P = self._patches(x)
        if name == "W":
            return ParamInputs(P.transpose(1, 0, 2, 3))
        return ParamInputs(P[:0].transpose(1, 0, 2, 3), ones=1)

    def param_change(self, name: str, row: int, cols: Any, steps: NDArray, x: NDArray) -> ColumnChange:
        """Output change of ``W[row, c] += steps[b]`` (``c`` in ``cols``, columns of ``W.reshape(F, -1)``) or of
        ``b[row] += steps[b]``: output channel ``row`` moves, by ``steps[b] P[:, c]`` or ``steps[b]``; shape
        ``(B, m, Ho, Wo)`` (exact: the layer is linear)."""
        P = self._patches(x)
        t = np.asarray(steps)[:, None, None, None]
        if name == "W":
            return ColumnChange(row, t * P[cols])
        out = np.empty((t.shape[0],) + P.shape[1:], dtype=np.result_type(t, P))
        out[...] = t
        return ColumnChange(row, out)

    def _conv(self, d: NDArray, W: NDArray) -> NDArray:
        """The convolution without bias of a stack of input changes ``d`` (N, C', H, W) with kernels ``W``
        (F, C' k k): (N, F, Ho, Wo)."""
        layer = self.layer
        P = im2col(d, layer.kernel_size, layer.stride, layer.padding)
        return np.ascontiguousarray((P @ W.T).transpose(0, 3, 1, 2))

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """Output change for an input change: the convolution of the change, without the bias (exact); a
        channel change is convolved with that channel's kernels alone."""
        W = self.layer.params["W"]
        F, k = W.shape[0], self.layer.kernel_size
        if isinstance(change, ColumnChange):
            d, (B, m) = _stacked(change.delta[:, :, None])
            out = self._conv(d, W[:, change.col].reshape(F, k * k))
        else:
            d, (B, m) = _stacked(change.dense(x.shape))
            out = self._conv(d, W.reshape(F, -1))
        return DenseChange(out.reshape((B, m) + out.shape[1:]))

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: ``A`` (m, F, Ho, Wo) through the input gradient with ``|W|``."""
        layer = self.layer
        W = np.abs(layer.params["W"].astype(np.float64)).reshape(layer.out_channels, -1)
        dcols = np.asarray(A, dtype=np.float64).transpose(0, 2, 3, 1) @ W
        return col2im(dcols, x.shape, layer.kernel_size, layer.stride, layer.padding)


class MaxPoolRule:
    """MaxPool2D: ``max(x + d) - max(x)`` over each window, channel by channel (exact; ``cancels``)."""

    cancels = True

    def __init__(self, layer: MaxPool2D) -> None:
        self.layer = layer

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        k, s = self.layer.size, self.layer.stride
        if isinstance(change, ColumnChange):
            c = change.col
            d, (B, m) = _stacked((x[:, c][None] + change.delta)[:, :, None])
            out = max_pool(d, k, s).reshape((B, m) + y.shape[2:])
            out -= y[:, c][None]
            return ColumnChange(c, out)
        d, (B, m) = _stacked(x[None] + change.dense(x.shape))
        out = max_pool(d, k, s).reshape((B, m) + y.shape[1:])
        out -= y[None]
        return DenseChange(out)


class AvgPoolRule:
    """AvgPool2D: the mean of each window of the change (exact: the layer is linear)."""

    def __init__(self, layer: AvgPool2D) -> None:
        self.layer = layer

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        k, s = self.layer.size, self.layer.stride
        if isinstance(change, ColumnChange):
            d, (B, m) = _stacked(change.delta[:, :, None])
            return ColumnChange(change.col, avg_pool(d, k, s).reshape((B, m) + y.shape[2:]))
        d, (B, m) = _stacked(change.dense(x.shape))
        return DenseChange(avg_pool(d, k, s).reshape((B, m) + y.shape[1:]))

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: each output's ``A / k^2`` spread over its window (the layer's backward)."""
        k, s = self.layer.size, self.layer.stride
        Ho, Wo = A.shape[2:]
        out = np.zeros(x.shape, dtype=np.float64)
        share = np.asarray(A, dtype=np.float64) / (k * k)
        for i in range(k):
            for j in range(k):
                out[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += share
        return out


class FlattenRule:
    """Flatten: ``(m, C, H, W)`` to ``(m, C H W)`` in C order, so channel ``c`` becomes the columns
    ``c H W .. (c + 1) H W - 1`` (exact: a reshape)."""

    def __init__(self, layer: Flatten) -> None:
        self.layer = layer

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        if x.ndim == 2:
            return change
        B, m = change.batch, x.shape[0]
        if isinstance(change, ColumnChange):
            size = int(np.prod(x.shape[2:], dtype=np.int64))
            c = change.col
            return ColumnsChange(slice(c * size, (c + 1) * size), change.delta.reshape(B, m, size))
        return DenseChange(change.dense(x.shape).reshape(B, m, -1))

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        return np.asarray(A, dtype=np.float64).reshape(x.shape)


register_rule(Conv2D, Conv2DRule, reads=("forward",))
register_rule(MaxPool2D, MaxPoolRule, reads=("forward",))
register_rule(AvgPool2D, AvgPoolRule, reads=("forward",))
register_rule(Flatten, FlattenRule, reads=("forward",))
