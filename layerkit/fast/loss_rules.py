"""The fast engine's rules for the losses (see :mod:`layerkit.nn.losses`): changes of the summed loss
``sum_ik l(z_ik)`` for structured changes of the logits ``Z``, exact or with a certified remainder.

Every rule has ``column(k, d)``, ``rank_one(u, v)``, ``dense(d, with_noise)`` (per batch item), ``total(d)``,
``budget()`` (the truncation error allowed: ten times below the rounding of the summed cost),
``magnitude()`` (the scale of the terms backprop forms ``dL/dz`` from, for rounding bounds) and
``slope_scale()``; a rule with ``series`` and ``series_bound`` lets the engine read a block off Taylor tables.
:func:`loss_rule` picks the rule of a network's loss (None: the engine does not apply).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..nn.activations import sigmoid
from ..nn.losses import MeanSquaredError, SigmoidCrossEntropy, SoftmaxCrossEntropy, log_softmax
from .changes import SeriesChange, compose_series, loss_change, loss_series, strip_limit

#: Most Taylor terms of a loss's rank-one expansion (beyond, the exact identity).
MAX_LOSS_TERMS = 8
#: Bound on ``|d^n loss / dz^n|`` for n >= 2 (derivatives of the sigmoid: 0.25, 0.096, 0.125, 0.093).
_D5_BOUND = 0.25


class SigmoidCrossEntropyTerms:
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
        # l' = s - y formed as (1 - y) s - y sigmoid(-z): s - y would be exactly 0 for a confident right
        # prediction (s rounds to 1), where the true slope is e^-z
        self.L = ((1 - Y) * self.S - Y * Sc, v, v * (Sc - self.S), v * (1 - 6 * self.S * Sc))
        self.absL1 = float(np.sum(np.abs(self.L[0])))
        # sum_ik l(z_ik) >= sum_ik softplus(-|z|): the summed cost, whose rounding is ~ eps times it
        self.cost_sum = float(np.sum(np.logaddexp(0, -np.abs(Z))))
        self.eps = float(np.finfo(Z.dtype).eps)
        self._coefficients: NDArray | None = None
        self.slope_bound = float(np.max(np.abs(1 - Y) + np.abs(Y), initial=1.0))

    def magnitude(self) -> NDArray:
        """The scale of the terms ``dL/dz`` is formed from at the logits: ``|1 - y| s + |y| sigmoid(-z)``."""
        Y = self.Y.astype(np.float64)
        return np.abs(1 - Y) * self.S + np.abs(Y) * self.Sc

    def slope_scale(self) -> float:
        """``sum |l'(z)| (|z| + 1)``: the rounding a re-run of the logits brings into the summed cost, over eps."""
        return float(np.sum(np.abs(self.L[0]) * (np.abs(self.Z) + 1)))

    def total(self, d: NDArray) -> float:
        """The summed loss change for one change ``d`` (m, K) of the logits, exact."""
        return float(np.sum(self.change(d)))

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
        """Largest truncation error allowed in one cost change: ``0.1 eps sum l``, ten times below the rounding
        of the summed cost that a re-evaluation of the whole cost would carry.  Relative to the cost, however
        small: a network that fits its data to 1e-45 has cost changes of that size, which an absolute budget
        would let a truncated series get wrong."""
        return 1e-1 * self.eps * max(self.cost_sum, float(np.finfo(np.float64).tiny))

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

    def second_order(self, d: NDArray) -> NDArray:
        """The coefficient of ``tau^2`` of the summed loss change per batch item and example, ``(B, m)``, for
        the logits moving by ``tau d`` (``d`` of shape ``(B, m, n_out)``): ``sum_k l''(z_ik) d_ik^2 / 2``."""
        return 0.5 * np.sum(self.L[1] * (d * d), axis=2)

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

    def change(self, d: NDArray, k: Any = slice(None)) -> NDArray:
        """Elementwise loss changes for a change ``d`` of the logits (of column ``k`` only, when given)."""
        return loss_change(self.Z[:, k], self.S[:, k], self.Sc[:, k], self.Y[:, k], d)

    def column(self, k: int, d: NDArray) -> NDArray:
        """Only logit column ``k`` changes, by ``d`` of shape ``(B, m)``: exact."""
        return np.sum(self.change(d, k), axis=1)

    def rank_one(self, u: NDArray, v: NDArray) -> NDArray:
        """The logits change by ``outer(u[b], v)``."""
        # remainder bound from sum_ik |u_bi v_k|^(N+1) <= m max|u|^(N+1) sum_k |v_k|^(N+1)
        umax = max(float(np.max(u, initial=0.0)), -float(np.min(u, initial=0.0)))
        av = np.abs(v)
        order = self.taylor_order(lambda n: u.shape[1] * np.float64(umax) ** (n + 1) * float(np.sum(av ** (n + 1))))
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
        order = self.taylor_order(lambda n: d[0].size * np.float64(dmax) ** (n + 1))
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
        terms = self.change(d)
        total = np.sum(terms, axis=(1, 2))
        if with_noise:
            return total, 4 * self.eps * np.sum(np.abs(terms), axis=(1, 2))
        return total


