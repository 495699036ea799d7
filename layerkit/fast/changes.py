"""Structured changes of an activation, for evaluating many parameter perturbations at once.

A batch of ``B`` perturbations changes an ``(m, n)`` activation ``a`` into ``a + D[b]``.  Most of those
changes have structure that is far cheaper to carry than ``B`` dense ``(m, n)`` arrays:

* :class:`ColumnChange`: only column ``col`` changes, ``D[b][:, col] = delta[b]`` -- what perturbing one
  entry of a Dense layer's ``Theta[col, c]`` does to its output, and what an elementwise layer keeps;
* :class:`RankOneChange`: ``D[b] = outer(u[b], v)`` -- what a Dense layer makes of a column change (and
  of a rank-one change: ``outer(u, v) W^T = outer(u, W v)``);
* :class:`ColumnsChange`: only a range of columns changes (a direction restricted to some rows of Theta);
* :class:`DenseChange`: anything, ``D[b] = delta[b]``;
* :class:`SeriesChange`: ``D[b] = sum_k coeffs[k-1, b] tau^k``, a truncated power series in a scalar ``tau``
  per example -- what perturbing one pre-activation column by ``tau`` does to everything downstream, since
  each example's row depends on its own ``tau`` alone.

Layers may implement ``propagate(x, y, change) -> change`` (exact: no linearization), ``series(x, y, change)``
with ``series_bound(b)`` (Taylor coefficients, with a bound for the remainder), and a Dense-like layer
``param_change(name, row, cols, steps, x)`` and ``param_inputs(name, x)``; see :mod:`layerkit.nn.layers`.
Propagation *consumes* a change: a layer may overwrite the arrays of the change it is given.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Union

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from ..nn.activations import sigmoid, softplus


@frozen(eq=False)
class ColumnChange:
    """Column ``col`` of an ``(m, n)`` activation changes by ``delta[b]`` (shape ``(B, m)``); of an image
    activation ``(m, C, H, W)``, channel ``col`` changes by ``delta[b]`` (shape ``(B, m, H, W)``)."""

    col: int
    delta: NDArray

    @property
    def batch(self) -> int:
        return self.delta.shape[0]

    def take(self, lo: int, hi: int) -> ColumnChange:
        return ColumnChange(self.col, self.delta[lo:hi])

    def dense(self, shape: tuple[int, ...]) -> NDArray:
        out = np.zeros((self.batch,) + tuple(shape), dtype=self.delta.dtype)
        out[:, :, self.col] = self.delta
        return out

    def rows(self, idx: NDArray, n: int) -> NDArray:
        """The examples ``idx`` of every batch item, dense: ``(B, len(idx), n)`` (an ``(m, n)`` activation)."""
        out = np.zeros((self.batch, idx.size, n), dtype=self.delta.dtype)
        out[:, :, self.col] = self.delta[:, idx]
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

    def rows(self, idx: NDArray, n: int) -> NDArray:
        out = np.zeros((self.batch, idx.size, n), dtype=self.delta.dtype)
        out[:, :, self.cols] = self.delta[:, idx]
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

    def rows(self, idx: NDArray, n: int) -> NDArray:
        return np.einsum("bi,k->bik", self.u[:, idx], self.v)


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

    def rows(self, idx: NDArray, n: int) -> NDArray:
        return np.array(self.delta[:, idx], copy=True)


def elementwise_change(diff: Callable[[NDArray, NDArray, NDArray], NDArray], x: NDArray, y: NDArray,
                       change: Change) -> Change:
    """An elementwise layer's output change for an input ``change`` at ``x`` (output ``y``), from ``diff(x, y, d)
    = f(x + d) - f(x)`` on the entries the change moves: a column change stays a column change."""
    if isinstance(change, ColumnChange):
        c = change.col
        return ColumnChange(c, diff(x[:, c], y[:, c], change.delta))
    if isinstance(change, ColumnsChange):
        cs = change.cols
        return ColumnsChange(cs, diff(x[:, cs], y[:, cs], change.delta))
    return DenseChange(diff(x, y, change.dense(x.shape)))


def matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """A parameter block as the matrix its layer's ``param_inputs`` describes: rows are the output columns (or
    channels) an entry moves, columns the inputs it multiplies.  ``(F, C, k, k)`` kernels are ``(F, C k k)``,
    a vector of biases ``(F, 1)``."""
    if not shape:
        return 1, 1
    return int(shape[0]), int(np.prod(shape[1:], dtype=np.int64))


@frozen(eq=False)
class ParamInputs:
    """The matrix ``F`` of a Dense-like parameter, whose entry ``(r, c)`` moved by ``t`` adds ``t F[:, c]`` to
    output column ``r``: ``F = [1, x]`` with ``ones`` leading columns of ones (a bias) before the columns of
    ``x`` (m, n), without materializing it.

    For a layer on images ``x`` is ``(m, n, Ho, Wo)`` and ``F[:, c]`` an ``(m, Ho, Wo)`` image that moves a whole
    output channel ``r`` (a convolution's patches, :class:`~layerkit.fast.spatial_rules.Conv2DRule`): ``columns``
    and ``matvec`` keep those trailing axes; the members the Taylor tables read (``rows``, ``row_abs_max``,
    ``abs_max``, ``sum_squares``) are for ``(m, n)`` inputs only."""

    x: NDArray
    ones: int = 0

    @property
    def shape(self) -> tuple[int, int]:
        """``(m, number of columns)``."""
        return self.x.shape[0], self.ones + self.x.shape[1]

    def columns(self, c0: int, c1: int, dtype: Any = None) -> NDArray:
        """``F[:, c0:c1]`` as a new contiguous array, ``(m, c1 - c0)`` plus the trailing axes of ``x``."""
        m = self.x.shape[0]
        out = np.empty((m, c1 - c0) + self.x.shape[2:], dtype=dtype or self.x.dtype)
        k = max(0, min(self.ones, c1) - c0)
        out[:, :k] = 1
        out[:, k:] = self.x[:, max(c0, self.ones) - self.ones:c1 - self.ones]
        return out

    def rows(self, idx: NDArray) -> NDArray:
        """``|F[idx, :]|`` (float64, ``(len(idx), n_cols)``): the examples ``idx``' row of every column."""
        out = np.empty((idx.size, self.shape[1]))
        out[:, :self.ones] = 1
        out[:, self.ones:] = np.abs(self.x[idx])
        return out

    def row_abs_max(self) -> NDArray:
        """``max_c |F_ic|`` per example (float64)."""
        x = self.x
        top = np.maximum(np.max(x, axis=1, initial=0), -np.min(x, axis=1, initial=0)).astype(np.float64)
        return np.maximum(top, 1.0) if self.ones else top

    def matvec(self, s: NDArray) -> NDArray:
        """``F @ s`` (shape (m,), plus the trailing axes of ``x``) for ``s`` of shape (n_cols,), without forming
        ``F``."""
        s = np.asarray(s)
        if self.x.ndim == 2:
            return self.x @ s[self.ones:] + s[:self.ones].sum()
        return np.tensordot(self.x, s[self.ones:], axes=([1], [0])) + s[:self.ones].sum()

    def abs_max(self) -> NDArray:
        """``max_i |F_ic|`` per column (float64)."""
        x = self.x
        return np.concatenate([np.ones(self.ones), np.maximum(np.max(x, axis=0), -np.min(x, axis=0))]
                              ).astype(np.float64)

    def row_squares(self) -> NDArray:
        """``sum_c F_ic^2`` per example (float64, ``(m,)`` plus the trailing axes of ``x``), without forming ``F``."""
        x = self.x
        rows = np.einsum("ij,ij->i", x, x) if x.ndim == 2 else np.einsum("ij...,ij...->i...", x, x)
        return np.asarray(rows, dtype=np.float64) + self.ones

    def sum_squares(self) -> NDArray:
        """``sum_i F_ic^2`` per column (float64)."""
        x = self.x
        return np.concatenate([np.full(self.ones, float(x.shape[0])), np.einsum("ij,ij->j", x, x)]
                              ).astype(np.float64)


class ColumnMaxima:
    """:meth:`ParamInputs.abs_max` of the inputs one check reads, computed once each: the step scales and the
    Taylor tables' remainder bounds read the same maxima, of arrays the check never writes (a new instance per
    check: nothing outlives it)."""

    def __init__(self) -> None:
        self._seen: list[tuple[NDArray, int, NDArray]] = []

    def of(self, F: ParamInputs) -> NDArray:
        """``F.abs_max()``, from the memo when the same array (by identity) with as many leading ones was
        seen."""
        for x, ones, values in self._seen:
            if x is F.x and ones == F.ones:
                return values
        values = F.abs_max()
        self._seen.append((F.x, F.ones, values))
        return values


@frozen(eq=False)
class SeriesChange:
    """The activation changes by the power series ``sum_{k=1..K} coeffs[k-1, b] tau^k`` in a scalar ``tau``
    of each example (truncated after ``K`` terms; there is no constant term).

    ``coeffs`` has shape ``(K, B, m, n)``; or ``(K, B, m)`` with either ``cols`` (shape ``(B,)``: batch item
    ``b`` changes only column ``cols[b]``) or ``v`` (shape ``(B, n)``: the change is rank one,
    ``coeffs[k, b][:, None] * v[b]``, what a Dense layer makes of a column series).
    """

    coeffs: NDArray
    cols: NDArray | None = None
    v: NDArray | None = None

    @property
    def batch(self) -> int:
        return self.coeffs.shape[1]


Change = Union[ColumnChange, ColumnsChange, RankOneChange, DenseChange]


def sigmoid_change(s: NDArray, s_sc: NDArray, delta: NDArray, overwrite: bool = False,
                   z: NDArray | None = None) -> NDArray:
    """``sigmoid(z + delta) - sigmoid(z)`` to full relative accuracy, from ``s = sigmoid(z)`` and
    ``s_sc = s (1 - s)`` (computed as ``sigmoid(z) sigmoid(-z)``).

    For ``|delta| <= 1`` the identity ``s (1 - s) expm1(delta) / (1 + s expm1(delta))``: the difference of two
    nearly equal sigmoids is never formed, and the denominator is at least ``1 - (1 - 1/e) = 0.37``.  For larger
    steps (which need ``z``) the difference of the two sigmoids on the side of 0 where they are small:
    ``sigmoid(-z) - sigmoid(-z - delta)`` when both arguments are positive, ``sigmoid(z + delta) - sigmoid(z)``
    otherwise; they then differ by a factor of at least ``e``, so nothing cancels.  (The identity alone is not
    enough there: for ``delta`` large and negative at a saturated unit its denominator is ``1 - s``.)
    Shapes broadcast against ``delta``; with ``overwrite=True`` the result is written into ``delta``.
    """
    big = None
    if z is not None:
        big = np.abs(delta) > 1
        if big.any():
            z0 = np.broadcast_to(z, delta.shape)[big]
            z1 = z0 + delta[big]
            pos = (z0 >= 0) & (z1 >= 0)
            far = np.where(pos, sigmoid(-z0) - sigmoid(-z1), sigmoid(z1) - sigmoid(z0))
        else:
            big = None
    e = np.expm1(delta, out=delta if overwrite else None)
    t = s * e
    t += 1
    e *= s_sc
    e /= t
    if big is not None:
        e[big] = far
    return e


def softplus_change(z: NDArray, s: NDArray, delta: NDArray) -> NDArray:
    """``softplus(z + delta) - softplus(z)`` to full relative accuracy, with ``s = sigmoid(z)``: the identity
    ``log1p(s expm1(delta))`` for ``|delta| <= 1`` (its argument stays above ``-0.64``), the difference of the
    two softplus values beyond (they then differ by at least ``log1p(...)`` of a quantity of order one)."""
    out = np.log1p(s * np.expm1(delta))
    big = np.abs(delta) > 1
    if big.any():
        z0 = np.broadcast_to(z, out.shape)[big]
        d = np.broadcast_to(delta, out.shape)[big]
        out[big] = softplus(z0 + d) - softplus(z0)
    return out


def loss_change(z: NDArray, s: NDArray, sc: NDArray, y: NDArray, delta: NDArray) -> NDArray:
    """Change of the sigmoid cross-entropy ``l(z) = y softplus(-z) + (1 - y) softplus(z)`` when the logit
    moves by ``delta``, elementwise: ``y [softplus(-z - delta) - softplus(-z)] + (1 - y) [softplus(z + delta)
    - softplus(z)]``, each part by :func:`softplus_change` (``sc = sigmoid(-z)``).  Written this way nothing
    cancels: ``softplus(z + delta) - softplus(z) - y delta`` would subtract two numbers near ``delta`` for a
    confident right prediction, whose loss hardly changes."""
    out = (1 - y) * softplus_change(z, s, delta)
    out += y * softplus_change(-z, sc, -delta)
    return out


def _series_shape(*arrays: Any) -> tuple[tuple[int, ...], np.dtype]:
    shape = np.broadcast_shapes(*(np.shape(a) for a in arrays))
    return shape, np.result_type(*arrays)


def _chain(jD: list[NDArray] | None, B: NDArray, k: int, out: NDArray, tmp: NDArray) -> None:
    """``out = (1/k) sum_{j=1..k} jD[j-1] B[k-j]``: coefficient ``k`` of ``y`` when ``y' = b delta'`` and
    ``jD[j-1] = j D_j``; with ``jD = None`` (``delta = tau``) it is ``B[k-1] / k``."""
    if jD is None:
        np.divide(B[k - 1], k, out=out)
        return
    np.multiply(jD[0], B[k - 1], out=out)
    for j in range(2, k + 1):
        np.multiply(jD[j - 1], B[k - j], out=tmp)
        out += tmp
    if k > 1:
        out /= k


def sigmoid_series(s: NDArray, sc: NDArray, D: NDArray | None, K: int | None = None) -> NDArray:
    """Taylor coefficients ``Y_1..Y_K`` (shape ``(K, ...)``) of ``sigmoid(z + delta(tau)) - sigmoid(z)``.

    ``delta(tau) = sum_k D[k-1] tau^k`` (``D`` of shape ``(K, ...)``; ``None`` means ``delta = tau``, with
    ``K`` given); ``s = sigmoid(z)`` and ``sc = sigmoid(-z)`` broadcast against ``D[0]``.

    Notes
    -----
    Taylor-mode recurrence from the ODE ``y' = y (1 - y) delta'``: with ``P = Y (1 - Y)`` as a series,
    ``k Y_k = sum_{j=1..k} j D_j P_{k-j}``, ``P_0 = s sc`` and
    ``P_k = (sc - s) Y_k - sum_{i=1..k-1} Y_i Y_{k-i}``.  The constant term cancels exactly (it is never
    formed), and ``1 - s`` is never computed by subtraction, so saturated units keep full relative accuracy.
    About ``K^2`` elementwise passes, all in place.
    """
    if D is not None:
        K = D.shape[0]
    assert K is not None
    shape, dtype = _series_shape(s, sc, *(() if D is None else (D[0],)))
    Y = np.empty((K,) + shape, dtype=dtype)
    _sigmoid_into(s, sc, _weighted(D), Y)
    return Y


def _weighted(D: NDArray | None) -> list[NDArray] | None:
    """``[j D_j for j = 1..K]`` (None for ``delta = tau``), the factors of :func:`_chain`."""
    return None if D is None else [D[0]] + [j * D[j - 1] for j in range(2, D.shape[0] + 1)]


def _sigmoid_into(s: NDArray, sc: NDArray, jD: list[NDArray] | None, Y: NDArray) -> None:
    """The recurrence of :func:`sigmoid_series`, written into ``Y`` (shape ``(K, ...)``)."""
    K, shape = Y.shape[0], Y.shape[1:]
    P = np.empty_like(Y)
    tmp = np.empty(shape, dtype=Y.dtype)
    np.multiply(s, sc, out=P[0])
    diff = sc - s
    for k in range(1, K + 1):
        _chain(jD, P, k, Y[k - 1], tmp)
        if k < K:
            pk = P[k]
            np.multiply(diff, Y[k - 1], out=pk)
            for i in range(1, k // 2 + 1):  # sum_{i=1..k-1} Y_i Y_(k-i), each pair once
                np.multiply(Y[i - 1], Y[k - i - 1], out=tmp)
                if 2 * i != k:
                    tmp *= 2
                pk -= tmp


def loss_series(s: NDArray, sc: NDArray, y: NDArray, D: NDArray | None, K: int | None = None) -> NDArray:
    """Taylor coefficients ``L_1..L_K`` of ``l(z + delta(tau)) - l(z)`` for the cross-entropy on logits
    ``l(z) = softplus(z) - y z``; arguments as in :func:`sigmoid_series`, ``y`` the targets.

    From ``l' = sigmoid - y``: ``k L_k = sum_{j=1..k} j D_j Q_{k-j}`` with ``Q_0 = s (1 - y) - y sc`` (no
    cancellation for 0/1 targets) and ``Q_i = Y_i``, the coefficients of ``sigmoid(z + delta)``.
    """
    if D is not None:
        K = D.shape[0]
    assert K is not None
    shape, dtype = _series_shape(s, sc, y, *(() if D is None else (D[0],)))
    jD = _weighted(D)
    Q = np.empty((K,) + shape, dtype=dtype)
    np.subtract(s * (1 - y), y * sc, out=Q[0])
    if K > 1:  # Y_1..Y_(K-1) need only the first K - 1 factors
        _sigmoid_into(s, sc, None if jD is None else jD[:K - 1], Q[1:])
    out = np.empty((K,) + shape, dtype=dtype)
    tmp = np.empty(shape, dtype=dtype)
    for k in range(1, K + 1):
        _chain(jD, Q, k, out[k - 1], tmp)
    return out


def rank_one_series(T: NDArray, change: SeriesChange) -> SeriesChange:
    """The series of an elementwise layer whose entries have the Taylor coefficients ``T`` (``(K, m, n)``,
    ``T[p - 1] = f^(p)(x) / p!``) for a rank-one change ``c(tau) v`` of its input: ``sum_p T_p v^p c^p``, a
    dense series ``(K, B, m, n)``."""
    K = change.coeffs.shape[0]
    assert change.v is not None and T.shape[0] == K
    powers = change.v[None, :, None, :] ** np.arange(1, K + 1)[:, None, None, None]
    return SeriesChange(compose_series(T[:, None] * powers, change.coeffs[..., None]))


def compose_series(phi: NDArray, u: NDArray) -> NDArray:
    """Taylor coefficients of ``sum_{n=1..K} phi[n-1] u(tau)^n`` where ``u(tau) = sum_k u[k-1] tau^k``.

    ``phi`` and ``u`` have shape ``(K, ...)`` and broadcast against each other (``u`` may be narrower: the
    powers of ``u`` are formed at its own shape); the result has the broadcast shape.  The powers start at
    ``tau^n``, so only their first ``K - n + 1`` coefficients are formed: about ``K^3 / 6`` passes over
    ``u`` and ``K (K + 1) / 2`` over the result.
    """
    K = u.shape[0]
    out = phi[0] * u
    power = u
    tmp_u = np.empty(u.shape[1:], dtype=np.result_type(u))
    tmp = np.empty(out.shape[1:], dtype=out.dtype)
    for n in range(2, K + 1):
        # power <- power * u, truncated at tau^K: coefficient of tau^k is sum_j u_j power_(k-j), k >= n
        new = np.zeros_like(u)
        for k in range(n, K + 1):
            for j in range(1, k - n + 2):
                np.multiply(u[j - 1], power[k - j - 1], out=tmp_u)
                new[k - 1] += tmp_u
        power = new
        for k in range(n, K + 1):
            np.multiply(phi[n - 1], power[k - 1], out=tmp)
            out[k - 1] += tmp
    return out


#: Half-width of the strip ``|Im z| <= pi/2`` in which ``|sigmoid(z)| <= 1`` and ``|sigmoid'(z)| <= 1/2``
#: (see :meth:`SigmoidRule.series_bound`): the domain of the bounds that certify series truncations.
STRIP = np.pi / 2


def strip_limit(b: NDArray, strip: float = STRIP) -> NDArray:
    """Largest ``rho`` per batch item for which changes bounded by ``rho b`` (``b`` of shape ``(B, n)``)
    stay within the strip ``|Im z| <= strip``: ``strip / max_l b[B, l]`` (infinite where ``b`` is 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return strip / np.max(b, axis=1, initial=0.0)
