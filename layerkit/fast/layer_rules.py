"""layerkit's own rules (see :mod:`layerkit.fast.rules`): Dense, Sigmoid, Tanh, ReLU, LeakyReLU and Identity;
any other :class:`~layerkit.Elementwise` layer gets :class:`~layerkit.fast.fn_rule.FnRule`.  Importing this
module (``layerkit.fast`` does) registers them.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._classes import defined_in
from ..nn.activations import sigmoid
from ..nn.elementwise import Elementwise, Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from ..nn.layers import Dense
from .changes import (
    Change,
    ColumnChange,
    ColumnsChange,
    DenseChange,
    ParamInputs,
    RankOneChange,
    SeriesChange,
    compose_series,
    elementwise_change,
    rank_one_series,
    sigmoid_change,
    sigmoid_series,
    strip_limit,
)
from .rules import register_rule


class DenseRule:
    """Dense: ``y = x1 Theta^T`` with ``x1 = [1, x]``, linear in its input and in each parameter."""

    def __init__(self, layer: Dense) -> None:
        self.layer = layer
        self._x1t: tuple[NDArray, NDArray] | None = None
        self._gathered: tuple[NDArray, int] | None = None  # columns of x gathered without the memo

    def _W(self) -> NDArray:
        return self.layer.params["Theta"][:, 1:]

    def param_change(self, name: str, row: int, cols: Any, steps: NDArray, x: NDArray) -> ColumnChange:
        """Output change of ``Theta[row, c] += steps[b]`` for the columns ``c`` in ``cols`` (a slice or an
        index array), at input ``x`` (m, n_in): only output column ``row`` moves, by ``steps[b] * x1[:, c]``
        (exact: the layer is linear).  Returns a ColumnChange of shape ``(B, m)``."""
        memo = self._x1t
        gathered = self._gathered[1] if self._gathered is not None and self._gathered[0] is x else 0
        if (memo is None or memo[0] is not x) and not isinstance(cols, slice) \
                and gathered + np.size(cols) <= x.shape[1]:
            # a few columns (the entries the tables leave to this path): those rows of [1, x]^T alone, the
            # same values as the memoized copy's; the whole transpose once more than x's width was asked for
            self._gathered = (x, gathered + int(np.size(cols)))
            c = np.asarray(cols, dtype=np.int64)
            rows = np.empty((c.size, x.shape[0]), dtype=x.dtype)
            rows[c == 0] = 1
            rows[c > 0] = x[:, c[c > 0] - 1].T
            return ColumnChange(row, steps[:, None] * rows)
        if memo is None or memo[0] is not x:  # [1, x]^T, contiguous, memoized per input
            x1t = np.empty((x.shape[1] + 1, x.shape[0]), dtype=x.dtype)
            x1t[0] = 1
            x1t[1:] = x.T
            memo = self._x1t = (x, x1t)
        return ColumnChange(row, steps[:, None] * memo[1][cols])

    def param_inputs(self, name: str, x: NDArray) -> ParamInputs:
        """``F = x1 = [1, x]`` (m, n_in + 1): ``Theta[r, c] += t`` adds ``t F[:, c]`` to output column ``r``."""
        return ParamInputs(x, ones=1)

    def linear_weights(self) -> NDArray:
        """``W`` (n_out, n_in): the layer's series of a dense change is ``coeffs W^T`` (see :meth:`series`)."""
        return self._W()

    def series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """Taylor coefficients of the output change: ``coeffs W^T`` (the layer is linear); a column series
        becomes rank one, ``outer(c_k, W[:, col])``, and stays rank one."""
        W = self._W()
        if change.cols is not None:
            return SeriesChange(change.coeffs, v=W[:, change.cols].T)
        if change.v is not None:
            return SeriesChange(change.coeffs, v=change.v @ W.T)
        return SeriesChange(change.coeffs @ W.T)

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: ``A |W|`` for output magnitudes ``A`` (m, n_out)."""
        return A @ np.abs(self._W())

    def forward_scale(self, x: NDArray) -> NDArray:
        """``|x| |W|^T + |b|``: the size of the terms each output sums (``(m, n_out)``, float64)."""
        theta = np.abs(self.layer.params["Theta"].astype(np.float64))
        return np.abs(np.asarray(x, dtype=np.float64)) @ theta[:, 1:].T + theta[:, 0]

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """If ``|dx[i, l]| <= rho b[B, l]`` for every example, then ``|dy[i, j]| <= rho (|W| b)[B, j]``, for any
        ``rho`` (no limit: the layer is linear)."""
        return b @ np.abs(self._W()).T, np.full(b.shape[0], np.inf)

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """Output change for an input change (exact: ``D W^T``)."""
        W = self._W()
        if isinstance(change, ColumnChange):
            return RankOneChange(change.delta, W[:, change.col].copy())
        if isinstance(change, RankOneChange):
            return RankOneChange(change.u, W @ change.v)
        if isinstance(change, ColumnsChange):
            return DenseChange(change.delta @ W[:, change.cols].T)
        return DenseChange(change.delta @ W.T)

    def direction_change(self, x: NDArray, change: Change | None, dtheta: NDArray, rows: slice) -> Change:
        """Output change when ``Theta`` moves by ``dtheta[b]`` (shape ``(B, n_out, n_in + 1)``, zero outside
        ``rows``) and the input by ``change`` (or not at all): ``D_x W^T + (x1 + D_x1) dTheta^T``, exact."""
        if change is None:  # one (m, n_in) x (n_in, B r) product for the whole batch
            sub = dtheta[:, rows, :]
            B, r = sub.shape[0], sub.shape[1]
            flat = sub.reshape(B * r, -1)
            out = x @ flat[:, 1:].T + flat[:, 0]
            return ColumnsChange(rows, out.reshape(x.shape[0], B, r).transpose(1, 0, 2))
        dx = change.dense(x.shape)
        W = self._W()
        dW = dtheta[:, :, 1:].transpose(0, 2, 1)
        out = dx @ W.T + np.matmul(x, dW)
        out += dtheta[:, None, :, 0]
        out += np.matmul(dx, dW)
        return DenseChange(out)


class SigmoidRule:
    """Sigmoid: changes from an identity without cancellation, series from the logistic ODE."""

    def __init__(self, layer: Sigmoid) -> None:
        self.layer = layer
        self._slope: tuple[NDArray, ...] | None = None
        self._taylor_memo: tuple[NDArray, NDArray] | None = None

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """Exact output change ``sigmoid(x + D) - sigmoid(x)`` (see :func:`~layerkit.fast.changes.sigmoid_change`);
        a column change stays a column change."""
        slope = self._slopes(x, y)
        if isinstance(change, ColumnChange):
            c = change.col
            return ColumnChange(c, sigmoid_change(y[:, c], slope[1][:, c], change.delta, overwrite=True, z=x[:, c]))
        if isinstance(change, ColumnsChange):
            cs = change.cols
            return ColumnsChange(cs, sigmoid_change(y[:, cs], slope[1][:, cs], change.delta, overwrite=True,
                                                    z=x[:, cs]))
        return DenseChange(sigmoid_change(y, slope[1], change.dense(x.shape), overwrite=True, z=x))

    def series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """Taylor coefficients of ``sigmoid(x + D(tau)) - sigmoid(x)`` (see
        :func:`~layerkit.fast.changes.sigmoid_series`); a column series stays a column series."""
        slope = self._slopes(x, y)
        if change.cols is not None:
            c = change.cols  # the units' columns, gathered with the batch first
            return SeriesChange(sigmoid_series(np.moveaxis(y[:, c], 1, 0), np.moveaxis(slope[2][:, c], 1, 0),
                                               change.coeffs), c)
        if change.v is not None:
            # rank one, c(tau) v: sum_n sigma_n(x_il) v_l^n c_i^n, sigma_n = sigmoid^(n) / n! at x (memoized)
            return rank_one_series(self.entry_series(x, y, change.coeffs.shape[0]), change)
        return SeriesChange(sigmoid_series(y, slope[2], change.coeffs))

    def entry_series(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        """``sigmoid^(n)(x) / n!`` for ``n = 1..K`` (shape ``(K,) + x.shape``): the series of each entry alone
        (memoized per input)."""
        return self._taylor(x, y, K)

    def _taylor(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        memo = self._taylor_memo
        if memo is None or memo[0] is not x or len(memo[1]) < K:
            memo = self._taylor_memo = (x, sigmoid_series(y, self._slopes(x, y)[2], None, K))
        return memo[1][:K]

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """``sigmoid'(z) = 1 / (4 cosh^2(z/2))`` and ``|cosh(u + iv)|^2 = sinh^2 u + cos^2 v >= 1/2`` when
        ``|v| <= pi/4``, so ``|sigmoid'| <= 1/2`` in the strip ``|Im z| <= pi/2``: the bound halves, valid
        for ``rho <= (pi/2) / max_l b[B, l]``."""
        return b / 2, strip_limit(b)

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: ``A sigmoid'(x)``, formed as ``A s sigmoid(-x)``."""
        return A * self._slopes(x, y)[1]

    def _slopes(self, x: NDArray, y: NDArray) -> tuple[NDArray, ...]:
        """Memoized per input: ``(x, s (1 - s), sigmoid(-x))`` (a unit's column is read in place, strided:
        no transposed copies of the activations)."""
        slope = self._slope
        if slope is None or slope[0] is not x:
            sc = sigmoid(-x)
            slope = self._slope = (x, y * sc, sc)
        return slope