class SoftmaxCrossEntropyTerms:
    """Changes of ``sum_i l_i``, ``l_i = logsumexp(z_i) - Y_i . z_i`` (target rows summing to 1), exactly.

    For a change ``d`` of example ``i``'s logits, ``l_i(z + d) - l_i(z) = sum_c Y_ic log1p(sum_k p_ik
    expm1(d_k - d_c))`` with ``p = softmax(z)``: the change of ``logsumexp(z) - z_c`` written without
    subtracting two nearly equal numbers (for a confident right prediction ``p_c`` is near 1 and the other
    terms are small, and so is the change).  A single changed logit ``k`` needs only ``p_k`` and
    ``1 - p_k = sum_{j != k} p_j`` (summed, not subtracted).  Rounding: about ``4 eps`` of each term.

    That identity needs the mixture ``M = 1 + x`` away from 0 and every ``p_k`` that matters represented: a
    confidently wrong example (the probability of its class underflows to 0, or a change that takes ``M``
    far below 1) would give ``log1p(-1) = -inf``, and an underflowed ``p_k`` times an overflowed
    ``expm1`` NaN.  Such examples (``x < -1/2`` or not finite, or a probability of the example below the
    dtype's smallest normal number) are computed again from the float64 log-probabilities of the logits
    (:func:`_log_mixture`: the same identity in float64, and ``logsumexp(log p + d - d_c)`` where ``M`` is
    far from 1), so every change of finite logits is finite and correct.
    """

    def __init__(self, Z: NDArray, Y: NDArray) -> None:
        self.Z, self.Y = Z, Y
        logp = log_softmax(Z.astype(np.float64) if Z.dtype == np.float64 else Z)
        self.P = np.exp(logp)
        # sum_{j != k} p_ij, formed as a sum (never 1 - p_ik): the sums of the classes before k and after it
        before = np.zeros_like(self.P)
        np.cumsum(self.P[:, :-1], axis=1, out=before[:, 1:])
        after = np.zeros_like(self.P)
        after[:, :-1] = np.cumsum(self.P[:, :0:-1], axis=1)[:, ::-1]
        self.others = before + after
        self.eps = float(np.finfo(Z.dtype).eps)
        self.cost_sum = float(-np.sum(Y * logp))
        labels = np.argmax(Y, axis=1)
        self.rowsum = np.sum(Y, axis=1)
        self.one_hot = bool(np.all(Y[np.arange(Y.shape[0]), labels] == 1) and np.all(self.rowsum == 1))
        self.labels = labels
        self._class_memo: tuple[np.dtype, list[tuple[int, NDArray, NDArray, NDArray | None]]] | None = None
        tiny = float(np.finfo(self.P.dtype).tiny)
        #: Examples with a probability that underflowed (0 or subnormal): their changes are computed in float64.
        self._lost = np.any(self.P < tiny, axis=1)
        self._logp64: NDArray | None = logp if logp.dtype == np.float64 else None

    def magnitude(self) -> NDArray:
        """``dL/dz = (sum_k Y_k) p - Y`` is formed from ``p`` and ``Y``: their magnitudes."""
        return self.rowsum[:, None] * self.P + np.abs(self.Y.astype(np.float64))

    def slope_scale(self) -> float:
        return float(np.sum(np.abs(self.rowsum[:, None] * self.P - self.Y) * (np.abs(self.Z) + 1)))

    def budget(self) -> float:
        return 1e-1 * self.eps * max(self.cost_sum, float(np.finfo(np.float64).tiny))

    def log_probabilities(self) -> NDArray:
        """``log softmax(Z)`` in float64 (the logits as they are, their dtype's values exactly), computed once."""
        if self._logp64 is None:
            self._logp64 = log_softmax(self.Z.astype(np.float64))
        return self._logp64

    def _resolved(self, x: NDArray, weight: NDArray) -> NDArray:
        """Where ``log1p(x)`` (``x = sum_k p_k expm1(d_k - d_c)``, shape ``(B, m)``) is the change: ``x >= -1/2``
        and finite, on an example without underflowed probabilities; where ``weight`` (the class's target) is
        0 nothing is needed."""
        return ((x >= -0.5) & (x < np.inf) & ~self._lost) | (weight == 0)

    def _class_terms(self, d: NDArray, c: Any, weight: NDArray) -> tuple[NDArray, NDArray | None]:
        """``log(sum_k p_ik e^(d_bik - d_bic))`` for each batch item and example (``(B, m)``), with ``c`` the class
        of each example (an index array of ``m``) or one class for all, and the float64 rounding of the
        examples computed again (None: none was)."""
        cls = np.broadcast_to(np.asarray(c), (d.shape[1],))
        dc = np.take_along_axis(d, cls[None, :, None], axis=2)
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # log1p(-1): computed again below
            x = np.sum(self.P * np.expm1(d - dc), axis=2)
            out = np.log1p(x)
        again = ~self._resolved(x, weight)
        if not np.any(again):
            return out, None
        b, i = np.nonzero(again)
        d64 = d[b, i].astype(np.float64)
        value, error = _log_mixture(self.log_probabilities()[i], d64 - d64[np.arange(i.size), cls[i]][:, None])
        out[b, i] = value
        rounding = np.zeros(out.shape)
        rounding[b, i] = error
        return out, rounding

    def _terms(self, d: NDArray) -> tuple[NDArray, NDArray | None]:
        """Per-example changes ``(B, m)`` for logit changes ``d`` of shape ``(B, m, K)``, and the float64 rounding
        of the examples computed again (None: none was)."""
        if self.one_hot:
            return self._class_terms(d, self.labels, self.rowsum)
        out = np.zeros(d.shape[:2])
        rounding = None
        for c in range(d.shape[2]):
            w = self.Y[:, c]
            if np.any(w):
                part, err = self._class_terms(d, c, w)
                with np.errstate(invalid="ignore"):  # a weight of 0 times a change not computed again
                    out += np.where(w != 0, w * part, 0)
                if err is not None:
                    rounding = (0 if rounding is None else rounding) + np.abs(w) * err
        return out, rounding

    def second_order(self, d: NDArray) -> NDArray:
        """The coefficient of ``tau^2`` per batch item and example, ``(B, m)``, for the logits moving by
        ``tau d`` (``(B, m, n_out)``): half the quadratic form of ``s_i (diag(p_i) - p_i p_i^T)``, as the
        weighted variance ``s_i sum_k p_ik (d_ik - dbar_i)^2 / 2`` with ``dbar_i = sum_k p_ik d_ik`` (a sum of
        terms of one sign: no cancellation)."""
        centred = d - np.sum(self.P * d, axis=2, keepdims=True)
        return 0.5 * self.rowsum * np.sum(self.P * (centred * centred), axis=2)

    def column(self, k: int, d: NDArray) -> NDArray:
        """Only logit ``k`` changes, by ``d`` of shape ``(B, m)``: class ``k``'s term changes by
        ``log1p(sum_{j != k} p_j expm1(-d))``, every other class's by ``log1p(p_k expm1(d))``; examples where
        these are not resolved (see :meth:`_resolved`) from the float64 log-probabilities."""
        y, rest = self.Y[:, k], self.rowsum - self.Y[:, k]
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # what is not finite: computed again
            x_in = self.others[:, k] * np.expm1(-d)
            x_out = self.P[:, k] * np.expm1(d)
            inside, outside = np.log1p(x_in), np.log1p(x_out)
        again_in, again_out = ~self._resolved(x_in, y), ~self._resolved(x_out, rest)
        if np.any(again_in) or np.any(again_out):
            logp = self.log_probabilities()
            for again, values, sign, own in ((again_in, inside, -1.0, True), (again_out, outside, 1.0, False)):
                b, i = np.nonzero(again)
                if not i.size:
                    continue
                lp = logp[i]
                lk = lp[:, k]
                lo = _log_others(lp, k)
                # the mixture (1 - q) + q e^(sign d): q the changed weight (the others for the own class)
                logq = np.stack([lk, lo] if own else [lo, lk], axis=1)
                w = np.zeros((i.size, 2))
                w[:, 1] = sign * d[b, i].astype(np.float64)
                values[b, i] = _log_mixture(logq, w)[0]
        with np.errstate(invalid="ignore"):  # a weight of 0 times a change not computed again
            return np.sum(np.where(y != 0, y * inside, 0) + np.where(rest != 0, rest * outside, 0), axis=1)

    def rank_one(self, u: NDArray, v: NDArray) -> NDArray:
        """The logits change by ``outer(u[b], v)``.  Example ``i``'s change is ``f_i(u_bi)`` with ``f_i(t) =
        s_i log(sum_k p_ik e^(t w_ik)) - t Y_i . w_i``, ``w_ik = v_k - v_(r_i)``: its Taylor coefficients
        (the mixture's cumulants) are computed once for all batch items, and the series is used when its
        remainder is certified below :meth:`budget`: on ``|t| <= R = ln 1.5 / span(v)`` the mixture stays
        within 1/2 of 1, so ``|f_i| <= s_i (ln 2 + ln 1.5) <= 4 s_i ln 1.5`` there, Cauchy's estimate bounds each
        coefficient by that over ``R^n``, and the tail after ``N`` terms at ``|t| = q R`` by that times
        ``q^(N+1) / (1 - q)``, summed over the examples.  Otherwise the exact identity."""
        span = float(np.max(v, initial=0.0) - np.min(v, initial=0.0))
        umax = max(float(np.max(u, initial=0.0)), -float(np.min(u, initial=0.0)))
        if span == 0 or umax == 0:
            return np.zeros(u.shape[0])
        q = umax * span / float(np.log(1.5))
        if q < 1:
            bound = float(np.sum(self.rowsum)) * 4 * float(np.log(1.5)) / (1 - q)
            budget = self.budget()
            for N in range(1, MAX_LOSS_TERMS + 1):
                if bound * q ** (N + 1) <= budget:
                    phi = self._rank_one_coefficients(v, N)  # (N, m)
                    total = np.zeros(u.shape[0])
                    power = np.ones_like(u)
                    for n in range(N):
                        power = power * u
                        total += power @ phi[n]
                    return total
        return self.dense(u[:, :, None] * v[None, None, :])

    def _rank_one_coefficients(self, v: NDArray, N: int) -> NDArray:
        w = v[None, :] - v[self.labels][:, None]  # (m, n): v_k - v_(r_i)
        S = np.empty((N,) + (self.P.shape[0],))
        wn = np.ones_like(w)
        fact = 1.0
        for n in range(1, N + 1):
            wn = wn * w
            fact *= n
            S[n - 1] = np.sum(self.P * wn, axis=1) / fact
        phi = self.rowsum * _log1p_series(S)
        if not self.one_hot:
            phi[0] -= np.sum(self.Y * w, axis=1)
        return phi

    def dense(self, d: NDArray, with_noise: bool = False) -> Any:
        terms, again = self._terms(d)
        total = np.sum(terms, axis=1)
        if with_noise:
            noise = 4 * self.eps * (np.sum(np.abs(terms), axis=1) + np.abs(total))
            return total, noise if again is None else noise + 4 * np.sum(again, axis=1)
        return total

    def total(self, d: NDArray) -> float:
        return float(self.dense(d[None])[0])

    def series(self, change: SeriesChange) -> NDArray:
        """Per-example Taylor coefficients ``(K, B, m)`` of the loss change for a series change of the logits.

        With ``r_i`` the example's class (its largest target), ``l_i(z + d) - l_i(z) = s_i log(sum_k p_ik
        e^(d_k - d_r)) - sum_k Y_ik (d_k - d_r)`` (``s_i`` the row's sum; the last sum vanishes for one-hot
        targets): the series of each ``e^(d_k - d_r)`` by the recurrence of ``E' = D' E``, their mixture
        ``S = sum_k p_k E_k`` (``S_0 = 1``), then ``log S`` by the recurrence of ``S L' = S'``.  Relative to the
        example's own class nothing cancels: for a confident right prediction every term is small."""
        c = change.coeffs
        K, B, m = c.shape[0], c.shape[1], c.shape[2]
        r = self.labels
        n = self.P.shape[1]
        if change.v is not None:
            return self._rank_one_series(c, change.v)
        if change.cols is not None:
            return self._column_series(c, np.asarray(change.cols))
        S = np.zeros((K, B, m), dtype=np.result_type(c, np.float64))
        lin = np.zeros((K, B, m), dtype=S.dtype)
        cr = np.take_along_axis(c, r[None, None, :, None], axis=3)[..., 0]
        for k in range(n):
            D = c[..., k] - cr  # the coefficients of d_k - d_r
            E = _exp_series(D)
            S += self.P[:, k] * E
            if not self.one_hot:
                lin += self.Y[:, k] * D
        return self.rowsum * _log1p_series(S) - lin

    def _column_series(self, c: NDArray, cols: NDArray) -> NDArray:
        """:meth:`series` when batch item ``b`` changes logit ``o = cols[b]`` alone, by ``c(tau)`` (``(K, B, m)``).
        An example of another class ``r`` has ``d_k - d_r = c`` at ``k = o`` and 0 elsewhere, so its mixture is
        ``1 + p_o (e^c - 1)``; one of class ``o`` has ``-c`` at every other ``k``: ``1 + (1 - p_o) (e^-c - 1)``,
        with ``1 - p_o`` summed from the other classes.  Two exponential series in all, not one per class."""
        dtype = np.result_type(c, np.float64)
        own = self.labels[None, :] == cols[:, None]  # (B, m): the changed logit is the example's class
        up, down = _exp_series(c.astype(dtype)), _exp_series(-c.astype(dtype))
        S = np.where(own, self.others[:, cols].T, self.P[:, cols].T) * np.where(own, down, up)
        out = self.rowsum * _log1p_series(S)
        if not self.one_hot:  # sum_k Y_k (d_k - d_r): Y_o c, or -(s - Y_o) c for class o
            y = self.Y[:, cols].T
            out -= np.where(own, y - self.rowsum, y) * c
        return out

    def _rank_one_series(self, c: NDArray, v: NDArray) -> NDArray:
        """:meth:`series` for a rank-one change ``d = c(tau) v[b]`` (``c``: ``(K, B, m)``, ``v``: ``(B, n)``).
        With ``w_k = v_k - v_r``, the mixture is ``M(c) = sum_k p_k e^(c w_k) = 1 + sum_j mu_j c^j`` with the
        moments ``mu_j = sum_k p_k w_k^j / j!`` (:meth:`_moments`); composed with the powers of the series ``c``
        (:func:`~layerkit.fast.changes.compose_series`) it gives ``S``."""
        K = c.shape[0]
        dtype = np.result_type(c, np.float64)
        mu, lin = self._moments(v, K, dtype)
        mu /= np.cumprod(np.arange(1.0, K + 1))[:, None, None]
        S = compose_series(mu, c.astype(dtype, copy=False))
        return self.rowsum * _log1p_series(S) - lin * c

    def _moments(self, v: NDArray, K: int, dtype: Any) -> tuple[NDArray, NDArray]:
        """``mu_j = sum_k p_k w_k^j``, ``j = 1..K`` (shape ``(K, B, m)``), and ``sum_k Y_k w_k`` (``(B, m)``, zero for
        one-hot targets), with ``w_k = v[b, k] - v[b, r_i]``.  Examples of one class ``r`` share their ``w``
        (``(B, n)``), so each class's examples take one product per power with their ``p`` (and ``Y``); the
        powers of ``w`` are formed as an elementwise loop would form them, and only the sums over ``k`` are
        ordered differently."""
        B, m = v.shape[0], self.P.shape[0]
        mu = np.empty((K, B, m), dtype=dtype)
        lin = np.zeros((B, m), dtype=dtype)
        vv = v.astype(dtype, copy=False)
        for r, idx, PT, YT in self._classes(dtype):
            w = vv - vv[:, r:r + 1]
            wj = w
            for j in range(K):
                if j:
                    wj = wj * w
                mu[j][:, idx] = wj @ PT
            if YT is not None:
                lin[:, idx] = w @ YT
        return mu, lin

    def _classes(self, dtype: Any) -> list[tuple[int, NDArray, NDArray, NDArray | None]]:
        """Per class ``r`` that some example has: ``(r, examples, p^T, Y^T)`` (``(n, m_r)``, in ``dtype``; ``Y^T``
        None for one-hot targets), memoized."""
        memo = self._class_memo
        if memo is None or memo[0] != np.dtype(dtype):
            groups = []
            for r in np.unique(self.labels):
                idx = np.flatnonzero(self.labels == r)
                PT = np.ascontiguousarray(self.P[idx].T, dtype=dtype)
                YT = None if self.one_hot else np.ascontiguousarray(self.Y[idx].T, dtype=dtype)
                groups.append((int(r), idx, PT, YT))
            memo = self._class_memo = (np.dtype(dtype), groups)
        return memo[1]

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """For logit changes with ``|d_k| <= rho b_k`` (complex) and ``rho bmax <= ln 1.5``: ``|sum_k p_k
        e^(d_k) - 1| <= e^(rho bmax) - 1 <= 1.5 rho bmax <= 1/2``, so ``|log(...)| <= 2 (1.5 rho bmax)``, and
        ``|Y . d| <= s rho bmax``: the change is at most ``rho bmax (3 s + s)`` with ``s`` the largest row sum
        (log of the mixture times ``s``, plus the linear part)."""
        bmax = np.max(b, axis=1, initial=0.0)
        s = float(np.max(self.rowsum, initial=1.0))
        return 4 * s * bmax, strip_limit(b, float(np.log(1.5)))


