"""The rule of a layer without parameters and without one of its own: its ``forward``, called on many changed
inputs at once (see :mod:`layerkit.fast.rules`)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .changes import Change, ColumnChange, DenseChange, SeriesChange
from .fn_rule import FnRule, Unavailable

#: Most elements of one stacked forward call of :class:`ForwardRule` (8 MB in float64).
FORWARD_BATCH = 1 << 20


class ForwardRule:
    """``propagate`` of a layer without parameters and without a rule, by calling its own ``forward`` on many
    changed inputs at once: the batch's ``(B, m, n)`` inputs stacked along the example axis into one call.

    A column change of an elementwise layer that treats every entry alike (found out on first use, on every
    example: its forward commutes with a shuffle of all the entries) is packed tighter: the ``B m`` changed
    values of the column fill a ``(B m / n, n)`` input, ``n`` times fewer than stacking.
    ``forward(x + D) - forward(x)`` cancels: it carries about ``eps |y|`` of rounding per unit, which the
    engine's rounding bound for a cancelling rule accounts for.  Before first use the rule is compared with
    ``forward`` on the original layout, on every example (:class:`~layerkit.fast.confirm.Rules`).
    """

    cancels = True
    #: Its series, when it has one, is derived from ``forward`` (see :meth:`series`).
    derived = True

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._uniform: tuple[NDArray, bool] | None = None
        self._fn = FnRule(_ForwardAsFn(layer))

    def series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """Taylor coefficients of the output change, for a layer found to act on each entry alone by one
        function (:meth:`uniform`): that function is its ``forward``, so the coefficients are derived from
        ``forward`` at complex points, as :class:`~layerkit.fast.fn_rule.FnRule` derives them from an
        Elementwise layer's ``fn`` (when it is analytic there and takes complex input; else
        :class:`~layerkit.fast.fn_rule.Unavailable`, and the engine takes the exact path)."""
        if x.ndim != 2 or not self.uniform(x, y):
            raise Unavailable(f"{self.layer!r}: its forward does not act on each entry alone")
        return self._fn.series(x, y, change)

    def entry_series(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        """Each entry's derived series (:meth:`~layerkit.fast.fn_rule.FnRule.entry_series`), for a layer that
        acts on each entry alone by one function (:meth:`uniform`)."""
        if x.ndim != 2 or not self.uniform(x, y):
            raise Unavailable(f"{self.layer!r}: its forward does not act on each entry alone")
        return self._fn.entry_series(x, y, K)

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """The bound of the derived series (:meth:`~layerkit.fast.fn_rule.FnRule.series_bound`)."""
        return self._fn.series_bound(b)

    def _forward(self, x: NDArray) -> NDArray:
        with np.errstate(all="ignore"):
            return np.asarray(self.layer.forward(np.ascontiguousarray(x)))

    def uniform(self, x: NDArray, y: NDArray) -> bool:
        """Whether the layer acts on each entry alone, by one function, on every example: ``forward`` of a
        shuffle of all of ``x``'s entries is the same shuffle of their outputs, within ``64 eps`` of each
        value (one forward call on the whole input; a layer that treats one entry of one example differently
        is not packed)."""
        memo = self._uniform
        if memo is not None and memo[0] is x:
            return memo[1]
        perm = np.random.default_rng(0x756E69).permutation(x.size)
        ok = False
        try:
            shuffled = self._forward(x.reshape(-1)[perm].reshape(x.shape))
            if shuffled.shape == x.shape:
                eps = float(np.finfo(np.result_type(y.dtype, np.float32)).eps)
                expect = np.asarray(y).reshape(-1)[perm].reshape(x.shape).astype(np.float64)
                diff = np.abs(shuffled.astype(np.float64) - expect)
                ok = bool(np.all(diff <= 64 * eps * np.abs(expect)) and np.all(np.isfinite(diff)))
        except Exception:  # noqa: BLE001 - a forward that refuses the shuffle is not uniform
            ok = False
        self._uniform = (x, ok)
        return ok

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        m, n = x.shape[0], int(np.prod(x.shape[1:], dtype=np.int64))
        if isinstance(change, ColumnChange) and x.ndim == 2 and n > 1 and self.uniform(x, y):
            c = change.col
            vals = (x[:, c][None, :] + change.delta).reshape(-1)
            size = vals.size
            pad = (-size) % n
            if pad:
                vals = np.concatenate([vals, np.broadcast_to(vals[:1], (pad,))])
            stacked = vals.reshape(-1, n)
            out = np.empty(stacked.size, dtype=np.result_type(y.dtype, change.delta.dtype))
            step = max(1, FORWARD_BATCH // n)
            for lo in range(0, stacked.shape[0], step):
                part = self._forward(stacked[lo:lo + step])
                out[lo * n:(lo + part.shape[0]) * n] = part.reshape(-1)
            return ColumnChange(c, out[:size].reshape(change.delta.shape) - y[:, c][None, :])
        D = change.dense(x.shape)
        B = D.shape[0]
        out = np.empty((B,) + y.shape, dtype=np.result_type(y.dtype, D.dtype))
        per = max(1, FORWARD_BATCH // (m * n))
        for lo in range(0, B, per):
            hi = min(B, lo + per)
            stacked = (x[None] + D[lo:hi]).reshape(((hi - lo) * m,) + x.shape[1:])
            out[lo:hi] = self._forward(stacked).reshape((hi - lo, m) + y.shape[1:]) - y[None]
        return DenseChange(out)


class _ForwardAsFn:
    """A parameterless layer whose ``forward`` acts on each entry alone, seen as the ``fn`` of an
    elementwise layer."""

    def __init__(self, layer: Any) -> None:
        self.layer = layer

    def fn(self, z: NDArray) -> NDArray:
        return np.asarray(self.layer.forward(z))

    def __repr__(self) -> str:
        return repr(self.layer)
