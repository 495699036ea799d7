"""Layers on images: :class:`Conv2D`, :class:`MaxPool2D`, :class:`AvgPool2D` and :class:`Flatten`.

Inputs are batches ``(m, C, H, W)`` (examples, channels, height, width), as in CS231n and PyTorch.  A
convolution is a dense layer on patches: ``im2col`` gathers every ``(C, k, k)`` window of the (zero-padded)
input into a row, and the output is ``patches @ W.reshape(F, -1).T + b``; its weight gradient is
``dy^T patches``, its input gradient ``dy W`` scattered back onto the windows (``col2im``).  Every pass is
vectorized over the batch (a loop over the ``k x k`` kernel offsets only).

The network engine (:mod:`layerkit.fast.spatial_rules`) restates these layers with the same helpers
(:func:`im2col`, :func:`col2im`, :func:`max_pool`, :func:`avg_pool`): a convolution's weight entry moves one output channel
by a column of the patches, as a Dense layer's moves one output column.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from numpy.typing import NDArray

from .._validate import describe, float_dtype, positive_int
from ..errors import InputError, NotBoundError, NotForwardedError


def _nonnegative_int(value: Any, argument: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError(argument, "a non-negative integer", describe(value))
    return int(value)


def _images(x: Any, channels: int | None, who: str) -> NDArray:
    x = np.asarray(x)
    if x.ndim != 4 or (channels is not None and x.shape[1] != channels):
        want = f"(m, {channels}, H, W)" if channels is not None else "(m, C, H, W)"
        raise InputError(f"{who}.forward(x)", f"a batch of images of shape {want}", describe(x))
    return x


def _windows(x: NDArray, k: int, stride: int) -> NDArray:
    """Every ``k x k`` window of ``x`` (m, C, H, W) at ``stride``: a view of shape (m, C, Ho, Wo, k, k)."""
    return sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]


def pool_windows(x: NDArray, k: int, stride: int) -> NDArray:
    """Every ``k x k`` window of ``x`` (m, C, H, W) at ``stride``, flattened: shape (m, C, Ho, Wo, k k)."""
    win = _windows(x, k, stride)
    return win.reshape(win.shape[:4] + (-1,))


def max_pool(x: NDArray, k: int, stride: int) -> NDArray:
    """The maximum of every ``k x k`` window of ``x`` (m, C, H, W) at ``stride``: (m, C, Ho, Wo).  The
    elementwise maximum of the ``k^2`` strided views, one per place in the window: no copy of the windows,
    and the same values as any order of comparing them (a maximum rounds nothing; a NaN propagates)."""
    Ho, Wo = (x.shape[2] - k) // stride + 1, (x.shape[3] - k) // stride + 1
    out = None
    for a in range(k):
        for b in range(k):
            view = x[:, :, a:a + stride * (Ho - 1) + 1:stride, b:b + stride * (Wo - 1) + 1:stride]
            out = view.copy() if out is None else np.maximum(out, view, out=out)
    assert out is not None
    return out


def avg_pool(x: NDArray, k: int, stride: int) -> NDArray:
    """The mean of every ``k x k`` window of ``x`` (m, C, H, W) at ``stride``: (m, C, Ho, Wo)."""
    return _windows(x, k, stride).mean(axis=(-2, -1))


def im2col(x: NDArray, k: int, stride: int, padding: int) -> NDArray:
    """The patches of ``x`` (m, C, H, W): every ``(C, k, k)`` window of the zero-padded input as a row, shape
    (m, Ho, Wo, C k k), in the order of ``W.reshape(F, -1)``'s columns."""
    p = padding
    xp = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p))) if p else x
    _out_size(xp.shape[2], k, stride, "Conv2D")
    _out_size(xp.shape[3], k, stride, "Conv2D")
    win = _windows(xp, k, stride)                                 # (m, C, Ho, Wo, k, k)
    return np.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(
        x.shape[0], win.shape[2], win.shape[3], -1)