def _log_mixture(logq: NDArray, w: NDArray) -> tuple[NDArray, NDArray]:
    """``log(sum_k q_k e^(w_k))`` along the last axis, for weights ``q = exp(logq)`` that sum to 1, in float64,
    and a bound on its rounding.

    Near 1 the mixture is ``1 + x`` with ``x = sum_k q_k expm1(w_k)`` (nothing cancels when the change is
    small), a weight below the smallest normal number entering as ``exp(logq_k + w_k) - q_k`` (not as its
    few bits times ``expm1``); where ``x < -1/2`` (or overflows) the mixture is far from 1 and
    ``logsumexp(logq + w)`` has no cancellation to fear.  The rounding bound is ``eps`` times the
    magnitudes these are formed from: ``|logq_k + w_k|`` of each subnormal weight's term, and the largest
    ``|logq_k| + |w_k|`` of the terms that count in a logsumexp."""
    logq, w = np.broadcast_arrays(np.asarray(logq, dtype=np.float64), np.asarray(w, dtype=np.float64))
    eps = float(np.finfo(np.float64).eps)
    with np.errstate(all="ignore"):  # log1p(-1) and overflows: those rows are the logsumexp's
        q = np.exp(logq)
        normal = q >= np.finfo(np.float64).tiny
        a = logq + w
        ea = np.exp(a)
        terms = np.where(normal, q * np.expm1(w), ea - q)
        x = np.sum(terms, axis=-1)
        out = np.log1p(x)
        error = eps * np.sum(np.where(normal | (ea == 0), 0.0, np.abs(a) * ea), axis=-1) / np.maximum(1 + x, 0.5)
        far = ~((x >= -0.5) & (x < np.inf))
        if np.any(far):
            af = a[far]
            top = np.max(af, axis=-1, keepdims=True)
            out[far] = top[..., 0] + np.log(np.sum(np.exp(af - top), axis=-1))
            counts = af >= top - 40  # terms below e^-40 of the largest do not reach the rounding
            size = np.abs(logq[far]) + np.abs(w[far])
            error[far] = eps * (np.abs(out[far]) + np.max(np.where(counts, size, 0.0), axis=-1))
    return out, error


