"""Structured full checks of a :class:`~layerkit.Network`: evaluate only what a perturbation changes.

Perturbing entry ``(r, c)`` of a Dense layer's ``Theta`` by ``t`` adds ``t x1[:, c]`` to pre-activation
column ``r`` and leaves every activation before the layer unchanged.  The probe caches one forward pass and
has two exact ways to evaluate the cost change ``J(x + t e_rc) - J(x)`` from there.

**Taylor tables** (:class:`SeriesBlock`, used whenever the layers after the block support ``series``).
Each example's loss depends on its own ``tau_i = t x1[i, c]`` alone, so it is a univariate function whose
Taylor coefficients ``G_k[r, i]`` can be propagated through the downstream layers once per unit ``r``
(Taylor-mode recurrences: a column series, then rank one, then dense).  All entries of the block then come
from ``K`` matrix products ``T_k = G_k @ x1^k``, and any step of any stencil is
``sum_k t^k T_k[r, c]``.  The truncation is certified by Cauchy's estimate with bounds propagated for
complex ``tau`` (``series_bound``), and ``K`` is chosen so that it is ten times below the rounding of the
summed cost, the same criterion as below; entries it cannot certify go to the exact path.

**Exact per-perturbation path** (user layers with ``propagate``, or entries the tables cannot certify),
batches of perturbations carried as structured changes (see :mod:`layerkit.fast.changes`):

* ``Dense.param_change``: ``Theta[r, c] += s`` moves only output column ``r``, by ``s x1[:, c]``;
* ``Dense.propagate``: a column change becomes rank one, ``outer(delta, W[:, r])``, and stays rank one;
* ``Sigmoid.propagate``: ``sigmoid(z + d) - sigmoid(z)`` from an identity without cancellation.

The cost change is then computed from the changed terms alone:

* a single changed logit column ``k``: ``sum_i log1p(s_ik expm1(d_i)) - Y_ik d_i`` (an identity for
  ``softplus(z + d) - softplus(z)``; no subtraction of two large nearly equal costs);
* a rank-one or dense change of the logits: the Taylor expansion of the (fixed, smooth) cross-entropy in
  the logit change ``d``, with the fewest terms ``N <= 4`` whose remainder (at most ``|d|^(N+1) / (4 (N+1)!)``
  per term) summed over all terms is below ``0.1 eps`` times the summed cost, i.e. ten times below the
  rounding of the cost itself; when even four terms are not enough the exact identity is used
  (:class:`LossTerms`).  Layers are always evaluated exactly; only the final, built-in loss is expanded.

The penalty change is exact too: ``lambda/(2m) s (2 theta + s)`` on penalized entries.

Layers without any structured members (a user's own) get the generic path: their parameters are perturbed
in a private clone and the layers from ``L`` on are re-run on the cached input.  A layer's structured
members are used only when they are defined as far down its class hierarchy as its ``forward``
(:func:`~layerkit.nn.layers.provides`).

Work is split in batches bounded by ``MAX_BATCH_ELEMENTS`` per temporary (cache-sized, so memory stays a
small multiple of one forward pass, never ``P x m x K``); the exact path spreads its batches over a
two-thread pool (numpy releases the GIL in its kernels), the tables use the BLAS's threads.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from numpy.typing import NDArray

from attrs import define

from ..nn.activations import sigmoid
from .changes import (Change, ColumnChange, RankOneChange, SeriesChange, compose_series, loss_series,
                      softplus_change)
from ..errors import InputError
from ..nn.layers import provides, strip_limit
from ..nn.network import Network, Objective
from ..check.probes import CoordinateProbe, scaled

#: Largest dense temporary (in elements) a batch of perturbations may create: 256K (2 MB in float64), small
#: enough to stay in cache, which matters more than batch size once a batch holds a few perturbations.
MAX_BATCH_ELEMENTS = 1 << 18
#: Most Taylor terms of the series engine (:class:`SeriesBlock`); entries whose remainder is not certified
#: with this many are evaluated by the exact per-perturbation path.
MAX_SERIES_TERMS = 8
#: Bound on ``|d^n loss / dz^n|`` for n >= 2 (derivatives of the sigmoid: 0.25, 0.096, 0.125, 0.093).
_D5_BOUND = 0.25


def supports_structure(net: Network) -> bool:
    """Whether the structured probe applies: the network ends with a Sigmoid fused into the cost."""
    return bool(net._fused_sigmoid)


class LossTerms:
    """Changes of the summed cross-entropy ``sum_ik l(z_ik)``, ``l(z) = softplus(z) - y z``, at logits ``Z``.

    Each method returns the change per batch item for a structured change ``d`` of the logits, from the
    exact identity ``log1p(s expm1(d)) - y d`` or, when its remainder is certified ten times below the
    rounding of the summed cost, from the Taylor expansion of order ``N <= 4`` (see :meth:`taylor_order`).
    """

    def __init__(self, Z: NDArray, Y: NDArray) -> None:
        self.Z, self.Y = Z, Y
        self.S = sigmoid(Z)
        self.Sc = Sc = sigmoid(-Z)
        v = self.S * Sc
        # derivatives of l at Z, from l' = s - y: s (1 - s), s (1 - s)(1 - 2 s), s (1 - s)(1 - 6 s (1 - s))
        self.L = (self.S - Y, v, v * (Sc - self.S), v * (1 - 6 * self.S * Sc))
        self.absL1 = float(np.sum(np.abs(self.L[0])))
        # sum_ik l(z_ik) >= sum_ik softplus(-|z|): the summed cost, whose rounding is ~ eps times it
        self.cost_sum = float(np.sum(np.logaddexp(0, -np.abs(Z))))
        self.eps = float(np.finfo(Z.dtype).eps)
        self._coefficients: NDArray | None = None
        self.slope_bound = float(np.max(np.abs(1 - Y) + np.abs(Y), initial=1.0))

    def taylor_order(self, power_sum: Callable[[int], float]) -> int:
        """Fewest Taylor terms (1..4) whose remainder is ten times below the rounding of the summed cost;
        0 when even 4 terms are not enough (the exact identity is used then).

        ``power_sum(N)`` bounds ``sum_ik |d_ik|^(N+1)`` for every batch item.  With ``N`` terms the remainder
        of one logit is at most ``max|l^(N+1)| |d|^(N+1) / (N+1)!``, where ``max|l^(n)| <= 1/4`` for
        ``n >= 2`` (the sigmoid's derivatives), and the criterion is
        ``power_sum(N) / (4 (N+1)!) <= 0.1 eps sum|l|``.
        """
        budget = self.budget()
        for n in range(1, 5):
            if _D5_BOUND * power_sum(n) / math.factorial(n + 1) <= budget:
                return n
        return 0

    def budget(self) -> float:
        """Largest truncation error allowed in one cost change: ``0.1 eps max(sum l, 1)``, ten times below
        the rounding of the summed cost that a re-evaluation of the whole cost would carry."""
        return 1e-1 * self.eps * max(self.cost_sum, 1.0)

    def series(self, change: SeriesChange) -> NDArray:
        """Per-example Taylor coefficients ``(K, B, m)`` of the summed loss change for a series change of
        the logits (see :func:`~layerkit.fast.changes.loss_series`)."""
        if change.cols is not None:
            c = change.cols
            return loss_series(self.S.T[c], self.Sc.T[c], self.Y.T[c], change.coeffs)
        if change.v is not None:
            # rank one, outer(u(tau), v): sum_k l(Z_ik + u v_k) = sum_n phi_n u^n with
            # phi_n = sum_k l_n(Z_ik) v_k^n, l_n the loss's Taylor coefficients at Z (one product per n)
            K = change.coeffs.shape[0]
            Ln = self.coefficients(K)
            v = change.v
            phi = np.stack([v ** (n + 1) @ Ln[n].T for n in range(K)])
            return compose_series(phi, change.coeffs)
        return np.sum(loss_series(self.S, self.Sc, self.Y, change.coeffs), axis=-1)

    def coefficients(self, K: int) -> NDArray:
        """Taylor coefficients ``l^(n)(Z) / n!``, ``n = 1..K``, shape ``(K, m, n_out)``, memoized."""
        if self._coefficients is None or len(self._coefficients) < K:
            self._coefficients = loss_series(self.S, self.Sc, self.Y, None, K)
        return self._coefficients[:K]

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """``(M / rho, limit)``: for logit changes bounded by ``rho b`` with ``rho <= limit``, the summed
        loss change of one example is at most ``M = c rho sum_k b_k`` with ``c = max |1 - y| + |y|`` (1 for
        targets in [0, 1]), since ``l' = sigmoid(z) - y = (1 - y) sigmoid(z) - y sigmoid(-z)`` and
        ``|sigmoid| <= 1`` in the strip ``|Im z| <= pi/2`` (``Re e^(-z) >= 0`` there)."""
        return self.slope_bound * np.sum(b, axis=1), strip_limit(b)

    def column(self, k: int, d: NDArray) -> NDArray:
        """Only logit column ``k`` changes, by ``d`` of shape ``(B, m)``: exact."""
        return np.sum(softplus_change(self.S[:, k], d) - self.Y[:, k] * d, axis=1)

    def rank_one(self, u: NDArray, v: NDArray) -> NDArray:
        """The logits change by ``outer(u[b], v)``."""
        # remainder bound from sum_ik |u_bi v_k|^(N+1) <= m max|u|^(N+1) sum_k |v_k|^(N+1)
        umax = max(float(np.max(u, initial=0.0)), -float(np.min(u, initial=0.0)))
        av = np.abs(v)
        order = self.taylor_order(lambda n: u.shape[1] * umax ** (n + 1) * float(np.sum(av ** (n + 1))))
        if not order:
            return self.dense(u[:, :, None] * v[None, None, :])
        total = u @ (self.L[0] @ v)
        if order > 1:
            un = u * u
            fact = 1.0
            for n in range(2, order + 1):
                if n > 2:
                    un = un * u
                fact *= n
                total += un @ (self.L[n - 1] @ v**n) / fact
        return total

    def dense(self, d: NDArray, with_noise: bool = False) -> Any:
        """Any change ``d`` of shape ``(B, m, K)``; with ``with_noise`` also a bound on the rounding of each
        sum: ``4 eps sum|terms|`` (exact identity) or ``4 eps max|d| sum|l'|`` (expansion)."""
        dmax = max(float(np.max(d, initial=0.0)), -float(np.min(d, initial=0.0)))
        order = self.taylor_order(lambda n: d[0].size * dmax ** (n + 1))
        if order:
            coef = [self.L[n] / math.factorial(n + 1) for n in range(order)]
            poly = coef[-1] * d
            for c in reversed(coef[:-1]):
                poly += c
                poly *= d
            total = np.sum(poly, axis=(1, 2))
            if with_noise:
                return total, np.full(total.shape, 4 * self.eps * dmax * self.absL1)
            return total
        terms = softplus_change(self.S, d) - self.Y * d
        total = np.sum(terms, axis=(1, 2))
        if with_noise:
            return total, 4 * self.eps * np.sum(np.abs(terms), axis=(1, 2))
        return total


@define
class NetworkState:
    """What the structured probes need of a network at a point: a private twin bound to the point, its
    layers up to the logits, their activations (input first), the targets, the loss terms at the logits,
    ``m``, ``lambda`` and the penalized mask."""

    net: Network
    layers: list[Any]
    acts: list[NDArray]
    Y: NDArray
    loss: LossTerms
    m: int
    lambda_: float
    penalized: NDArray

    @classmethod
    def at(cls, obj: Objective, x0: NDArray) -> NetworkState:
        net = obj._twin(np.dtype(x0.dtype))
        net._params[...] = x0
        acts = obj.activations(x0)
        Y = obj.Y.astype(x0.dtype)
        return cls(net, net.layers[:-1], acts, Y, LossTerms(acts[-1], Y), acts[0].shape[0], obj.lambda_,
                   net.penalized_mask())


class SeriesBlock:
    """Taylor tables of a Dense-like block: ``J(x + t e_rc) - J(x) = sum_{k=1..K} t^k T_k[r, c] + R_K``.

    Perturbing entry ``(r, c)`` by ``t`` adds ``tau_i = t F[i, c]`` to pre-activation column ``r`` (``F`` from
    the layer's ``param_inputs``), and example ``i``'s loss then depends on its own ``tau_i`` alone:
    ``l_i(tau) - l_i(0) = sum_k G_k[r, i] tau^k``.  The per-example coefficients ``G`` come from propagating
    a series through the layers after the block (``series``: Taylor-mode recurrences, exact up to rounding),
    and then every entry of the block is covered by one ``(rows, m) x (m, cols)`` product per order::

        T_k = G_k @ F^k   (F^k elementwise)

    so a full check costs about ``K`` gradient evaluations instead of ``P`` cost evaluations, whatever the
    stencil: all steps of a method (Richardson's four, say) are read off the same tables.

    Remainder (certified): ``l_i - l_i(0)`` is analytic in ``tau``; ``series_bound`` propagates bounds for
    complex ``tau`` through the layers (in the strip ``|Im z| <= pi/2`` a sigmoid's slope is at most 1/2 and
    the loss's at most 1 for targets in [0, 1]; a Dense layer multiplies by ``|W|``), which gives a radius
    ``rho_r`` and ``|l_i(tau) - l_i(0)| <= M_r`` on ``|tau| <= rho_r``.
    Cauchy's estimate ``|G_k| <= M_r / rho_r^k`` then bounds the truncated tail::

        |R_K| <= M_r (|t| / rho_r)^(K+1) sum_i |F_ic|^(K+1) / (1 - |t| max_i |F_ic| / rho_r),

    with ``sum_i |F_ic|^(K+1) <= max_i |F_ic|^(K-1) sum_i F_ic^2``.

    ``K`` is the fewest terms (at most ``MAX_SERIES_TERMS``) that put ``R_K`` below the budget of
    :meth:`LossTerms.budget` for every entry; entries still above it are evaluated by the exact path.
    """

    def __init__(self, probe: NetworkProbe, i: int, p: str, shape: tuple[int, int]) -> None:
        self.probe, self.i = probe, i
        self.rows, self.cols = shape
        self.F = probe.layers[i].param_inputs(p, probe.acts[i])
        self.Fmax = self.F.abs_max()
        self.F2 = self.F.sum_squares()
        self.tables: NDArray | None = None
        self.rho, self.M = np.empty(self.rows), np.empty(self.rows)
        widest = max([probe.acts[k + 1].shape[1] for k in range(i, len(probe.layers))], default=1)
        batch = max(1, MAX_BATCH_ELEMENTS // widest)
        for lo in range(0, self.rows, batch):  # batches of units: (B, width) bounds, never (rows, rows)
            units = np.arange(lo, min(lo + batch, self.rows))
            b = np.zeros((len(units), self.rows))
            b[np.arange(len(units)), units] = 1  # unit r's pre-activation changes by tau: bound 1 there
            limit = np.full(len(units), np.inf)
            for layer in probe.layers[i + 1:]:
                b, lim = layer.series_bound(b)
                limit = np.minimum(limit, lim)
            m_per_rho, lim = probe.loss.series_bound(b)
            rho = np.minimum(limit, lim)
            reach = m_per_rho > 0  # a unit with no path to the cost changes nothing: remainder 0
            self.rho[units] = np.where(reach, rho, 1.0)
            self.M[units] = np.where(reach, m_per_rho * self.rho[units], 0.0)

    def remainder(self, K: int, T: NDArray) -> NDArray:
        """Bound on the truncation error of ``K`` terms at steps of magnitude ``T`` (rows, cols)."""
        C, q = self._tail(T)
        with np.errstate(over="ignore", invalid="ignore"):
            return C * q ** (K - 1)

    def _tail(self, T: NDArray) -> tuple[NDArray, NDArray]:
        """``(C, q)`` with ``|R_K| <= C q^(K-1)``: the bound of the class docstring, with
        ``ratio = T / rho`` and ``q = ratio max_i |F_ic|``, is ``M ratio^2 sum_i F_ic^2 / (1 - q)`` times
        ``q^(K-1)``.  ``C`` is infinite where ``q >= 1`` (outside the radius: nothing is certified)."""
        ratio = T / self.rho[:, None]
        q = ratio * self.Fmax[None, :]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            C = self.M[:, None] * ratio**2 * self.F2[None, :] / (1 - q)
        return np.where((q < 1) & ~np.isnan(C), C, np.inf), q

    def table(self, K: int) -> NDArray:
        """``T_1..T_K``, shape ``(K, rows, cols)`` (float64), computed once for the largest ``K`` asked."""
        if self.tables is None or len(self.tables) < K:
            G = self._coefficients(K)
            tables = np.empty((K, self.rows, self.cols))
            m = self.F.shape[0]
            width = max(1, MAX_BATCH_ELEMENTS // m)  # columns of F per pass: F^k stays cache-sized
            with np.errstate(over="ignore", invalid="ignore"):
                for c0 in range(0, self.cols, width):
                    Fc = self.F.columns(c0, min(c0 + width, self.cols), G.dtype)
                    Fk = Fc.copy()
                    for k in range(K):
                        if k:
                            Fk *= Fc
                        tables[k, :, c0:c0 + width] = G[k] @ Fk
            self.tables = tables
        return self.tables[:K]

    def _coefficients(self, K: int) -> NDArray:
        """``G``, shape ``(K, rows, m)``: per-example Taylor coefficients of the loss in ``tau``, for each
        unit ``r``, from a column series ``tau`` pushed through the layers after the block, in batches of
        units whose ``K`` coefficients of shape ``(B, m, width)`` hold about ``MAX_BATCH_ELEMENTS`` in all.
        The series stays one column wide through the next layer and rank one through the one after; only
        later layers' outputs are materialized, so only their widths count."""
        probe, i = self.probe, self.i
        m = probe.m
        downstream = probe.layers[i + 1:]
        widest = max([probe.acts[k + 1].shape[1] for k in range(i + 3, len(probe.layers))], default=1)
        batch = max(1, MAX_BATCH_ELEMENTS // (m * widest * K))
        G = np.empty((K, self.rows, m), dtype=probe.Z.dtype)
        for lo in range(0, self.rows, batch):
            units = np.arange(lo, min(lo + batch, self.rows))
            coeffs = np.zeros((K, len(units), m), dtype=probe.Z.dtype)
            coeffs[0] = 1  # the pre-activation of each unit changes by tau itself
            change = SeriesChange(coeffs, units)
            for k, layer in enumerate(downstream, start=i + 1):
                change = layer.series(probe.acts[k], probe.acts[k + 1], change)
            G[:, lo:lo + len(units)] = probe.loss.series(change)
        return G

    def evaluate(self, steps: NDArray, budget: float, out: NDArray) -> NDArray:
        """Write the summed data-term changes for steps ``(S, rows * cols)`` into ``out`` (same shape, float64)
        and return which entries' remainder is certified below ``budget`` (the others are to be replaced)."""
        S = steps.shape[0]
        t = np.asarray(steps, dtype=np.float64).reshape(S, self.rows, self.cols)
        T = np.max(np.abs(t), axis=0)
        C, q = self._tail(T)  # independent of K: the loop only raises q to a power
        with np.errstate(over="ignore", invalid="ignore"):
            for K in range(1, MAX_SERIES_TERMS + 1):
                ok = C * q ** (K - 1) <= budget
                if ok.all():
                    break
        if not ok.any():  # nothing to read off the tables (huge steps): leave it all to the exact path
            return ok.reshape(-1)
        tables = self.table(K)
        acc = out.view()
        acc.shape = (S, self.rows, self.cols)  # a view (never a copy): out's rows are contiguous
        with np.errstate(over="ignore", invalid="ignore"):
            np.multiply(tables[K - 1], t, out=acc)
            for k in range(K - 2, -1, -1):
                acc += tables[k]
                acc *= t
        return ok.reshape(-1)


class NetworkProbe:
    """A :class:`~layerkit.check.probes.Probe` over all coordinates of a network's regularized cost."""

    def __init__(self, obj: Objective, x0: NDArray, f0: float, workers: int | None = None,
                 axis_scale: NDArray | None = None) -> None:
        self.obj = obj
        self.axis_scale = axis_scale
        self.x = np.array(x0, copy=True)
        self.f0 = f0
        self.dtype = self.x.dtype
        self.real_dtype = self.dtype
        self.n_axes = self.x.size
        self.n_evals = 0
        self.axes = np.arange(self.x.size)
        self.workers = workers or min(2, os.cpu_count() or 1)
        state = NetworkState.at(obj, self.x)
        self.net, self.layers, self.acts, self.Y = state.net, state.layers, state.acts, state.Y
        self.loss, self.m, self.lambda_, self.penalized = state.loss, state.m, state.lambda_, state.penalized
        self.Z, self.S = state.acts[-1], state.loss.S
        self._series: dict[tuple[int, str], SeriesBlock | None] = {}

    # ------------------------------------------------------------------ probe protocol
    def scale(self) -> NDArray:
        return scaled(np.abs(self.x), self.axis_scale).astype(self.real_dtype)

    def snap(self, h: NDArray) -> NDArray:
        return ((self.x + h.astype(self.dtype)) - self.x).astype(self.dtype)

    def imag(self, h: NDArray) -> NDArray:
        raise InputError("method", "a real finite-difference method for the structured probe", "complex-step")

    def delta(self, steps: NDArray) -> NDArray:
        steps = np.atleast_2d(np.asarray(steps, dtype=self.dtype))
        out = np.empty(steps.shape, dtype=np.float64)
        tasks = []
        for i, p, block in self.net._names:
            b = self.net.layout[block]
            rest = None
            series = self._series_block(i, p, b)
            if series is not None:  # every perturbation of the block from its Taylor tables
                ok = series.evaluate(steps[:, b.start:b.stop], self.loss.budget(), out[:, b.start:b.stop])
                out[:, b.start:b.stop] /= self.m
                if ok.all():
                    continue
                rest = np.flatnonzero(~ok)  # the remainder is not certified: evaluate these exactly
            for s in range(steps.shape[0]):
                tasks += self._block_tasks(i, p, b, steps[s], out[s], rest)
        if self.workers > 1 and len(tasks) > 1 and self.Z.shape[0] * self.x.size > 1 << 20:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(lambda t: t(), tasks))
        else:
            for t in tasks:
                t()
        self.n_evals += steps.size
        # the exact penalty change on penalized entries
        if self.lambda_:
            pen = self.penalized
            th2 = 2 * self.x[pen].astype(np.float64)
            for s in range(steps.shape[0]):  # a row at a time: temporaries of P entries, not S x P
                sp = steps[s, pen].astype(np.float64)
                out[s, pen] += (self.lambda_ / (2 * self.m)) * sp * (th2 + sp)
        return out

    # ------------------------------------------------------------------ work items
    def _series_block(self, i: int, p: str, b: Any) -> SeriesBlock | None:
        """The Taylor tables of a block, when its layer and every layer after it support series."""
        if (i, p) not in self._series:
            layer = self.layers[i] if i < len(self.layers) else None
            ok = (MAX_SERIES_TERMS > 0 and provides(layer, "param_inputs") and len(b.shape) == 2
                  and all(provides(d, "series", "series_bound") for d in self.layers[i + 1:]))
            self._series[i, p] = SeriesBlock(self, i, p, b.shape) if ok else None
        return self._series[i, p]

    def _block_tasks(self, i: int, p: str, b: Any, steps: NDArray, out: NDArray,
                     rest: NDArray | None = None) -> list[Callable[[], None]]:
        """Work items for the entries of a block (all, or the flat positions ``rest`` within it)."""
        layer = self.layers[i] if i < len(self.layers) else None
        downstream = self.layers[i + 1:]
        structured = (provides(layer, "param_change") and len(b.shape) == 2
                      and all(provides(d, "propagate") for d in downstream))
        if not structured:
            return [lambda: self._generic_block(i, p, b, steps, out, rest)]
        rows, cols = b.shape
        # Cache blocking: a task covers the columns of one row whose (B, m) temporaries fit in
        # MAX_BATCH_ELEMENTS, so that the elementwise passes run from cache rather than memory.
        width = max(1, min(cols, MAX_BATCH_ELEMENTS // self.m))

        def task(r: int, idx: NDArray) -> Callable[[], None]:
            def run() -> None:
                flat = b.start + r * cols + idx
                change = layer.param_change(p, r, idx, steps[flat], self.acts[i])
                out[flat] = self._finish(change, i + 1) / self.m
            return run

        if rest is None:
            per_row = [(r, np.arange(cols)) for r in range(rows)]
        else:
            per_row = [(r, rest[rest // cols == r] % cols) for r in np.unique(rest // cols)]
        return [task(int(r), idx[lo:lo + width]) for r, idx in per_row for lo in range(0, len(idx), width)]

    def _finish(self, change: Change, start: int) -> NDArray:
        """Summed data-term change for a batch ``change`` of the output of layer ``start - 1``.

        A batch is split just before a layer whose output would be a dense ``(B, m, width)`` temporary larger
        than ``MAX_BATCH_ELEMENTS``; column changes stay ``(B, m)`` and are never split.
        """
        m = self.m
        for k in range(start, len(self.layers)):
            width = self.acts[k + 1].shape[1]
            B = change.batch
            if not isinstance(change, ColumnChange) and B > 1 and B * m * width > MAX_BATCH_ELEMENTS:
                chunk = max(1, MAX_BATCH_ELEMENTS // (m * width))
                return np.concatenate([self._finish(change.take(lo, min(lo + chunk, B)), k)
                                       for lo in range(0, B, chunk)])
            change = self.layers[k].propagate(self.acts[k], self.acts[k + 1], change)
        return self._loss_change(change)

    def _loss_change(self, change: Change) -> NDArray:
        """``sum_ik [l(z + D) - l(z)]`` per batch item, for a change ``D`` of the logits."""
        if isinstance(change, ColumnChange):
            return self.loss.column(change.col, change.delta)
        if isinstance(change, RankOneChange):
            return self.loss.rank_one(change.u, change.v)
        return self.loss.dense(change.dense(self.Z.shape))

    def _generic_block(self, i: int, p: str, b: Any, steps: NDArray, out: NDArray,
                       rest: NDArray | None = None) -> None:
        """Perturb each entry of a block in a private clone and re-run the layers from ``i`` on."""
        twin = self.net.clone()
        layers = twin.layers[:-1]
        flat = twin._params
        for j in (range(b.start, b.stop) if rest is None else b.start + rest):
            old = flat[j]
            flat[j] = old + steps[j]
            try:
                a = self.acts[i]
                for layer in layers[i:]:
                    a = layer.forward(a)
            finally:
                flat[j] = old
            d = a - self.Z
            out[j] = float(np.sum(softplus_change(self.S, d) - self.Y * d)) / self.m


def structured_probe_factory(required: bool = False) -> Callable[[Any, float], Any]:
    """A ``probe_factory`` for :func:`layerkit.check.run_check`: the structured probe when the network allows
    it, else (unless ``required``) the plain coordinate probe."""

    def make(target: Any, f0: float) -> Any:
        net = target.network
        if net is not None and supports_structure(net):
            return NetworkProbe(target.objective, target.x0, f0, axis_scale=target.axis_scale())
        if required:
            raise InputError("engine", "a network whose last layer is a Sigmoid for engine='structured'",
                             repr(net))
        return CoordinateProbe(target.cost, target.x0, f0, axis_scale=target.axis_scale())

    return make
