"""The rule of an :class:`~layerkit.Elementwise` layer that is not one of layerkit's own: everything from its
``fn``, which is what its ``forward`` computes.  Nothing else the layer says about itself (``derivative``,
``change``, ``taylor``, ``strip``, ``slope``) is used: the cost is the only truth.

Changes are ``fn(x + d) - fn(x)`` (they cancel: about ``eps |f|`` of rounding each, which the engine's noise
counts).  Taylor coefficients, for the engine's tables, are derived from ``fn`` itself when it is analytic
and accepts complex input: on a circle ``x + r w^k`` (``w = exp(2 pi i / N)``, ``k = 0..N-1``) around every
entry, ``g_k = fn(x + r w^k) - fn(x)`` and its discrete Fourier transform ``C_n`` give ``f^(n)(x) / n! =
C_n / r^n``.  That is exact up to aliasing, ``c_(n+N) r^N``, which the negative frequencies ``C_(N-n)`` (zero
for a function analytic inside the circle) measure: the radius shrinks until they vanish below
:data:`ALIASING` of the samples' change (or their rounding, :data:`ROUNDING`), so the coefficients are as
accurate as the samples are.  Fewer points need a smaller circle (``c_(N/2) r^(N/2)`` must vanish: ``r`` below
about ``0.02 rho`` with 16 points, ``0.13 rho`` with 32, ``rho`` the distance to the nearest singularity), and
each coefficient's rounding grows as the circle shrinks (``eps max |f| / r^n``); the circles of
:data:`CIRCLES` are tried cheapest first, and the first clear one is used.  A ``fn`` real on the real axis and analytic is mirrored, ``fn(conj z) = conj
fn(z)`` (Schwarz reflection): once a sample of the entries shows it on the whole circle, the lower half of each
circle is the conjugate of the upper half, and only ``N / 2 + 1`` points are evaluated.  The same samples
bound the change for complex ``d``: on the circle ``|g| <= sum_n |C_n|`` (the Fourier series), and inside it,
by Schwarz's lemma, ``|g(d)| <= sum_n |C_n| |d| / r`` -- which certifies the tables' truncation
(:meth:`FnRule.series_bound`).  A ``fn`` that refuses complex input, drops the imaginary part or is not
analytic near the point (``abs``, ``maximum``, comparisons) has no derived series, and the engine takes the
exact path of its changes instead.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .changes import (
    Change,
    SeriesChange,
    compose_series,
    elementwise_change,
    rank_one_series,
    strip_limit,
)

#: Points on each circle, fewest first.  16 give the 8 coefficients a series of
#: :data:`~layerkit.fast.series.MAX_SERIES_TERMS` terms composes.
POINTS = (16, 32)
#: Radii tried, largest first (relative to 1: the inputs of an activation are of order 1).
RADII = (0.25, 0.0625, 0.015625)
#: The circles tried, ``(points, radius)``, in order: fewest points first (each is one complex evaluation of
#: ``fn`` per point and entry, the cost of the series), then the largest radius.  ``tanh``, with singularities
#: at ``pi / 2`` from the real axis, is read on 16 points at ``r = 1/64``: the coefficient ``T_1`` to about
#: ``64 eps`` of ``max |f|``, far below the rounding of the exact path the engine charges (:attr:`FnRule.derived`).
CIRCLES = tuple((n, r) for n in POINTS for r in RADII)
#: Negative-frequency content allowed, relative to the samples' largest change: below it the circle holds no
#: singularity and the aliasing of the coefficients is at the level of the samples' rounding.
ALIASING = 1e-14
#: The samples' rounding, in float64 ``eps`` of ``max |f|`` on the circle: negative frequencies at that level
#: are the samples' rounding, not a singularity (the coefficients carry it anyway, see :attr:`FnRule.derived`).
ROUNDING = 8 * float(np.finfo(np.float64).eps)
#: Most elements of one complex evaluation of ``fn`` (points times entries): 1 MB of complex samples, so that
#: ``fn``'s temporaries and the transforms stay in the cache.
CHUNK = 1 << 16
#: Entries of each kind (smallest, largest, random) sampled before a circle is tried around every entry.
SAMPLE = 64


def _spectrum(g: NDArray, mirrored: bool, points: int) -> NDArray:
    """The discrete Fourier coefficients of the samples ``g`` (``(points, rows, n)``) over a circle of
    ``points``, divided by ``points``, same layout: real from the upper half of a conjugate-symmetric sequence
    (``mirrored``: hfft), else complex.  The transforms run along memory, on a transposed copy (about twice as
    fast as along the first axis)."""
    lines = np.ascontiguousarray(np.moveaxis(g, 0, -1))
    C = np.fft.hfft(lines, n=points, axis=-1) if mirrored else np.fft.fft(lines, axis=-1)
    return np.ascontiguousarray(np.moveaxis(C, -1, 0)) / points


def _circle(points: int) -> NDArray:
    """The ``points`` roots of unity ``w^k``, with ``w^(N - k)`` exactly the conjugate of ``w^k``."""
    half = points // 2
    up = np.exp(2j * np.pi * np.arange(half + 1) / points)
    up[0], up[half] = 1, -1
    return np.concatenate([up, np.conj(up[1:half][::-1])])


class Unavailable(Exception):
    """``fn`` has no derived series here (module docstring); the engine uses its exact path instead."""


class FnRule:
    """``propagate``, ``series`` and ``series_bound`` of an Elementwise layer from its ``fn`` (module
    docstring).  ``columnwise``: the layer is taken to act on each entry alone, which the confirmation of
    its rules against ``forward`` (on every example, with column, rank-one and dense changes) checks."""

    cancels = True
    #: The coefficients are computed, from samples rounded to ``eps |f|``: ``|dC_n| <= 2 eps max |f|`` on the
    #: circle, so a table's change through this layer carries at most ``2 eps max |f| (|d| / r) / (1 - |d| / r)``
    #: of rounding -- below the ``eps (|y| + |x f'|)`` of the exact path's subtraction wherever the tables are
    #: certified (``|d| < r``, up to the factor ``1 / (1 - |d| / r)``), which the engine therefore charges for
    #: tables through this layer too.
    derived = True

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self._memo: tuple[NDArray, NDArray, NDArray, float] | None = None

    def columnwise(self, x: NDArray, y: NDArray) -> bool:
        return True

    def _diff(self, x: NDArray, y: NDArray, d: NDArray) -> NDArray:
        return np.asarray(self.layer.fn(x + d)) - y

    def propagate(self, x: NDArray, y: NDArray, change: Change) -> Change:
        """``fn(x + D) - fn(x)``; a column change stays a column change."""
        return elementwise_change(self._diff, x, y, change)

    # ------------------------------------------------------------------ the derived series
    def coefficients(self, x: NDArray, y: NDArray) -> tuple[NDArray, NDArray, float]:
        """``(T, L, r)``: ``T[n - 1] = f^(n)(x) / n!`` for ``n = 1..N/2`` (float64, ``(N/2,) + x.shape``; ``N``
        the points of the circle used, :data:`CIRCLES`), per unit ``L[l] >= |fn(x + d) - fn(x)| / |d|`` for
        complex ``|d| <= r`` over the examples, and ``r``.  Raises :class:`Unavailable`.  Computed once per
        input."""
        memo = self._memo
        if memo is not None and memo[0] is x:
            return memo[1], memo[2], memo[3]
        for points, r in CIRCLES:
            clear, mirrored = self._sample_clear(x, y, r, points)
            if not clear:
                continue  # a sample of entries already holds a singularity (or a rounding) on this circle
            found = self._on_circle(x, y, r, mirrored, points)
            if found is not None:
                T, L = found
                self._memo = (x, T, L, r)
                return T, L, r
        raise Unavailable(f"{self.layer!r}: fn is not analytic within {RADII[-1]:g} of the point")

    def _sample_clear(self, x: NDArray, y: NDArray, r: float, points: int = POINTS[-1]) -> tuple[bool, bool]:
        """Whether the circle of radius ``r`` and ``points`` is clear (:meth:`_on_circle`) around a sample of the entries (the
        :data:`SAMPLE` smallest and largest in size and as many at random), and whether ``fn`` is mirrored there,
        ``fn(conj z) = conj fn(z)`` on the whole circle around every sampled entry, within the samples' rounding
        (:data:`ROUNDING`) and :data:`ALIASING`.  Only a shortcut: past a circle that would fail, and to the
        upper half of the circle around every entry (:meth:`_on_circle`), which is tested around every entry
        still.  A small input is not sampled (True, False)."""
        flat, yf = x.reshape(-1), y.reshape(-1)
        if flat.size <= 3 * SAMPLE:
            return True, False
        size = np.abs(flat.astype(np.float64))
        pick = np.unique(np.concatenate([
            np.argpartition(size, SAMPLE)[:SAMPLE], np.argpartition(-size, SAMPLE)[:SAMPLE],
            np.random.default_rng(0x636972).choice(flat.size, SAMPLE, replace=False)]))
        xs, ys = flat[pick][:, None].astype(np.float64), yf[pick][:, None].astype(np.float64)
        f = self._samples(xs, r, False, points)
        if self._read(f, ys, r, False, points) is None:
            return False, False
        f = f[:, :, 0]
        half = points // 2
        upper, lower = f[1:half], f[half + 1:][::-1]  # points k and N - k = conj(k), for k = 1 .. N/2 - 1
        allowed = ALIASING * np.max(np.abs(f - ys.T), axis=0) + ROUNDING * np.max(np.abs(f), axis=0)
        mirrored = bool(np.all(np.abs(lower - np.conj(upper)) <= allowed + 1e-300)
                        and np.all(np.abs(f[[0, half]].imag) <= allowed + 1e-300))
        return True, mirrored

    def _on_circle(self, x: NDArray, y: NDArray, r: float, mirrored: bool = False, points: int = POINTS[-1]
                   ) -> tuple[NDArray, NDArray] | None:
        """``(T, L)`` of :meth:`coefficients` from the circle of radius ``r`` and ``points`` around every entry,
        in batches of :data:`CHUNK` samples, or None when
        it holds a singularity (negative frequencies above the samples' rounding).  ``mirrored``: ``fn`` was
        found to satisfy ``fn(conj z) = conj fn(z)`` (:meth:`_sample_clear`), as every function real on the real
        axis and analytic does (Schwarz reflection); its lower half circle is then the conjugate of its upper
        half, which alone is evaluated (``N / 2 + 1`` points instead of ``N``)."""
        m, n = x.shape
        half = points // 2
        T = np.empty((half, m, n))
        L = np.zeros(n)
        rows = max(1, CHUNK // ((half + 1 if mirrored else points) * n))
        for lo in range(0, m, rows):
            xs, ys = x[lo:lo + rows].astype(np.float64), y[lo:lo + rows].astype(np.float64)
            f = self._samples(xs, r, mirrored, points)
            if mirrored and not np.all(np.abs(f[[0, half]].imag) <= ROUNDING * np.abs(f[[0, half]].real) + 1e-300):
                return self._on_circle(x, y, r, False, points)  # not real at the real points: not mirrored after all
            read = self._read(f, ys, r, mirrored, points)
            if read is None:
                return None
            T[:, lo:lo + rows] = read[0]
            L = np.maximum(L, read[1])
        return T, L

    def _samples(self, xs: NDArray, r: float, mirrored: bool, points: int) -> NDArray:
        """``fn`` on the circle of radius ``r`` and ``points`` around each entry of ``xs`` (float64, ``(rows,
        n)``): shape ``(points, rows, n)``, or ``(points / 2 + 1, rows, n)`` for the upper half of a ``mirrored``
        one."""
        w = _circle(points)[:points // 2 + 1] if mirrored else _circle(points)
        z = (xs[None] + r * w[:, None, None]).reshape(-1, xs.shape[1])
        return self._complex_fn(z).reshape(w.size, -1, xs.shape[1])

    def _read(self, f: NDArray, ys: NDArray, r: float, mirrored: bool, points: int
              ) -> tuple[NDArray, NDArray] | None:
        """The coefficients ``T`` (``(points / 2, rows, n)``) and per-unit bound ``L`` (``(n,)``) read off the
        samples ``f`` of :meth:`_samples` around entries whose values are ``ys``, or None when the negative
        frequencies show a singularity inside the circle (or a function that is not analytic)."""
        half = points // 2
        g = f - ys[None]
        C = _spectrum(g, mirrored, points)
        scale = np.max(np.abs(g), axis=0)  # (the lower half's moduli are the upper half's)
        # the samples' own rounding, eps |f| (a saturated unit changes by far less than its value)
        rounding = ROUNDING * np.max(np.abs(f), axis=0)
        if not (np.all(np.isfinite(C)) and np.all(np.abs(C[half + 1:]) <= ALIASING * scale + rounding + 1e-300)):
            return None
        T = (C[1:half + 1] / r ** np.arange(1, half + 1)[:, None, None]).real
        return T, np.max(np.sum(np.abs(C[1:]), axis=0), axis=0) / r

    def _complex_fn(self, z: NDArray) -> NDArray:
        try:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("error", np.exceptions.ComplexWarning)
                out = np.asarray(self.layer.fn(z))
        except (TypeError, ValueError, AttributeError, np.exceptions.ComplexWarning) as exc:
            raise Unavailable(f"{self.layer!r}: fn does not take complex input ({type(exc).__name__})") from None
        if not np.iscomplexobj(out) or out.shape != z.shape:
            raise Unavailable(f"{self.layer!r}: fn drops the imaginary part of a complex input")
        return out

    def series(self, x: NDArray, y: NDArray, change: SeriesChange) -> SeriesChange:
        """``f(x + D(tau)) - f(x) = sum_n f^(n)(x) / n! D(tau)^n``, composed term by term, with the derived
        coefficients."""
        T = self.entry_series(x, y, change.coeffs.shape[0]).astype(change.coeffs.dtype)
        if change.cols is not None:
            return SeriesChange(compose_series(T[:, :, change.cols].transpose(0, 2, 1), change.coeffs), change.cols)
        if change.v is not None:
            return rank_one_series(T, change)
        return SeriesChange(compose_series(T[:, None], change.coeffs))

    def entry_series(self, x: NDArray, y: NDArray, K: int) -> NDArray:
        """The derived ``f^(n)(x) / n!`` for ``n = 1..K`` (float64, ``(K,) + x.shape``; :meth:`coefficients`).
        Raises :class:`Unavailable` past the coefficients the circle gives."""
        T = self.coefficients(x, y)[0]
        if K > T.shape[0]:
            raise Unavailable(f"{self.layer!r}: a series of {K} terms needs more coefficients than the circle gives")
        return T[:K]

    def series_bound(self, b: NDArray) -> tuple[NDArray, NDArray]:
        """``|fn(x + d) - fn(x)| <= L_l |d|`` for complex ``|d| <= r`` (module docstring): the bound scales by
        each unit's ``L_l``, for ``rho <= r / max_l b[B, l]``."""
        memo = self._memo
        if memo is None:
            raise Unavailable(f"{self.layer!r}: the series bound needs the coefficients first")
        _, _, L, r = memo
        return b * L[None, :], strip_limit(b, r)