def _log_others(logp: NDArray, k: int) -> NDArray:
    """``log(sum_{j != k} p_j)`` per row of the log-probabilities ``logp`` (``-inf`` with one class)."""
    rest = np.delete(logp, k, axis=1)
    if not rest.shape[1]:
        return np.full(logp.shape[0], -np.inf)
    top = np.max(rest, axis=1, keepdims=True)
    return top[:, 0] + np.log(np.sum(np.exp(rest - top), axis=1))


def _exp_series(D: NDArray) -> NDArray:
    """Coefficients ``E_1..E_K`` of ``exp(d(tau)) - 1`` for ``d = sum_k D_k tau^k``: ``n E_n = sum_j j D_j
    E_(n-j)``, ``E_0 = 1``."""
    K = D.shape[0]
    E = np.empty_like(D)
    for n in range(1, K + 1):
        acc = n * D[n - 1]
        for j in range(1, n):
            acc = acc + j * D[j - 1] * E[n - j - 1]
        E[n - 1] = acc / n
    return E


def _series_times(A: NDArray, C: NDArray) -> NDArray:
    """The product of two series without constant terms (coefficients of the orders ``1..K`` along axis 0),
    truncated after the order ``K``: ``(AC)_n = sum_{j=1}^{n-1} A_j C_(n-j)``."""
    out = np.zeros_like(A)
    for n in range(2, A.shape[0] + 1):
        for j in range(1, n):
            out[n - 1] += A[j - 1] * C[n - j - 1]
    return out


