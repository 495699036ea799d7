"""Taylor tables of a Dense-like block: every entry's cost change for any step of any stencil, from ``K``
matrix products, with a certified truncation (see :class:`SeriesBlock`)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .changes import ColumnMaxima, SeriesChange, compose_series
from .state import MAX_BATCH_ELEMENTS, ForwardPass

#: Most Taylor terms (:class:`SeriesBlock`); entries whose remainder is not certified with this many are
#: evaluated by the exact per-perturbation path.
MAX_SERIES_TERMS = 8
#: Fewest Taylor tables computed at once: the automatic steps of the engine are chosen so that two certify
#: every change (:func:`~layerkit.check.methods.table_steps`).
MIN_TABLES = 2
#: Terms the automatic steps are chosen for (:meth:`SeriesBlock.table_reach`).
STEP_TERMS = 2
#: Elements of the ``K`` coefficients of one batch of units (:meth:`SeriesBlock._coefficients`): about
#: 0.5 MB in float64, so that the recurrences' many elementwise passes run from the cache (twice as fast on
#: the course network as batches four times larger).
SERIES_BATCH_ELEMENTS = 1 << 16
#: The same for the batches of :meth:`SeriesBlock._pair_to_loss`, whose elementwise passes run at the logits'
#: width: larger, so that each product with the memoized ``M_p`` is shared by more units.
PAIR_BATCH_ELEMENTS = 1 << 19
#: Most elements of the products ``M_p`` of :meth:`SeriesBlock._pair_products` (32 MB in float64); past it
#: the layers' own series are composed instead.
PAIR_ELEMENTS = 1 << 22


def available() -> bool:
    """Whether tables may be used at all (``MAX_SERIES_TERMS > 0``)."""
    return MAX_SERIES_TERMS > 0


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

    Piecewise-linear layers after the block (a rule with ``kink_distance``: ReLU, LeakyReLU) enter through
    the series of their pieces, exact where every example's change stays on its piece.  Example ``i``'s
    change at a unit ``l`` of such a layer is at most ``|tau| b_rl`` (the same bounds, propagated up to that
    layer, valid within the limits met so far), so it cannot reach a kink while ``|tau| < kappa_ri = min_l
    dist_il / b_rl`` (:attr:`kink`, the smallest over the kinked layers, capped by those limits).  An entry
    ``(r, c)`` whose step can move some example beyond that, ``|t| |F_ic| >= kappa_ri`` with ``F_ic != 0``, is
    not certified: the exact path evaluates it, on every example.  The rest are read off the tables, whose
    remainder bound holds for the pieces' (analytic) continuation, which is the loss on every example of
    theirs.
    """

    def __init__(self, fp: ForwardPass, i: int, p: str, shape: tuple[int, int],
                 maxima: ColumnMaxima | None = None) -> None:
        self.fp, self.i = fp, i
        self.rows, self.cols = shape
        self.F = fp.rules.rule(i).param_inputs(p, fp.acts[i])
        self.Fmax = self.F.abs_max() if maxima is None else maxima.of(self.F)
        self.F2 = self.F.sum_squares()
        self.tables: NDArray | None = None
        self.R: NDArray | None = None  # rounding scale of each entry, computed with the tables
        A = fp.magnitude[i]
        self.A2T = None if A is None else np.ascontiguousarray((A * A).T)
        self.confirmed = False  # the tables agreed with the exact path at the check's steps
        self.rho, self.M = np.empty(self.rows), np.empty(self.rows)
        widest = max([fp.acts[k + 1].shape[1] for k in range(i, len(fp.layers))], default=1)
        batch = max(1, MAX_BATCH_ELEMENTS // widest)
        distances = {k: np.nan_to_num(np.asarray(fp.rules.rule(k).kink_distance(fp.acts[k]), dtype=np.float64),
                                      nan=0.0)
                     for k in range(i + 1, len(fp.layers)) if fp.rules.rule(k).has("kink_distance")}
        #: ``kappa`` (rows, m): below it no example's change reaches a kink (class docstring); None: no kinks.
        self.kink: NDArray | None = np.full((self.rows, fp.m), np.inf) if distances else None
        self._row_max: NDArray | None = None  # max_c |F_ic| per example, read only when a bound is too loose
        for lo in range(0, self.rows, batch):  # batches of units: (B, width) bounds, never (rows, rows)
            units = np.arange(lo, min(lo + batch, self.rows))
            b = np.zeros((len(units), self.rows))
            b[np.arange(len(units)), units] = 1  # unit r's pre-activation changes by tau: bound 1 there
            limit = np.full(len(units), np.inf)
            for k in range(i + 1, len(fp.layers)):
                if k in distances and self.kink is not None:
                    self.kink[units] = np.minimum(self.kink[units], _kink_radius(distances[k], b, limit))
                b, lim = fp.rules.rule(k).series_bound(b)
                limit = np.minimum(limit, lim)
            m_per_rho, lim = fp.loss.series_bound(b)
            rho = np.minimum(limit, lim)
            reach = m_per_rho > 0  # a unit with no path to the cost changes nothing: remainder 0
            self.rho[units] = np.where(reach, rho, 1.0)
            self.M[units] = np.where(reach, m_per_rho * self.rho[units], 0.0)

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

    def table_reach(self, budget: float, terms: int = STEP_TERMS) -> NDArray:
        """Per entry (flat, ``(rows * cols,)``), a step ``|t|`` up to which the first ``terms`` tables certify
        its change under ``budget``: with ``q <= 1/2`` the remainder bound of the class docstring is at most
        ``2 M r^(K+1) F2 Fmax^(K-1)`` (``r = |t| / rho``, ``K = terms``), here put at half the budget.  ``inf``
        where the entry changes nothing (``M = 0`` or a column of zeros) or a bound is not a number."""
        K = terms
        with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
            a = 4 * self.M[:, None] * self.F2[None, :] * self.Fmax[None, :] ** (K - 1)
            r = np.minimum((budget / a) ** (1.0 / (K + 1)), 0.5 / self.Fmax[None, :])
            t = r * self.rho[:, None]
        return np.where(np.isnan(t) | (self.M[:, None] == 0), np.inf, t).ravel()

    def table(self, K: int) -> NDArray:
        """``T_1..T_K``, shape ``(K, rows, cols)`` (float64), computed once for the largest ``K`` asked (at
        least :data:`MIN_TABLES`: a first small request, such as a verification's, is not computed twice)."""
        if self.tables is None or len(self.tables) < K:
            K = max(K, MIN_TABLES)
            G = self._coefficients(K)
            want_R = self.R is None and self.A2T is not None
            with np.errstate(over="ignore", invalid="ignore"):
                if self.F.x.ndim == 2:
                    tables, R = self._products_by_rows(G, K, want_R)
                else:
                    tables, R = self._products_by_columns(G, K, want_R)
            if R is not None:
                self.R = np.sqrt(R.astype(np.float64)).ravel() / self.fp.m
            self.tables = tables
        return self.tables[:K]

    def _products_by_rows(self, G: NDArray, K: int, want_R: bool) -> tuple[NDArray, NDArray | None]:
        """The tables (and the squared rounding scales ``A^2 F^2``) of ``F = [1, x]`` with ``x`` of shape
        ``(m, n)``: ``x`` taken in blocks of examples (contiguous rows, about ``MAX_BATCH_ELEMENTS`` each),
        whose powers ``x^k`` are formed once and summed into every table; the leading columns of ones
        need no product (``T_k`` there is the sum of ``G_k`` over the examples)."""
        x, ones = self.F.x, self.F.ones
        m, n = x.shape
        tables = np.zeros((K, self.rows, self.cols))
        tables[:, :, :ones] = np.sum(G, axis=2, dtype=np.float64, keepdims=True)
        R = None
        if want_R:
            assert self.A2T is not None
            R = np.zeros((self.rows, self.cols), dtype=np.result_type(self.A2T, G.dtype))
            R[:, :ones] = np.sum(self.A2T, axis=1, keepdims=True)
        chunk = max(1, MAX_BATCH_ELEMENTS // max(1, n))
        power = np.empty((min(chunk, m), n), dtype=G.dtype)  # x^k of one block, reused: no fresh pages per power
        for i0 in range(0, m, chunk):
            i1 = min(i0 + chunk, m)
            xc = x[i0:i1].astype(G.dtype, copy=False)
            xk = xc
            for k in range(K):
                if k:
                    xk = np.multiply(xk, xc, out=power[:i1 - i0])
                tables[k, :, ones:] += G[k][:, i0:i1] @ xk
                if k == 1 and R is not None:
                    assert self.A2T is not None
                    R[:, ones:] += self.A2T[:, i0:i1] @ xk
            if K == 1 and R is not None:
                assert self.A2T is not None
                R[:, ones:] += self.A2T[:, i0:i1] @ np.multiply(xc, xc, out=power[:i1 - i0])
        return tables, R

    def _products_by_columns(self, G: NDArray, K: int, want_R: bool) -> tuple[NDArray, NDArray | None]:
        """As :meth:`_products_by_rows` for inputs with trailing axes, in blocks of columns of ``F``."""
        tables = np.empty((K, self.rows, self.cols))
        m = self.F.shape[0]
        width = max(1, MAX_BATCH_ELEMENTS // m)  # columns of F per pass: F^k stays cache-sized
        R = np.full((self.rows, self.cols), np.nan) if want_R else None
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
        return tables, R

    def _coefficients(self, K: int) -> NDArray:
        """``G``, shape ``(K, rows, m)``: per-example Taylor coefficients of the loss in ``tau``, for each
        unit ``r``, from a column series ``tau`` pushed through the layers after the block, in batches of
        units whose ``K`` coefficients of shape ``(B, m, width)`` hold about ``SERIES_BATCH_ELEMENTS`` in all.
        The series stays one column wide through the next layer and rank one through the one after; only
        later layers' outputs are materialized, so only their widths count.  A rank-one series through the
        last elementwise layer and the linear layer the loss reads goes to the loss without that elementwise
        layer's output ever being formed (:meth:`_pair_to_loss`)."""
        fp, i = self.fp, self.i
        m = fp.m
        pair = self._pair(K)
        last = len(fp.layers) - 1 if pair is not None else len(fp.layers)
        widest = max([fp.acts[k + 1].shape[1] for k in range(i + 3, last)], default=1)
        if pair is not None:
            widest = fp.acts[pair + 2].shape[1]
        batch = max(1, (SERIES_BATCH_ELEMENTS if pair is None else PAIR_BATCH_ELEMENTS) // (m * widest * K))
        G = np.empty((K, self.rows, m), dtype=fp.Z.dtype)
        products = None if pair is None else self._pair_products(pair, K)
        for lo in range(0, self.rows, batch):
            units = np.arange(lo, min(lo + batch, self.rows))
            coeffs = np.zeros((K, len(units), m), dtype=fp.Z.dtype)
            coeffs[0] = 1  # the pre-activation of each unit changes by tau itself
            change = SeriesChange(coeffs, units)
            for k in range(i + 1, len(fp.layers) if pair is None else pair):
                change = fp.rules.rule(k).series(fp.acts[k], fp.acts[k + 1], change)
            if products is None:
                G[:, lo:lo + len(units)] = fp.loss.series(change)
            else:
                G[:, lo:lo + len(units)] = self._pair_to_loss(change, *products)
        return G

    def _pair(self, K: int) -> int | None:
        """The layer ``k`` for :meth:`_pair_to_loss`: the loss reads layer ``k + 1`` (linear), ``k`` is
        elementwise, and the series reaching ``k`` is rank one (a column series through an elementwise layer
        after the block, then a linear one), on ``(m, n)`` activations; the products of
        :meth:`_pair_products` must hold at most :data:`PAIR_ELEMENTS`.  None otherwise."""
        fp, i = self.fp, self.i
        k = i + 3
        if k + 2 != len(fp.layers) or fp.acts[k].ndim != 2 or fp.acts[k + 2].ndim != 2:
            return None
        rule = fp.rules.rule
        if not (rule(i + 1).has("entry_series") and rule(i + 2).has("linear_weights")
                and rule(k).has("entry_series") and rule(k + 1).has("linear_weights")):
            return None
        m, n_mid, n_out = fp.m, fp.acts[k].shape[1], fp.acts[k + 2].shape[1]
        return k if (K - 1) * n_mid * m * n_out <= PAIR_ELEMENTS else None

    def _pair_products(self, k: int, K: int) -> tuple[NDArray, list[NDArray | None], NDArray]:
        """What :meth:`_pair_to_loss` reads for layers ``k`` (elementwise, its entries' coefficients ``T_p``,
        ``(K, m, n)``) and ``k + 1`` (linear, ``W``, ``(n_out, n)``), computed once per block: ``T``; for the
        orders ``p < K`` whose ``T_p`` is not all zero (a layer of linear pieces has only ``T_1``), ``M_p[l,
        (i, j)] = T_p[i, l] W[j, l]`` (``(n, m n_out)``); and ``Q = L_1 W`` (``(m, n)``), with ``L_1[i, j]`` the
        loss's first derivative in logit ``j`` of example ``i`` (its series for each logit moved alone)."""
        fp = self.fp
        dtype = fp.Z.dtype
        T = np.asarray(fp.rules.rule(k).entry_series(fp.acts[k], fp.acts[k + 1], K))
        W = np.asarray(fp.rules.rule(k + 1).linear_weights())
        n_out, m = W.shape[0], fp.m
        Wt = W.T.astype(np.result_type(dtype, T.dtype), copy=False)
        M: list[NDArray | None] = [
            (T[p].T[:, :, None] * Wt[:, None, :]).reshape(T.shape[2], -1) if np.any(T[p]) else None
            for p in range(K - 1)]
        ones = np.ones((1, n_out, m), dtype=dtype)
        L1 = np.asarray(fp.loss.series(SeriesChange(ones, np.arange(n_out))))[0]  # (n_out, m)
        return T, M, L1.T @ W.astype(L1.dtype, copy=False)

    def _pair_to_loss(self, change: SeriesChange, T: NDArray, M: list[NDArray | None], Q: NDArray) -> NDArray:
        """The loss's coefficients ``(K, B, m)`` for a rank-one series ``c(tau) v`` at the input of the pair
        of :meth:`_pair`, as the two layers' series and then the loss's would give them, without the
        elementwise layer's output.  At the logits the series is ``D = sum_p c^p E_p`` with ``E_p[b, i] =
        (T_p[i] v_b^p) W^T`` (one product ``v^p M_p`` per order).  The loss's coefficient of ``tau^K`` is
        ``L_1 . D_K`` plus terms of ``D_1 .. D_(K-1)`` only, so ``E_p`` is formed for ``p < K`` alone, the
        loss's own series reads ``D_1 .. D_(K-1)`` (``D_K`` set to 0), and ``L_1 . D_K = sum_p [c^p]_K H_p``
        is added with ``H_p[b, i] = sum_l Q[i, l] T_p[i, l] v_bl^p`` (one product per order)."""
        assert change.v is not None
        c, v = change.coeffs, change.v
        K, B, m = c.shape
        n_out = self.fp.Z.shape[1]  # the logits the loss reads: layer k + 1's output
        dtype = np.result_type(c.dtype, T.dtype, np.float64)
        H = np.zeros((K, B, m), dtype=dtype)
        for p in range(K):
            if np.any(T[p]):
                H[p] = ((Q * T[p]) @ (v ** (p + 1)).T).T
        top = compose_series(H, c)  # L_1 . D_n for every n: all of G but the loss's curvature
        if K == 1:
            return top
        E = np.zeros((K - 1, B, m, n_out), dtype=dtype)
        for p, Mp in enumerate(M):
            if Mp is not None:
                E[p] = (v ** (p + 1) @ Mp).reshape(B, m, n_out)
        loss = self.fp.loss
        if K == 2 and hasattr(loss, "second_order"):  # G_2 = L_1 . D_2 + q(D_1), D_1 = c_1 E_1
            top[1] += c[0] * c[0] * loss.second_order(E[0])
            return top
        D = np.zeros((K, B, m, n_out), dtype=dtype)
        D[:K - 1] = compose_series(E, c[:K - 1, :, :, None])
        G = np.asarray(loss.series(SeriesChange(D)), dtype=dtype)
        G[K - 1] += top[K - 1]
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
        tmax = np.max(np.abs(t), axis=0)
        C, q = self._tail(tmax)  # independent of K: the loop only raises q to a power
        K, ok = self._terms(C, q, budget)
        if self.kink is not None:
            ok = ok & self._on_pieces(tmax)
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
        tmax = np.max(np.abs(t), axis=0)
        C, q = self._tail(tmax, rows, cols)
        K, ok = self._terms(C, q, budget)
        if self.kink is not None:
            ok = ok & self._entries_on_pieces(tmax, rows, cols)
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

    # ------------------------------------------------------------------ kinks (class docstring)
    def _on_pieces(self, tmax: NDArray) -> NDArray:
        """Whether each entry ``(r, c)`` at its largest step ``tmax[r, c]`` keeps every example on its pieces
        (``(rows, cols)`` bool): no example ``i`` with ``tmax |F_ic| >= kappa_ri`` and ``F_ic != 0``.  Examples
        that could reach ``kappa`` under some entry of their row are found first, from ``max_c |F_ic|``; only
        those are tested entry by entry."""
        assert self.kink is not None
        clear = np.ones((self.rows, self.cols), dtype=bool)
        for r, i, F in self._candidate_rows(tmax):
            with np.errstate(invalid="ignore", over="ignore"):
                hit = ~(tmax[r] * F < self.kink[r, i][:, None]) & (F != 0)
            which, c = np.nonzero(hit)
            clear[r[which], c] = False
        return clear

    def piece_radius(self, tmax: NDArray) -> NDArray:
        """For each entry of the block (flat, ``(rows * cols,)``), the step up to which its change keeps every
        example on its pieces, where ``tmax`` (same shape: the entry's widest step) might not: ``min_i
        kappa_ri / |F_ic|`` over the examples with ``F_ic != 0`` (``kappa``: :attr:`kink`), 0 where that is
        not a number; ``inf`` where :meth:`_on_pieces` clears ``tmax`` (or the block has no kinks after it).
        Only the examples :meth:`_on_pieces` tests one by one can set it (the others clear their row's
        widest step)."""
        out = np.full((self.rows, self.cols), np.inf)
        if self.kink is None:
            return out.ravel()
        t = np.reshape(np.asarray(tmax, dtype=np.float64), (self.rows, self.cols))
        for r, i, F in self._candidate_rows(t):
            with np.errstate(divide="ignore", invalid="ignore"):
                ratio = np.where(F != 0, self.kink[r, i][:, None] / F, np.inf)
            np.minimum.at(out, r, ratio)
        with np.errstate(invalid="ignore"):
            out = np.where(~(out > t), np.nan_to_num(out, nan=0.0), np.inf)
        return out.ravel()

    def _candidate_rows(self, tmax: NDArray) -> Iterator[tuple[NDArray, NDArray, NDArray]]:
        """The pairs ``(r, i)`` whose example might reach ``kappa_ri`` under the widest step of row ``r``
        (``tmax`` of shape ``(rows, cols)``, found from ``max_c |F_ic|``), in cache-sized chunks: ``(rows,
        examples, |F[examples, :]|)``."""
        assert self.kink is not None
        with np.errstate(invalid="ignore", over="ignore"):
            reach = np.max(tmax, axis=1, initial=0.0)
            cand_r, cand_i = self._candidates(self.kink, reach)
        chunk = max(1, MAX_BATCH_ELEMENTS // max(1, self.cols))
        for lo in range(0, cand_r.size, chunk):
            r, i = cand_r[lo:lo + chunk], cand_i[lo:lo + chunk]
            yield r, i, self.F.rows(i)

    def _candidates(self, kink: NDArray, reach: NDArray) -> tuple[NDArray, NDArray]:
        """``np.nonzero`` of ``~(kink > reach[:, None] * max_c |F_ic|)`` (``kink`` of shape ``(k, m)``, ``reach``
        ``(k,)``): the pairs that may reach their kink.  First with the largest column maximum for every
        example (no pass over ``F``), an upper bound, so that no pair is missed; when that leaves more than
        ``m`` candidates the examples' own maxima are read (once) and the test is repeated with them."""
        bound = float(np.max(self.Fmax, initial=0.0))
        r, i = np.nonzero(~(kink > reach[:, None] * bound))
        if r.size > kink.shape[1]:
            if self._row_max is None:
                self._row_max = self.F.row_abs_max()
            r, i = np.nonzero(~(kink > reach[:, None] * self._row_max[None, :]))
        return r, i

    def _entries_on_pieces(self, tmax: NDArray, rows: NDArray, cols: NDArray) -> NDArray:
        """As :meth:`_on_pieces` for the entries ``(rows[k], cols[k])`` at their largest steps ``tmax[k]``."""
        assert self.kink is not None
        clear = np.ones(rows.size, dtype=bool)
        m = self.kink.shape[1]
        chunk = max(1, MAX_BATCH_ELEMENTS // max(1, m))
        for lo in range(0, rows.size, chunk):
            sel = slice(lo, lo + chunk)
            kink, t = self.kink[rows[sel]], tmax[sel]
            with np.errstate(invalid="ignore", over="ignore"):
                cand_k, cand_i = self._candidates(kink, t)
            if not cand_k.size:
                continue
            F = np.abs(self.F.rows(cand_i)[np.arange(cand_k.size), cols[sel][cand_k]])
            with np.errstate(invalid="ignore", over="ignore"):
                hit = ~(t[cand_k] * F < kink[cand_k, cand_i]) & (F != 0)
            clear[lo + cand_k[hit]] = False
        return clear


def _kink_radius(distance: NDArray, b: NDArray, limit: NDArray) -> NDArray:
    """``min(limit_B, min_l distance[i, l] / b[B, l])`` (shape ``(B, m)``): how far ``tau`` may go before some
    example's change at a kinked layer, bounded by ``|tau| b``, may reach the distance to its kink; units with
    ``b = 0`` do not move.  ``distance`` (m, n) per input entry, ``b`` (B, n), ``limit`` (B,): where the
    bounds ``b`` hold."""
    out = np.repeat(np.asarray(limit, dtype=np.float64)[:, None], distance.shape[0], axis=1)
    moves = ~(b <= 0)  # NaN bounds move (and give NaN radii, which no step clears)
    for unit in np.flatnonzero(np.any(moves, axis=0)):
        moved = np.flatnonzero(moves[:, unit])
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            out[moved] = np.minimum(out[moved], distance[None, :, unit] / b[moved, unit][:, None])
    return out