def _own(layer: Any, name: str) -> bool:
    """Whether ``layer``'s ``name`` is defined at least as far down its class hierarchy as its ``fn`` and
    ``derivative``: a subclass that changes ``fn`` but inherits, say, ``taylor`` does not get it."""
    cls = type(layer)
    if not hasattr(layer, name) or getattr(layer, name) is None:
        return False
    return defined_in(cls, name) <= min(defined_in(cls, "fn"), defined_in(cls, "derivative"))


class ElementwiseRule:
    """layerkit's own Elementwise layers (Tanh, ReLU, LeakyReLU, Identity): changes through their ``change``
    (or ``fn(x + d) - y``), series through their ``taylor`` with the bound of their ``strip`` and ``slope``,
    when they have them.

    A layer with ``linear_pieces`` (ReLU, LeakyReLU) gets the series of its *pieces* instead: on the piece
    that holds ``x``, ``f(x + d) - f(x) = f'(x) d`` exactly, so a series change is multiplied by the piece's
    slope (``derivative`` off the kinks), with no truncation of its own, and the bound scales by the largest
    slope with no limit (a linear map is entire).  That series describes ``f`` only where the change stays on
    the piece, ``|d| < kink_distance(x)``; whoever reads it (:class:`~layerkit.fast.series.SeriesBlock`) must
    evaluate every change that may reach a kink by the exact path instead, and the confirmation of the series
    (:mod:`layerkit.fast.confirm`) compares it with ``forward`` there only.  Error model: the series is exact
    (one product per coefficient, relative rounding ``eps``); its use is exact on the examples it is used for.
    """

    def __init__(self, layer: Elementwise) -> None:
        self.layer = layer
        self._change = getattr(layer, "change") if _own(layer, "change") else None
        self.cancels = self._change is None
        self._taylor_memo: tuple[NDArray, NDArray] | None = None
        self._deriv_memo: tuple[NDArray, NDArray] | None = None
        self._slope_memo: tuple[NDArray, NDArray] | None = None
        if _own(layer, "linear_pieces") and layer.linear_pieces and _own(layer, "kinks") and layer.kinks:
            self._kinks = np.sort(np.asarray(layer.kinks, dtype=np.float64))
            self._max_slope = self._largest_slope()
            self.series = self._piece_series
            self.series_bound = self._piece_bound
            self.kink_distance = self._kink_distance
            self.entry_series = self._piece_entry_series
        elif _own(layer, "taylor") and _own(layer, "strip") and _own(layer, "slope"):
            self.series = self._series
            self.series_bound = self._series_bound
            self.entry_series = self._taylor

    def columnwise(self, x: NDArray, y: NDArray) -> bool:
        return True

    def _diff(self, x: NDArray, y: NDArray, d: NDArray) -> NDArray:
        if self._change is not None:
            return np.asarray(self._change(x, y, d))
        return np.asarray(self.layer.fn(x + d)) - y

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """``f(x + D) - f(x)``; a column change stays a column change."""
        return elementwise_change(self._diff, x, y, change)

    def magnitude(self, x: NDArray, y: NDArray, A: NDArray) -> NDArray:
        """Backprop on magnitudes: ``A |f'(x)|``."""
        memo = self._deriv_memo
        if memo is None or memo[0] is not x:
            memo = self._deriv_memo = (x, np.abs(np.asarray(self.layer.derivative(x, y), dtype=np.float64)))
        return A * memo[1]

    def _taylor(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        memo = self._taylor_memo
        if memo is None or memo[0] is not x or len(memo[1]) < K:
            memo = self._taylor_memo = (x, np.asarray(getattr(self.layer, "taylor")(x, y, K)))
        return memo[1][:K]

    def _series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """``f(x + D(tau)) - f(x) = sum_n f^(n)(x) / n! D(tau)^n``, composed term by term."""
        K = change.coeffs.shape[0]
        T = self._taylor(x, y, K)
        if change.cols is not None:
            return SeriesChange(compose_series(T[:, :, change.cols].transpose(0, 2, 1), change.coeffs), change.cols)
        if change.v is not None:
            return rank_one_series(T, change)
        return SeriesChange(compose_series(T[:, None], change.coeffs))

    def _series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """``|f'| <= slope`` in the strip ``|Im z| <= strip``: the bound scales by ``slope``, for
        ``rho <= strip / max_l b[B, l]``."""
        layer = self.layer
        slope, strip = layer.slope, layer.strip
        assert slope is not None and strip is not None  # the rule has series only when both are given
        return b * float(slope), strip_limit(b, float(strip))

    # ------------------------------------------------------------------ linear pieces (class docstring)
    def _largest_slope(self) -> float:
        """The largest ``|f'|`` over the pieces: ``derivative`` at one point inside each (it is constant on a
        linear piece), beyond the outermost kinks and between each pair."""
        k = self._kinks
        inside = np.concatenate([[k[0] - 1.0], (k[:-1] + k[1:]) / 2, [k[-1] + 1.0]])[None, :]
        with np.errstate(all="ignore"):
            slopes = np.asarray(self.layer.derivative(inside, np.asarray(self.layer.fn(inside))), dtype=np.float64)
        return float(np.max(np.abs(slopes)))

    def _slopes(self, x: NDArray, y: NDArray) -> NDArray:
        """``f'(x)``, the slope of the piece holding each entry (memoized per input)."""
        memo = self._slope_memo
        if memo is None or memo[0] is not x:
            memo = self._slope_memo = (x, np.asarray(self.layer.derivative(x, y)))
        return memo[1]

    def _kink_distance(self, x: NDArray) -> NDArray:
        """``min_k |x - kink_k|`` per entry (float64): a change of at most that size stays on its piece
        (0 at a kink, where no change does)."""
        xf = np.asarray(x, dtype=np.float64)
        out = np.abs(xf - self._kinks[0])
        for kink in self._kinks[1:]:
            np.minimum(out, np.abs(xf - kink), out=out)
        return out

    def _piece_series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """``f'(x) D(tau)`` on each entry's piece: a column series stays a column series."""
        S = self._slopes(x, y)
        dtype = change.coeffs.dtype
        if change.cols is not None:
            return SeriesChange(change.coeffs * S.T[change.cols].astype(dtype)[None], change.cols)
        if change.v is not None:
            return SeriesChange(change.coeffs[..., None] * (change.v[:, None, :] * S[None].astype(dtype))[None])
        return SeriesChange(change.coeffs * S.astype(dtype))

    def _piece_entry_series(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        """Each entry's series on its piece: ``f'(x)``, then zeros (shape ``(K,) + x.shape``)."""
        T = np.zeros((K,) + x.shape, dtype=np.result_type(self._slopes(x, y), np.float32))
        T[0] = self._slopes(x, y)
        return T

    def _piece_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """On the pieces the change scales by at most the largest slope, for any ``rho`` (a linear map)."""
        return b * self._max_slope, np.full(b.shape[0], np.inf)


register_rule(Dense, DenseRule, reads=("forward",))
register_rule(Sigmoid, SigmoidRule, reads=("forward", "fn", "derivative", "change", "taylor"))
for _cls in (Tanh, Identity):
    register_rule(_cls, ElementwiseRule, reads=("forward", "fn", "derivative", "change", "taylor", "strip", "slope"))
for _kinked in (ReLU, LeakyReLU):
    register_rule(_kinked, ElementwiseRule, reads=("forward", "fn", "derivative", "change", "taylor", "strip",
                                                   "slope", "kinks", "linear_pieces"))

from .fn_rule import FnRule  # noqa: E402

register_rule(Elementwise, FnRule, reads=("forward",))