def _log1p_series(S: NDArray) -> NDArray:
    """Coefficients ``L_1..L_K`` of ``log(1 + sum_k S_k tau^k)``: ``n L_n = n S_n - sum_{j<n} j L_j S_(n-j)``."""
    K = S.shape[0]
    L = np.empty_like(S)
    for n in range(1, K + 1):
        acc = n * S[n - 1]
        for j in range(1, n):
            acc = acc - j * L[j - 1] * S[n - j - 1]
        L[n - 1] = acc / n
    return L


class SquaredErrorTerms:
    """Changes of ``sum_ik (z_ik - Y_ik)^2 / 2``: ``d (r + d/2)`` with ``r = z - Y``, exact (a polynomial).

    Series: the change is ``r D(tau) + D(tau)^2 / 2``, whose Taylor coefficients are exact; the bound for
    complex ``tau``: ``|d (r + d/2)| <= rho b (max|r| + 1/2)`` while ``rho b <= 1``.
    """

    def __init__(self, Z: NDArray, Y: NDArray) -> None:
        self.Z, self.Y = Z, Y
        self.Rs = Z - Y
        self.eps = float(np.finfo(Z.dtype).eps)
        self.cost_sum = float(0.5 * np.sum(self.Rs.astype(np.float64) ** 2))
        self.rmax = np.max(np.abs(self.Rs), axis=0).astype(np.float64)

    def magnitude(self) -> NDArray:
        """``dL/dz = z - Y`` is formed from ``z`` and ``Y``: their magnitudes."""
        return np.abs(self.Z.astype(np.float64)) + np.abs(self.Y.astype(np.float64))

    def slope_scale(self) -> float:
        return float(np.sum(np.abs(self.Rs) * (np.abs(self.Z) + 1)))

    def budget(self) -> float:
        return 1e-1 * self.eps * max(self.cost_sum, float(np.finfo(np.float64).tiny))

    def column(self, k: int, d: NDArray) -> NDArray:
        return np.sum(d * (self.Rs[:, k] + d / 2), axis=1)

    def second_order(self, d: NDArray) -> NDArray:
        """The coefficient of ``tau^2`` per batch item and example, ``(B, m)``, for the logits moving by
        ``tau d``: ``sum_k d_ik^2 / 2``."""
        return 0.5 * np.sum(d * d, axis=2)

    def rank_one(self, u: NDArray, v: NDArray) -> NDArray:
        return u @ (self.Rs @ v) + 0.5 * np.sum(u * u, axis=1) * float(v @ v)

    def dense(self, d: NDArray, with_noise: bool = False) -> Any:
        terms = d * (self.Rs + d / 2)
        total = np.sum(terms, axis=(1, 2))
        if with_noise:
            return total, 4 * self.eps * np.sum(np.abs(terms), axis=(1, 2))
        return total

    def total(self, d: NDArray) -> float:
        return float(self.dense(d[None])[0])

    def series(self, change: SeriesChange) -> NDArray:
        """Per-example coefficients ``(K, B, m)`` of ``sum_k r D + D^2 / 2``."""
        c = change.coeffs
        K = c.shape[0]
        if change.cols is not None:
            lin = self.Rs.T[change.cols][None] * c  # (K, B, m)
            sq = c
            w = 1.0
        elif change.v is not None:
            lin = (self.Rs @ change.v.T).T[None] * c  # sum_k r_ik v_k, times c
            sq = c
            w = np.sum(change.v * change.v, axis=1)[:, None]
        else:
            lin = np.sum(self.Rs[None, None] * c, axis=-1)
            sq = c
            w = None
        out = np.array(lin, dtype=np.result_type(lin, np.float64))
        for n in range(2, K + 1):
            acc = sum(sq[j - 1] * sq[n - j - 1] for j in range(1, n))
            if w is None:
                acc = np.sum(acc, axis=-1)
            else:
                acc = acc * w
            out[n - 1] += 0.5 * acc
        return out

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        return b @ (self.rmax + 0.5), strip_limit(b, 1.0)


