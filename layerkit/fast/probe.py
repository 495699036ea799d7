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
  (:mod:`layerkit.fast.loss_rules`; the softmax cross-entropy and the squared error have exact identities).
  Layers are always evaluated exactly; only the final, built-in loss is expanded.

The penalty change is exact too: ``lambda/(2m) s (2 theta + s)`` on penalized entries.

Layers without any structured members (a user's own) get the generic path: their parameters are perturbed
in a private clone and the layers from ``L`` on are re-run on the cached input.  A layer's structured
members are used only when they are defined as far down its class hierarchy as its ``forward``
(see :mod:`layerkit.fast.rules`).

Work is split in batches bounded by ``MAX_BATCH_ELEMENTS`` per temporary (cache-sized, so memory stays a
small multiple of one forward pass, never ``P x m x K``); the exact path spreads its batches over a
two-thread pool (numpy releases the GIL in its kernels), the tables use the BLAS's threads.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from attrs import define, field, frozen
from numpy.typing import NDArray

from ..errors import InputError
from ..nn.losses import L2
from ..nn.network import Binding, Network, evaluation_overrides
from ..numerics import AGREEMENT, NOISE_C
from .changes import Change, ColumnChange, RankOneChange, SeriesChange
from .confirm import RuleMismatch, Rules
from .loss_rules import has_loss_rule, loss_rule
from .rules import BoundRule, rule_for

#: Largest dense temporary (in elements) a batch of perturbations may create: 256K (2 MB in float64), small
#: enough to stay in cache, which matters more than batch size once a batch holds a few perturbations.
MAX_BATCH_ELEMENTS = 1 << 18
#: Most Taylor terms of the series engine (:class:`SeriesBlock`); entries whose remainder is not certified
#: with this many are evaluated by the exact per-perturbation path.
MAX_SERIES_TERMS = 8
#: Fewest Taylor tables computed at once (central differences on the course network need 3).
MIN_TABLES = 3


def scaled(magnitude: NDArray, axis_scale: NDArray | None) -> NDArray:
    """The length scale of each axis that automatic steps are relative to: ``max(1, |x_j|) / s_j``."""
    out = np.maximum(1.0, magnitude)
    return out if axis_scale is None else out / axis_scale


@define
class NetworkState:
    """What the engine needs of a network at a point, read from the caller's network itself: its layers up
    to the logits, their activations (input first), the targets, the loss terms at the logits, ``m``,
    ``lambda``, the penalized mask and the bindings.  Built while the caller holds
    :meth:`~layerkit.Network.preserved` with the parameters at the point."""

    net: Network
    layers: list[Any]
    acts: list[NDArray]
    Y: NDArray
    loss: Any
    m: int
    lambda_: float
    penalized: NDArray
    bindings: tuple[Binding, ...]

    @classmethod
    def at(cls, net: Network, X: NDArray, Y: NDArray, lambda_: float,
           acts: list[NDArray] | None = None) -> NetworkState:
        """``acts``: the activations at the current parameters, when already recorded."""
        acts = net.activations(X) if acts is None else acts
        Y = Y.astype(X.dtype)
        return cls(net, list(net.body), acts, Y, loss_rule(net.loss, acts[-1], Y), X.shape[0], lambda_,
                   net.penalized_mask(), net.bindings)


def layer_magnitude(rule: BoundRule, x: NDArray, y: NDArray, A: NDArray) -> NDArray | None:
    """The magnitudes below ``layer`` given those above it, ``A`` (m, width of its output).  layerkit's own
    layers say it themselves (``magnitude``); for any other layer without parameters it is measured:
    ``|backward(A)|`` after a ``forward`` of the same input -- exact for an elementwise layer, a lower
    bound otherwise (a rounding bound too small costs a second look, one too large would hide a wrong
    gradient, so a layer's own claim is not taken).  None for another layer with parameters (its backward
    would write its gradients)."""
    if rule.trusted and rule.has("magnitude"):
        return np.asarray(rule.magnitude(x, y, A), dtype=np.float64)
    layer = rule.layer
    if getattr(layer, "param_shapes", None):
        return None
    try:
        with np.errstate(all="ignore"):
            layer.forward(x)
            out = np.abs(np.asarray(layer.backward(A.astype(x.dtype)), dtype=np.float64))
    except Exception:  # noqa: BLE001 - no magnitude, no rounding allowance: never a looser tolerance
        return None
    return out if out.shape == x.shape and np.all(np.isfinite(out)) else None


def magnitudes(state: NetworkState) -> list[NDArray | None]:
    """Backprop run on magnitudes: for each layer ``k``, ``A_k`` (m, width of its output), the scale of the
    terms that make up ``dL/d output`` -- ``(1 - y) s + y sigmoid(-z)`` at the logits, the two terms a
    Network's backprop forms, then each layer's magnitude on the way down (:func:`layer_magnitude`); None
    from the first layer without one on.  A gradient
    entry ``(r, c)`` of a Dense-like block is a sum of ``m`` products ``A_ir F_ic / m``, which rounds to about
    ``eps sqrt(sum_i (A_ir F_ic)^2) / m`` (rounding errors add like random signs): its rounding scale
    ``R_j`` (see :meth:`SeriesBlock.table` and :meth:`NetworkProbe.rounding`)."""
    out: list[NDArray | None] = [None] * len(state.layers)
    A = state.loss.magnitude()
    for k in range(len(state.layers) - 1, -1, -1):
        out[k] = A
        if k == 0:
            break
        A = layer_magnitude(rule_for(state.layers[k]), state.acts[k], state.acts[k + 1], A)
        if A is None:
            break
    return out


def rounding_scales(state: NetworkState) -> NDArray:
    """``R_j`` for every entry (see :func:`magnitudes`): ``sqrt(sum_i (A_ir F_ic)^2) / m`` for entry ``(r, c)``
    of a Dense-like block; NaN where a layer on the way down has no ``magnitude`` member.  A backprop
    gradient entry rounds to about ``eps R_j``."""
    R = np.full(state.net.size, np.nan)
    A = magnitudes(state)
    for b in state.bindings:
        block = state.net.layout[b.block]
        rule = rule_for(state.layers[b.index]) if b.index < len(state.layers) else None
        Ak = A[b.index] if b.index < len(A) else None
        if Ak is not None and rule is not None and rule.has("param_inputs") and len(block.shape) == 2:
            F = rule.param_inputs(b.param, state.acts[b.index])
            cols = F.columns(0, F.shape[1], np.float64)
            R[block.slice] = (np.sqrt((Ak * Ak).T @ (cols * cols)) / state.m).ravel()
    return R


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
    the loss rule's ``budget()`` for every entry; entries still above it are evaluated by the exact path.
    """

    def __init__(self, probe: NetworkProbe, i: int, p: str, shape: tuple[int, int]) -> None:
        self.probe, self.i = probe, i
        self.rows, self.cols = shape
        self.F = probe.rules.rule(i).param_inputs(p, probe.acts[i])
        self.Fmax = self.F.abs_max()
        self.F2 = self.F.sum_squares()
        self.tables: NDArray | None = None
        self.R: NDArray | None = None  # rounding scale of each entry, computed with the tables
        A = probe.magnitude[i]
        self.A2T = None if A is None else np.ascontiguousarray((A * A).T)
        self.confirmed = False  # the tables agreed with the exact path at the check's steps
        self.rho, self.M = np.empty(self.rows), np.empty(self.rows)
        widest = max([probe.acts[k + 1].shape[1] for k in range(i, len(probe.layers))], default=1)
        batch = max(1, MAX_BATCH_ELEMENTS // widest)
        for lo in range(0, self.rows, batch):  # batches of units: (B, width) bounds, never (rows, rows)
            units = np.arange(lo, min(lo + batch, self.rows))
            b = np.zeros((len(units), self.rows))
            b[np.arange(len(units)), units] = 1  # unit r's pre-activation changes by tau: bound 1 there
            limit = np.full(len(units), np.inf)
            for k in range(i + 1, len(probe.layers)):
                b, lim = probe.rules.rule(k).series_bound(b)
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

    def _tail(self, T: NDArray, rows: Any = slice(None), cols: Any = slice(None)) -> tuple[NDArray, NDArray]:
        """``(C, q)`` with ``|R_K| <= C q^(K-1)``: the bound of the class docstring, with
        ``ratio = T / rho`` and ``q = ratio max_i |F_ic|``, is ``M ratio^2 sum_i F_ic^2 / (1 - q)`` times
        ``q^(K-1)``.  ``C`` is infinite where ``q >= 1`` (outside the radius: nothing is certified).  ``T`` is
        ``(rows, cols)`` for the whole block, or ``(k,)`` with ``rows`` and ``cols`` index arrays of entries."""
        if isinstance(rows, slice):
            rho, M, Fmax, F2 = self.rho[:, None], self.M[:, None], self.Fmax[None, :], self.F2[None, :]
        else:
            rho, M, Fmax, F2 = self.rho[rows], self.M[rows], self.Fmax[cols], self.F2[cols]
        ratio = T / rho
        q = ratio * Fmax
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            C = M * ratio**2 * F2 / (1 - q)
        return np.where((q < 1) & ~np.isnan(C), C, np.inf), q

    def table(self, K: int) -> NDArray:
        """``T_1..T_K``, shape ``(K, rows, cols)`` (float64), computed once for the largest ``K`` asked (at
        least :data:`MIN_TABLES`: a first small request, such as a verification's, is not computed twice)."""
        if self.tables is None or len(self.tables) < K:
            K = max(K, MIN_TABLES)
            G = self._coefficients(K)
            tables = np.empty((K, self.rows, self.cols))
            m = self.F.shape[0]
            width = max(1, MAX_BATCH_ELEMENTS // m)  # columns of F per pass: F^k stays cache-sized
            R = np.full((self.rows, self.cols), np.nan) if self.R is None and self.A2T is not None else None
            with np.errstate(over="ignore", invalid="ignore"):
                for c0 in range(0, self.cols, width):
                    Fc = self.F.columns(c0, min(c0 + width, self.cols), G.dtype)
                    Fk = Fc.copy()
                    for k in range(K):
                        if k:
                            Fk *= Fc
                        tables[k, :, c0:c0 + width] = G[k] @ Fk
                        if k == 1 and R is not None:  # F^2 is at hand: the rounding scale costs one product
                            R[:, c0:c0 + width] = self.A2T @ Fk
                    if K == 1 and R is not None:
                        R[:, c0:c0 + width] = self.A2T @ (Fc * Fc)
            if R is not None:
                self.R = np.sqrt(R.astype(np.float64)).ravel() / self.probe.m
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
        widest = max([probe.acts[k + 1].shape[1] for k in range(i + 3, len(probe.layers))], default=1)
        batch = max(1, MAX_BATCH_ELEMENTS // (m * widest * K))
        G = np.empty((K, self.rows, m), dtype=probe.Z.dtype)
        for lo in range(0, self.rows, batch):
            units = np.arange(lo, min(lo + batch, self.rows))
            coeffs = np.zeros((K, len(units), m), dtype=probe.Z.dtype)
            coeffs[0] = 1  # the pre-activation of each unit changes by tau itself
            change = SeriesChange(coeffs, units)
            for k in range(i + 1, len(probe.layers)):
                change = probe.rules.rule(k).series(probe.acts[k], probe.acts[k + 1], change)
            G[:, lo:lo + len(units)] = probe.loss.series(change)
        return G

    def _terms(self, C: NDArray, q: NDArray, budget: float) -> tuple[int, NDArray]:
        """The fewest terms ``K`` certifying every entry, or ``MAX_SERIES_TERMS`` and which are certified."""
        with np.errstate(over="ignore", invalid="ignore"):
            for K in range(1, MAX_SERIES_TERMS + 1):
                ok = C * q ** (K - 1) <= budget
                if ok.all():
                    break
        return K, ok

    def evaluate(self, steps: NDArray, budget: float, out: NDArray) -> NDArray:
        """Write the summed data-term changes for steps ``(S, rows * cols)`` into ``out`` (same shape, float64)
        and return which entries' remainder is certified below ``budget`` (the others are to be replaced)."""
        S = steps.shape[0]
        t = np.asarray(steps, dtype=np.float64).reshape(S, self.rows, self.cols)
        C, q = self._tail(np.max(np.abs(t), axis=0))  # independent of K: the loop only raises q to a power
        K, ok = self._terms(C, q, budget)
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

    def evaluate_entries(self, steps: NDArray, local: NDArray, budget: float) -> tuple[NDArray, NDArray]:
        """As :meth:`evaluate` for the entries ``local`` (flat positions in the block) only: ``(values (S, k),
        certified (k,))``."""
        rows, cols = local // self.cols, local % self.cols
        t = np.asarray(steps, dtype=np.float64)
        C, q = self._tail(np.max(np.abs(t), axis=0), rows, cols)
        K, ok = self._terms(C, q, budget)
        values = np.zeros(t.shape)
        if not ok.any():
            return values, ok
        T = self.table(K)[:, rows, cols]
        with np.errstate(over="ignore", invalid="ignore"):
            values[...] = T[K - 1] * t
            for k in range(K - 2, -1, -1):
                values += T[k]
                values *= t
        return values, ok


@frozen
class BlockCheck:
    """One comparison of the engine's prediction with the network's own cost along a random direction in a
    block: ``|predicted - real| <= threshold`` (``threshold`` from the noise of both)."""

    block: str
    step: float
    predicted: float
    real: float
    threshold: float
    direction: NDArray | None = field(default=None, eq=False, repr=False)
    #: How the change was made, for notes.
    what: str = "along a random direction"

    @property
    def difference(self) -> float:
        return abs(self.predicted - self.real)

    @property
    def agrees(self) -> bool:
        return bool(np.isfinite(self.difference) and self.difference <= self.threshold)




class NetworkProbe:
    """A :class:`~layerkit.check.probes.Probe` over the coordinates of a network's regularized cost, computing
    each cost change from the perturbation's effect alone (module docstring).

    Built from a :class:`NetworkState` of the caller's own network; its generic path perturbs that network's
    buffer in place and restores every entry (the caller holds :meth:`~layerkit.Network.preserved`).
    ``noise(steps)`` bounds each change's rounding: ``4 eps |t| R_j`` (see :func:`magnitudes`) for the
    table and exact paths, plus the cancellation ``4 eps sum |l'(z)| |z| / m`` of the generic path.
    """

    cheap = True
    noise_excess = 1.0

    def __init__(self, state: NetworkState, x0: NDArray, f0: float, workers: int | None = None,
                 axis_scale: NDArray | None = None) -> None:
        self.state = state
        self.axis_scale = axis_scale
        self.x = np.array(x0, copy=True)
        self.f0 = f0
        self.dtype = self.x.dtype
        self.real_dtype = self.dtype
        self.n_axes = self.x.size
        self.n_evals = 0
        self.axes = np.arange(self.x.size)
        self.workers = workers or min(2, os.cpu_count() or 1)
        self.net, self.layers, self.acts, self.Y = state.net, state.layers, state.acts, state.Y
        self.loss, self.m, self.lambda_, self.penalized = state.loss, state.m, state.lambda_, state.penalized
        self.Z = state.acts[-1]
        self.eps = float(np.finfo(self.dtype).eps)
        self.magnitude = magnitudes(state)
        self.R = np.full(self.x.size, np.nan)
        self._rounded: set[str] = set()
        # the generic path differences whole re-run outputs: d = a - Z carries eps |Z| per logit
        self.generic_noise = NOISE_C * self.eps * self.loss.slope_scale() / self.m
        self._series: dict[tuple[int, str], SeriesBlock | None] = {}
        self._cancel: dict[Any, NDArray] = {}
        self._noise: tuple[NDArray, NDArray] | None = None
        self.rules = Rules(self.layers, self.acts, state.bindings, self.net.params, self.net.layout)
        self._notes: list[str] = []

    @property
    def notes(self) -> list[str]:
        """What the engine refused to use, and why."""
        return self.rules.notes + self._notes

    # ------------------------------------------------------------------ probe protocol
    def scale(self) -> NDArray:
        return scaled(np.abs(self.x), self.axis_scale).astype(self.real_dtype)

    def snap(self, h: NDArray) -> NDArray:
        return ((self.x + h.astype(self.dtype)) - self.x).astype(self.dtype)

    def imag(self, h: NDArray) -> NDArray:
        raise InputError("method", "a real finite-difference method for the structured probe", "complex-step")

    def subset(self, axes: Any) -> _Subset:
        """The probe restricted to the coordinates ``axes``."""
        return _Subset(self, np.asarray(axes, dtype=np.int64))

    def noise(self, steps: NDArray, axes: NDArray | None = None) -> NDArray:
        cached = self._noise
        if cached is not None and cached[0] is steps:
            return cached[1]
        self.delta(steps, axes)
        assert self._noise is not None
        return self._noise[1]

    def delta(self, steps: NDArray, axes: NDArray | None = None) -> NDArray:
        """``J(x + steps[s, k] e_{axes[k]}) - J(x)`` for all coordinates (``axes=None``) or the given ones
        (NaN or inf where a change overflows: huge steps).  A user's rule that disagrees with its forward on
        a change made here is dropped (:class:`~layerkit.fast.confirm.RuleMismatch`) and the changes are
        computed again without it."""
        with np.errstate(all="ignore"):
            while True:
                try:
                    return self._delta(steps, axes)
                except RuleMismatch as exc:
                    self.rules.refuse(exc)
                    self._series = {}  # tables are built and confirmed again, against the path without the rule

    def _delta(self, steps: NDArray, axes: NDArray | None) -> NDArray:
        given = steps
        steps = np.atleast_2d(np.asarray(steps, dtype=self.dtype))
        S = steps.shape[0]
        positions = self.axes if axes is None else np.asarray(axes, dtype=np.int64)
        out = np.empty((S, positions.size), dtype=np.float64)
        noise = np.empty((S, positions.size), dtype=np.float64)
        exact_jobs = []
        for b in self.state.bindings:
            block = self.net.layout[b.block]
            if axes is None:
                cols_out = np.arange(block.start, block.stop)
            else:
                cols_out = np.flatnonzero((positions >= block.start) & (positions < block.stop))
                if not cols_out.size:
                    continue
            local = positions[cols_out] - block.start
            st = steps[:, cols_out]
            series = self._series_block(b.index, b.param, block)
            rest = local
            if series is not None:
                if axes is None:
                    ok = series.evaluate(st, self.loss.budget(), out[:, block.start:block.stop])
                else:
                    vals, ok = series.evaluate_entries(st, local, self.loss.budget())
                    out[:, cols_out] = vals
                out[:, cols_out] /= self.m
                if ok.all():
                    rest = local[:0]
                else:
                    rest = local[~ok]
                if not self._tables_agree(series, b, block, st[:, ok], local[ok], out[:, cols_out[ok]]):
                    rest = local
            if rest.size:
                where = cols_out if rest.size == local.size else cols_out[np.isin(local, rest)]
                exact_jobs.append((b, block, rest, steps[:, where], where))
            R = self.rounding(b, block)[local]
            noise[:, cols_out] = NOISE_C * self.eps * np.abs(st.astype(np.float64)) * np.nan_to_num(R, nan=0.0)
            if rest.size and self._structured(b.index, block):
                noise[:, cols_out] += self.cancellation(b, block)[local]
        # the generic path first (it writes into the network's buffer), then the structured one (threads)
        tasks = []
        for b, block, rest, st, where in exact_jobs:
            if self._structured(b.index, block):
                tasks += self._exact_tasks(b, block, rest, st, out, where)
            else:
                out[:, where] = self._generic(b, block, rest, st)
                noise[:, where] += self.generic_noise
        if self.workers > 1 and len(tasks) > 1 and self.Z.shape[0] * self.x.size > 1 << 20:
            with ThreadPoolExecutor(self.workers) as pool:
                list(pool.map(lambda t: t(), tasks))
        else:
            for t in tasks:
                t()
        self.n_evals += steps.size
        if self.lambda_:
            pen = self.penalized[positions]
            th = self.x[positions][pen].astype(np.float64)
            for s in range(S):  # a row at a time: temporaries of P entries, not S x P
                out[s, pen] += L2.change(self.lambda_, self.m, th, steps[s, pen].astype(np.float64))
        self._noise = (given, noise)
        return out

    def cancellation(self, b: Binding, block: Any) -> NDArray:
        """Rounding of the exact path's changes through layers whose rule subtracts two outputs
        (``forward(x + d) - forward(x)``, see :attr:`~layerkit.fast.rules.BoundRule.cancels`), per entry of the
        block, in units of the data term (divided by ``m``): each changed output carries about ``eps (|y| +
        |x f'(x)|)``, weighted by the magnitude of ``dL/dy`` there (:func:`magnitudes`), and these roundings
        add like random signs over the examples (the model of :func:`magnitudes`), times ``NOISE_C``.  A
        column change (the layer right after a Dense-like block) moves only its unit ``r``; later layers move
        every unit.
        The generic path's bound where a magnitude is unknown."""
        key = ("cancel", b.block)
        cached = self._cancel.get(key)
        if cached is not None:
            return cached
        out = np.zeros(block.size)
        for k in range(b.index + 1, len(self.layers)):
            if not self.rules.rule(k).cancels:
                continue
            A, below = self.magnitude[k], self.magnitude[k - 1]
            if A is None or below is None:
                out += self.generic_noise
                continue
            x, y = self.acts[k], self.acts[k + 1]
            out_terms = A * np.abs(y.astype(np.float64))
            in_terms = below * np.abs(x.astype(np.float64))
            columnwise = out_terms.shape == in_terms.shape and self.rules.rule(k).columnwise(x, y)
            if columnwise:  # an elementwise layer: a column change stays one, unit r's roundings meet
                out_terms = out_terms + in_terms
                per_unit = (out_terms * out_terms).sum(axis=0)
            else:
                per_unit = np.full(1, (out_terms**2).sum() + (in_terms**2).sum())
            if columnwise and k == b.index + 1 and len(block.shape) == 2 and per_unit.size == block.shape[0]:
                out += NOISE_C * self.eps * np.repeat(np.sqrt(per_unit), block.shape[1]) / self.m
            else:
                out += NOISE_C * self.eps * float(np.sqrt(per_unit.sum())) / self.m
        self._cancel[key] = out
        return out

    def rounding(self, b: Binding, block: Any) -> NDArray:
        """The rounding scale ``R_j`` of the block's entries (see :func:`magnitudes`); NaN where unknown."""
        if b.block not in self._rounded:
            series = self._series.get((b.index, b.param))
            if series is not None and series.R is not None:
                self.R[block.slice] = series.R
                self._rounded.add(b.block)
            else:
                A = self.magnitude[b.index] if b.index < len(self.magnitude) else None
                rule = self.rules.rule(b.index) if b.index < len(self.layers) else None
                if A is not None and rule is not None and rule.has("param_inputs") and len(block.shape) == 2:
                    F = rule.param_inputs(b.param, self.acts[b.index])
                    cols = F.columns(0, F.shape[1], np.float64)
                    self.R[block.slice] = (np.sqrt((A * A).T @ (cols * cols)) / self.m).ravel()
                self._rounded.add(b.block)
        return self.R[block.slice]

    # ------------------------------------------------------------------ verification
    def _tables_agree(self, series: SeriesBlock, b: Binding, block: Any, st: NDArray, local: NDArray,
                      values: NDArray) -> bool:
        """Compare the tables with the exact path on a few of the entries they certified (``local``, whose
        table values are ``values``), at the same steps (once per block); on disagreement the block's tables are
        dropped and a note says so."""
        key = (b.index, b.param)
        if series.confirmed or not local.size:
            return True
        rng = np.random.default_rng(block.start)
        pick = rng.choice(local.size, size=min(8, local.size), replace=False)
        exact = np.empty((st.shape[0], pick.size))
        if self._structured(b.index, block):
            F = self.rules.rule(b.index).param_inputs(b.param, self.acts[b.index])
            cols = block.shape[1]
            for k, j in enumerate(local[pick]):
                column = F.columns(int(j % cols), int(j % cols) + 1)[:, 0]
                change = ColumnChange(int(j // cols), st[:, pick[k]][:, None] * column[None, :])
                exact[:, k] = self._finish(change, b.index + 1) / self.m
        else:
            exact[...] = self._generic(b, block, local[pick], st[:, pick])
        tnoise = NOISE_C * self.eps * np.abs(st[:, pick]).astype(np.float64) * np.nan_to_num(
            self.rounding(b, block)[local[pick]], nan=0.0)
        allowed = AGREEMENT * (2 * tnoise + self.loss.budget() / self.m) + 1e-300
        if not self._structured(b.index, block):
            allowed = allowed + AGREEMENT * self.generic_noise
        if np.all(np.abs(exact - values[:, pick]) <= allowed):
            series.confirmed = True
            return True
        self._series[key] = None
        self._notes.append(f"the Taylor tables of {b.block} disagreed with the exact path of the same engine "
                          f"(by {float(np.max(np.abs(exact - values[:, pick]))):.2e}): its layers' series and "
                          "propagate rules are not consistent; the exact path was used")
        return False

    def predict(self, flat: NDArray, values: NDArray) -> tuple[float, float]:
        """The engine's cost change for ``theta[flat] += values`` (entries of one block, in one row of a
        Dense-like block when the structured path is used), and a bound on its rounding."""
        while True:
            try:
                return self._predict(flat, values)
            except RuleMismatch as exc:
                self.rules.refuse(exc)
                self._series = {}

    def _predict(self, flat: NDArray, values: NDArray) -> tuple[float, float]:
        b = next(bd for bd in self.state.bindings if self.net.layout[bd.block].start <= flat[0]
                 < self.net.layout[bd.block].stop)
        block = self.net.layout[b.block]
        local = flat - block.start
        vals = np.asarray(values, dtype=np.float64)
        one_row = len(block.shape) == 2 and np.unique(local // block.shape[1]).size == 1
        if one_row and self._structured(b.index, block):
            F = self.rules.rule(b.index).param_inputs(b.param, self.acts[b.index])
            s = np.zeros(block.shape[1], dtype=self.dtype)
            s[local % block.shape[1]] = vals
            change: Change = ColumnChange(int(local[0] // block.shape[1]), F.matvec(s)[None, :])
            for k in range(b.index + 1, len(self.layers)):
                change = self.rules.propagate(k, self.acts[k], self.acts[k + 1], change)
            total, rounding = self.loss.dense(change.dense(self.Z.shape), with_noise=True)
            data, noise = float(total[0]) / self.m, float(rounding[0]) / self.m
        else:
            data = self._perturbed_loss(b, block, local, vals.astype(self.dtype))
            noise = self.generic_noise + NOISE_C * self.eps * abs(data)
        if self.lambda_:
            pen = self.penalized[flat]
            th = self.x[flat][pen].astype(np.float64)
            data += float(np.sum(L2.change(self.lambda_, self.m, th, vals[pen])))
        return data, noise

    def verify(self, real_cost: Callable[[NDArray], Any], noise_level: float, seed: int = 0,
               steps: NDArray | None = None) -> list[BlockCheck]:
        """Compare the engine with the network's own cost (``real_cost``, which evaluates the caller's network).

        Per block, the change along a random direction in one row, at a step that moves the pre-activations
        by at most 0.1, so that a different model (another cost, another layer's math, a tie the engine does
        not see) shows far above the noise: one real evaluation.  With ``steps`` (shape (P,), the check's own
        per-entry steps), also two entries of one row moved by their own step, computed as one batch by the
        path the check itself takes: a rule that behaves differently for the small changes of a finite
        difference, or for a batch of changes, shows there (two real evaluations per block)."""
        rng = np.random.default_rng(seed)
        out = []
        for b in self.state.bindings:
            block = self.net.layout[b.block]
            if len(block.shape) == 2:
                r = int(rng.integers(block.shape[0]))
                local = r * block.shape[1] + np.arange(block.shape[1])
            else:
                local = np.sort(rng.choice(block.size, size=min(64, block.size), replace=False))
            flat = block.start + local
            u = rng.standard_normal(local.size)
            u /= np.linalg.norm(u)
            t = self._verification_step(b, block, local, u)
            s = (t * u).astype(self.dtype)
            predicted, pnoise = self.predict(flat, s)
            theta = np.array(self.x, copy=True)
            theta[flat] += s
            real = float(np.real(np.asarray(real_cost(theta)).reshape(-1)[0])) - float(np.real(self.f0))
            direction = np.zeros(self.x.size)
            direction[flat] = s
            out.append(BlockCheck(b.block, t, predicted, real, AGREEMENT * (2 * noise_level + pnoise), direction))
            if steps is not None:
                out += self._verify_at_steps(real_cost, noise_level, b.block,
                                             np.sort(rng.choice(flat, size=min(2, flat.size), replace=False)),
                                             steps)
        return out

    def _verify_at_steps(self, real_cost: Callable[[NDArray], Any], noise_level: float, name: str,
                         flat: NDArray, steps: NDArray) -> list[BlockCheck]:
        h = np.asarray(steps, dtype=np.float64)[flat][None, :]
        n_evals, cached = self.n_evals, self._noise
        predicted = self.delta(h, flat)
        assert self._noise is not None
        pnoise = self._noise[1]
        self.n_evals, self._noise = n_evals, cached  # not part of the check's own evaluations
        out = []
        for k, j in enumerate(flat):
            theta = np.array(self.x, copy=True)
            theta[j] += h[0, k].astype(self.dtype)
            real = float(np.real(np.asarray(real_cost(theta)).reshape(-1)[0])) - float(np.real(self.f0))
            direction = np.zeros(self.x.size)
            direction[j] = h[0, k]
            out.append(BlockCheck(name, float(h[0, k]), float(predicted[0, k]), real,
                                  AGREEMENT * (2 * noise_level + float(pnoise[0, k])), direction,
                                  "for one entry moved by the check's own step"))
        return out

    def _verification_step(self, b: Binding, block: Any, local: NDArray, u: NDArray) -> float:
        rule = self.rules.rule(b.index) if b.index < len(self.layers) else None
        if len(block.shape) == 2 and rule is not None and rule.has("param_inputs"):
            F = rule.param_inputs(b.param, self.acts[b.index])
            s = np.zeros(block.shape[1], dtype=self.dtype)
            s[local % block.shape[1]] = u
            reach = float(np.max(np.abs(F.matvec(s)), initial=0.0))
            if reach > 0:
                return 0.1 / reach
        return 1e-2 * float(np.min(self.scale()[block.start + local]))

    # ------------------------------------------------------------------ work items
    def _structured(self, i: int, block: Any) -> bool:
        return (i < len(self.layers) and len(block.shape) == 2 and self.rules.ok(i, "param_change")
                and all(self.rules.ok(k, "propagate") for k in range(i + 1, len(self.layers))))

    def _series_block(self, i: int, p: str, b: Any) -> SeriesBlock | None:
        """The Taylor tables of a block, when its layer and every layer after it support series."""
        if (i, p) not in self._series:
            ok = (MAX_SERIES_TERMS > 0 and i < len(self.layers) and len(b.shape) == 2
                  and hasattr(self.loss, "series") and hasattr(self.loss, "series_bound")
                  and self.rules.ok(i, "param_inputs")
                  and all(self.rules.ok(k, "series") for k in range(i + 1, len(self.layers))))
            self._series[i, p] = SeriesBlock(self, i, p, b.shape) if ok else None
        return self._series[i, p]

    def _exact_tasks(self, b: Binding, block: Any, local: NDArray, steps: NDArray, out: NDArray,
                     where: NDArray) -> list[Callable[[], None]]:
        """Work items writing ``out[:, where]`` for the entries ``local`` of a block at ``steps`` (S, k)."""
        i, p = b.index, b.param
        cols = block.shape[1]
        # Cache blocking: a task covers the columns of one row whose (B, m) temporaries fit in
        # MAX_BATCH_ELEMENTS, so that the elementwise passes run from cache rather than memory.
        width = max(1, min(cols, MAX_BATCH_ELEMENTS // self.m))
        rows = local // cols
        tasks = []

        def task(s: int, r: int, sel: NDArray) -> Callable[[], None]:
            def run() -> None:
                change = self.rules.param_change(i, p, r, local[sel] % cols, steps[s, sel], self.acts[i],
                                                 self.acts[i + 1].shape[1])
                out[s, where[sel]] = self._finish(change, i + 1) / self.m
            return run

        for r in np.unique(rows):
            idx = np.flatnonzero(rows == r)
            for lo in range(0, idx.size, width):
                for s in range(steps.shape[0]):
                    tasks.append(task(s, int(r), idx[lo:lo + width]))
        return tasks

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
            change = self.rules.propagate(k, self.acts[k], self.acts[k + 1], change)
        return self._loss_change(change)

    def _loss_change(self, change: Change) -> NDArray:
        """``sum_ik [l(z + D) - l(z)]`` per batch item, for a change ``D`` of the logits."""
        if isinstance(change, ColumnChange):
            return self.loss.column(change.col, change.delta)
        if isinstance(change, RankOneChange):
            return self.loss.rank_one(change.u, change.v)
        return self.loss.dense(change.dense(self.Z.shape))

    def _perturbed_loss(self, b: Binding, block: Any, local: NDArray, values: NDArray) -> float:
        """Data-term change when ``theta[block][local] += values`` (all at once), by re-running the layers
        from the block's own on the cached input, in the network's buffer (restored)."""
        flat = self.net.params
        idx = block.start + local
        old = flat[idx].copy()
        flat[idx] = old + values
        try:
            a = self.acts[b.index]
            for layer in self.layers[b.index:]:
                a = layer.forward(a)
        finally:
            flat[idx] = old
        return self.loss.total(a - self.Z) / self.m

    def _generic(self, b: Binding, block: Any, local: NDArray, steps: NDArray) -> NDArray:
        """Each entry perturbed alone in the network's buffer, the layers from the block's own re-run."""
        out = np.empty(steps.shape)
        with np.errstate(all="ignore"):
            for k, j in enumerate(local):
                for s in range(steps.shape[0]):
                    out[s, k] = self._perturbed_loss(b, block, np.array([j]), steps[s, k:k + 1])
        return out


class _Subset:
    """A :class:`NetworkProbe` restricted to some coordinates (the probe protocol over those axes only)."""

    cheap = True
    noise_excess = 1.0

    def __init__(self, parent: NetworkProbe, axes: NDArray) -> None:
        self.parent, self.axes = parent, axes
        self.x = parent.x
        self.dtype, self.real_dtype = parent.dtype, parent.real_dtype
        self.n_axes = int(axes.size)

    @property
    def n_evals(self) -> int:
        return self.parent.n_evals

    def scale(self) -> NDArray:
        return self.parent.scale()[self.axes]

    def snap(self, h: NDArray) -> NDArray:
        x = self.x[self.axes]
        return ((x + h.astype(self.dtype)) - x).astype(self.dtype)

    def delta(self, steps: NDArray) -> NDArray:
        return self.parent.delta(steps, self.axes)

    def noise(self, steps: NDArray) -> NDArray:
        return self.parent.noise(steps, self.axes)

    def imag(self, h: NDArray) -> NDArray:
        return self.parent.imag(h)


def supports_engine(net: Network) -> bool:
    """Whether the engine applies: it has a rule for the network's loss (:mod:`layerkit.fast.loss_rules`: the
    sigmoid cross-entropy with its final Sigmoid fused in, the softmax cross-entropy, the squared error), and
    the network's class does not redefine how the cost is evaluated (see
    :func:`~layerkit.nn.network.evaluation_overrides`)."""
    return has_loss_rule(net) and not evaluation_overrides(net)