def col2im(dcols: NDArray, x_shape: tuple[int, ...], k: int, stride: int, padding: int) -> NDArray:
    """The adjoint of :func:`im2col`: rows ``dcols`` (m, Ho, Wo, C k k) added back onto the windows they came
    from, an array of ``x_shape`` (m, C, H, W)."""
    m, Ho, Wo = dcols.shape[:3]
    C, s, p = x_shape[1], stride, padding
    d6 = dcols.reshape(m, Ho, Wo, C, k, k)
    dxp = np.zeros((m, C, x_shape[2] + 2 * p, x_shape[3] + 2 * p), dtype=dcols.dtype)
    for i in range(k):  # each kernel offset adds its slice of every window back
        for j in range(k):
            dxp[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += d6[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return dxp[:, :, p:p + x_shape[2], p:p + x_shape[3]] if p else dxp


def _out_size(n: int, k: int, stride: int, who: str) -> int:
    if n < k:
        raise InputError(f"{who}.forward(x)", f"images of at least {k} x {k} (after padding)", f"size {n}")
    return (n - k) // stride + 1


class Conv2D:
    """2-D convolution (cross-correlation, as every framework computes it) with zero padding.

    Parameters
    ----------
    in_channels, out_channels : int
        ``C`` and ``F``.
    kernel_size : int
        ``k``: square ``k x k`` kernels.
    stride, padding : int
        Step between windows, zeros added on each side of height and width.

    Notes
    -----
    Parameters ``W`` (shape ``(F, C, k, k)``, regularized by the default L2 penalty) and ``b`` (shape ``(F,)``,
    not regularized).  Output ``(m, F, Ho, Wo)`` with ``Ho = (H + 2 padding - k) // stride + 1``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0,
                 *, seed: int | None = None, dtype: Any = np.float64) -> None:
        self.in_channels = positive_int(in_channels, "in_channels")
        self.out_channels = positive_int(out_channels, "out_channels")
        self.kernel_size = positive_int(kernel_size, "kernel_size")
        self.stride = positive_int(stride, "stride")
        self.padding = _nonnegative_int(padding, "padding")
        k = self.kernel_size
        self.param_shapes: dict[str, tuple[int, ...]] = {"W": (self.out_channels, self.in_channels, k, k),
                                                         "b": (self.out_channels,)}
        dt = float_dtype(dtype)
        self.params: dict[str, NDArray] = {}
        self.grads: dict[str, NDArray] = {}
        self.bind({n: np.zeros(s, dt) for n, s in self.param_shapes.items()},
                  {n: np.zeros(s, dt) for n, s in self.param_shapes.items()})
        self.init_params(np.random.default_rng(seed))
        self._cache: tuple[tuple[int, ...], NDArray] | None = None

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        for name, arrs in (("params", params), ("grads", grads)):
            for p, shape in self.param_shapes.items():
                a = arrs.get(p) if isinstance(arrs, Mapping) else None
                if a is None or a.shape != shape:
                    raise InputError(f"Conv2D.bind({name})", f"{{'{p}': array of shape {shape}, ...}}", describe(a))
        self.params = {"W": params["W"], "b": params["b"]}
        self.grads = {"W": grads["W"], "b": grads["b"]}

    def init_params(self, rng: np.random.Generator) -> None:
        """``W`` uniform in ``[-eps, eps]``, ``eps = sqrt(6 / (fan_in + fan_out))`` with ``fan_in = C k^2`` and
        ``fan_out = F k^2``; ``b`` zero."""
        k2 = self.kernel_size ** 2
        eps = float(np.sqrt(6.0 / (self.in_channels * k2 + self.out_channels * k2)))
        W = self.params["W"]
        W[...] = rng.uniform(-eps, eps, W.shape).astype(W.dtype)
        self.params["b"][...] = 0

    def penalized(self, name: str, array: NDArray) -> NDArray:
        """The kernels are regularized, the biases are not."""
        return array if name == "W" else array[:0]

    def forward(self, x: NDArray) -> NDArray:
        x = _images(x, self.in_channels, "Conv2D")
        if not self.params:
            raise NotBoundError("Conv2D has no parameters bound")
        cols = im2col(x, self.kernel_size, self.stride, self.padding)
        self._cache = (x.shape, cols)
        W, b = self.params["W"], self.params["b"]
        out = cols @ W.reshape(self.out_channels, -1).T + b      # (m, Ho, Wo, F)
        return np.ascontiguousarray(out.transpose(0, 3, 1, 2))

    def backward(self, dy: NDArray) -> NDArray:
        dyr = self._dy(dy)
        self._write_grads(dyr)
        assert self._cache is not None
        dcols = dyr @ self.params["W"].reshape(self.out_channels, -1)
        return col2im(dcols, self._cache[0], self.kernel_size, self.stride, self.padding)

    def backward_params(self, dy: NDArray) -> None:
        self._write_grads(self._dy(dy))

    def _dy(self, dy: NDArray) -> NDArray:
        if self._cache is None:
            raise NotForwardedError("Conv2D.backward was called before Conv2D.forward: there is no input to "
                                    "differentiate at")
        m, Ho, Wo, _ = self._cache[1].shape
        dy = np.asarray(dy)
        if dy.shape != (m, self.out_channels, Ho, Wo):
            raise InputError("Conv2D.backward(dy)", f"shape {(m, self.out_channels, Ho, Wo)} (the last output's)",
                             describe(dy))
        return dy.transpose(0, 2, 3, 1)                            # (m, Ho, Wo, F)

    def _write_grads(self, dyr: NDArray) -> None:
        assert self._cache is not None
        cols = self._cache[1]
        F = self.out_channels
        self.grads["W"][...] = (dyr.reshape(-1, F).T @ cols.reshape(-1, cols.shape[-1])).reshape(self.grads["W"].shape)
        self.grads["b"][...] = dyr.sum(axis=(0, 1, 2))

    def __repr__(self) -> str:
        extra = (f", stride={self.stride}" if self.stride != 1 else "") + (
            f", padding={self.padding}" if self.padding else "")
        return f"Conv2D({self.in_channels}, {self.out_channels}, {self.kernel_size}{extra})"


class _Parameterless:
    """What the image layers without parameters share: nothing to bind."""

    param_shapes: dict[str, tuple[int, ...]] = {}

    def __init__(self) -> None:
        self.params: dict[str, NDArray] = {}
        self.grads: dict[str, NDArray] = {}

    def bind(self, params: Mapping[str, NDArray], grads: Mapping[str, NDArray]) -> None:
        pass


class _Pool(_Parameterless):
    """The shared part of the pooling layers: window size, stride, shapes."""

    def __init__(self, size: int, stride: int | None = None) -> None:
        super().__init__()
        self.size = positive_int(size, "size")
        self.stride = self.size if stride is None else positive_int(stride, "stride")
        self._x_shape: tuple[int, ...] | None = None

    def _win(self, x: Any) -> NDArray:
        x = _images(x, None, type(self).__name__)
        _out_size(x.shape[2], self.size, self.stride, type(self).__name__)
        _out_size(x.shape[3], self.size, self.stride, type(self).__name__)
        self._x_shape = x.shape
        return _windows(x, self.size, self.stride)

    def _dy(self, dy: NDArray) -> tuple[NDArray, tuple[int, ...]]:
        if self._x_shape is None:
            raise NotForwardedError(f"{type(self).__name__}.backward was called before forward: there is no input "
                                    "to differentiate at")
        m, C, H, W = self._x_shape
        k, s = self.size, self.stride
        want = (m, C, (H - k) // s + 1, (W - k) // s + 1)
        dy = np.asarray(dy)
        if dy.shape != want:
            raise InputError(f"{type(self).__name__}.backward(dy)", f"shape {want} (the last output's)", describe(dy))
        return dy, self._x_shape

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.size}" + (f", stride={self.stride}" if self.stride != self.size else "") + ")"


class MaxPool2D(_Pool):
    """Max pooling over ``size x size`` windows at ``stride`` (default ``size``): the gradient is routed to
    each window's maximum (the first one, at a tie -- where the maximum is not differentiable)."""

    def forward(self, x: NDArray) -> NDArray:
        self._win(x)
        flat = pool_windows(np.asarray(x), self.size, self.stride)
        self._arg = np.argmax(flat, axis=-1)
        return np.take_along_axis(flat, self._arg[..., None], axis=-1)[..., 0]

    def pieces(self, x: NDArray) -> NDArray:
        """Which smooth piece the pooling is on at input ``x``: each window's argmax plus 1, 0 where the
        maximum is tied (not differentiable there).  A step that changes a window's argmax crosses a kink."""
        flat = pool_windows(np.asarray(x), self.size, self.stride)
        if self.size == 1:  # a window of one entry: a single smooth piece
            return np.ones(flat.shape[:4], dtype=np.int64)
        top = np.sort(flat, axis=-1)
        return np.where(top[..., -1] == top[..., -2], 0, np.argmax(flat, axis=-1) + 1)

    def backward(self, dy: NDArray) -> NDArray:
        dy, (m, C, H, W) = self._dy(dy)
        k, s = self.size, self.stride
        Ho, Wo = dy.shape[2:]
        rows = np.arange(Ho)[:, None] * s + self._arg // k
        cols = np.arange(Wo)[None, :] * s + self._arg % k
        dx = np.zeros((m, C, H, W), dtype=dy.dtype)
        mi, ci = np.meshgrid(np.arange(m), np.arange(C), indexing="ij")
        np.add.at(dx, (mi[:, :, None, None], ci[:, :, None, None], rows, cols), dy)
        return dx


class AvgPool2D(_Pool):
    """Average pooling over ``size x size`` windows at ``stride`` (default ``size``): the gradient is spread
    evenly over each window."""

    def forward(self, x: NDArray) -> NDArray:
        self._win(x)
        return avg_pool(np.asarray(x), self.size, self.stride)

    def backward(self, dy: NDArray) -> NDArray:
        dy, (m, C, H, W) = self._dy(dy)
        k, s = self.size, self.stride
        Ho, Wo = dy.shape[2:]
        dx = np.zeros((m, C, H, W), dtype=dy.dtype)
        share = dy / (k * k)
        for i in range(k):
            for j in range(k):
                dx[:, :, i:i + s * Ho:s, j:j + s * Wo:s] += share
        return dx


class Flatten(_Parameterless):
    """``(m, ...)`` to ``(m, prod(...))``, C order: between a convolution's images and a Dense layer."""

    def __init__(self) -> None:
        super().__init__()
        self._shape: tuple[int, ...] | None = None

    def forward(self, x: NDArray) -> NDArray:
        x = np.asarray(x)
        if x.ndim < 2:
            raise InputError("Flatten.forward(x)", "a batch (m, ...) of at least 2 dimensions", describe(x))
        self._shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy: NDArray) -> NDArray:
        if self._shape is None:
            raise NotForwardedError("Flatten.backward was called before Flatten.forward: there is no input shape")
        return np.asarray(dy).reshape(self._shape)

    def __repr__(self) -> str:
        return "Flatten()"