#: The rule of each loss class (exactly these classes: a subclass may compute something else).
RULES: dict[type, Callable[[NDArray, NDArray], Any]] = {
    SigmoidCrossEntropy: SigmoidCrossEntropyTerms,
    SoftmaxCrossEntropy: SoftmaxCrossEntropyTerms,
    MeanSquaredError: SquaredErrorTerms,
}


#: The members of a loss its rule restates: one of them set on the instance makes it another loss.
LOSS_MEMBERS = ("targets", "value_and_grad", "predict_proba", "predict", "fuses_sigmoid")


def has_loss_rule(net: Any) -> bool:
    """Whether the engine has a rule for ``net``'s loss as the network uses it: a loss of exactly one of the
    classes of :data:`RULES`, none of its math set on the instance, and the sigmoid cross-entropy only on
    logits (the final Sigmoid fused in)."""
    loss = getattr(net, "loss", None)
    cls = type(loss)
    if cls not in RULES or any(name in getattr(loss, "__dict__", {}) for name in LOSS_MEMBERS):
        return False
    return bool(net.fused_sigmoid) if cls is SigmoidCrossEntropy else True


def loss_rule(loss: Any, Z: NDArray, Y: NDArray) -> Any:
    """The rule of ``loss`` at logits ``Z`` and targets ``Y``."""
    return RULES[type(loss)](Z, Y)
