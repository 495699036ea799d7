"""A second look at the entries that failed: the best numerical derivative a ladder of steps can give.

A check's first estimate uses one step per entry, from an error model.  When the model misjudges an entry
(a saturated unit whose cost bends within the step, a cost noisier than assumed), the entry fails although
the gradient is right.  Before such an entry is reported it is measured again, the way numdifftools does
it: central differences at eight steps ``h_k = 4 h, h, h/4, ..., h/4096`` (``h``: Richardson's automatic
step; the lower rungs reach the cost's own length scale when a saturated unit bends it much faster than the
parameter's size suggests), their Richardson extrapolations ``R_k = (16 D_(k+1) - D_k) / 15``, and for each entry the candidate
whose estimated error is smallest, with the error estimated from the data, not assumed:

* ``D_k``: truncation ``|D_(k-1) - D_k| / 15`` (``D_(k-1)`` has 16 times its ``h^2`` error), or
  ``16 |D_k - D_(k+1)| / 15`` if that is larger;
* ``R_k``: truncation ``|R_(k-1) - R_k| / 255`` or ``|R_k - R_(k+1)|`` (``R_(k+1)`` has 1/256 of its ``h^4``
  error), whichever is larger;

each judged against both neighbours, so that two estimates far off but close by chance cannot pass for an
accurate one;

and each plus its noise, the probe's bound on the cost differences divided by the step.  On an engine that
knows its layers' kinks, the ladder of an entry whose top step would carry an example across one starts
below it instead (:func:`~layerkit.check.methods.smooth_steps`), as the first estimate did: a ladder across
a kink measures secants, not the derivative at the point.  16 evaluations per entry; the tolerance is then
built as for any estimate (:mod:`layerkit.check.tolerance`).

:func:`confirms` is the cheap test that comes first: a central difference at a quarter of the step (2
evaluations).  Where it agrees with the first estimate to a quarter of its tolerance, that estimate stands
and the ladder is not needed: a wrong gradient, which fails by far more than any step explains, costs only
those 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from ..numerics import machine_eps
from .methods import Estimate, auto_steps, smooth_steps
from .tolerance import SAFETY

#: Steps in the ladder, and the ratio between consecutive ones.
LADDER = 8
RATIO = 4.0
#: Steps of the wide ladder of :func:`across_scales`, which starts two rungs above the ladder's top.
WIDE = 10
#: Rungs that must resolve a mismatch, none of them agreeing with the analytic value, for
#: :func:`across_scales` to call it established.
ESTABLISHED = 5


@frozen
class Scales:
    """What :func:`across_scales` found for each entry (shape ``(n,)`` each): ``agree`` -- some rung that
    resolves the mismatch agrees with the analytic value (the estimates contradict each other across
    scales); ``established`` -- at least :data:`ESTABLISHED` rungs resolve it and none agrees; ``resolving``
    -- how many rungs resolve it; and for the entries that agree, the step and value of such a rung."""

    agree: NDArray
    established: NDArray
    resolving: NDArray
    step: NDArray
    value: NDArray


#: A wide ladder's evaluations: ``(steps, delta, noise)``, each of shape ``(2 WIDE, n)``: the (real) steps
#: ``+h_k`` (rows ``0 .. WIDE - 1``, largest first), then ``-h_k``, the cost differences there and their noise.
Ladder = tuple[NDArray, NDArray, NDArray]


def wide_ladder(probe: Any, top: NDArray | None = None) -> Ladder:
    """The evaluations of :func:`across_scales` along each of ``probe``'s axes (``2 WIDE`` per axis): on
    each side, ``WIDE`` steps from ``16 h`` down by factors of 4 (``h``: the top of :func:`refine`'s ladder),
    or from ``top`` (per axis) when given.  The plus side alone is a Taylor-remainder ladder
    (:func:`~layerkit.check.directional.taylor_fit`)."""
    if top is None:
        eps = machine_eps(probe.dtype)
        excess = max(1.0, float(probe.noise_excess))
        top = smooth_steps(probe, auto_steps(probe, (eps * excess) ** 0.2 * RATIO) * RATIO**2, 1.0)
    plus = [probe.snap((top / RATIO**k).astype(probe.real_dtype)) for k in range(WIDE)]
    minus = [probe.snap((-top / RATIO**k).astype(probe.real_dtype)) for k in range(WIDE)]
    real = np.concatenate([np.stack(plus), np.stack(minus)])
    steps = real.astype(probe.dtype)
    d = probe.delta(steps)
    return real, d, probe.noise(steps)


def across_scales(probe: Any, analytical: Any, first: Any, ladder: Ladder | None = None,
                  smooth_from: NDArray | None = None, lost: float = 0.0) -> Scales:
    """Do estimates at different step scales contradict a mismatch?  Central differences at ``WIDE`` steps
    ``16 h, 4 h, h, ..., h / 4^7`` (``h``: the top of :func:`refine`'s ladder), each with the error estimate
    of its two neighbours (as in :func:`refine`) and its noise, and one Richardson level on each pair of
    consecutive rungs (``O(h^4)``, errors from its neighbours the same way), which resolve on a smooth cost
    what Richardson's or the complex step's first estimate did.  A rung *resolves* the mismatch
    ``|first - a|`` when ``SAFETY`` times its error is below half of it.  For a smooth cost every resolving
    rung tells the same story: a wrong gradient disagrees with all of them.  A rung that resolves the
    mismatch and agrees with ``a`` contradicts the first estimate: the cost's differences depend on the step
    more than a smooth cost's can (a staircase of rounded values -- ``log(1 - h)`` with ``h`` rounded near 1
    is flat within each stair, so a small step loses a term's slope -- or a float32 cost), and the mismatch
    cannot be blamed on the gradient.  20 evaluations per entry (:func:`wide_ladder`; none when ``ladder``
    holds them already).  ``smooth_from`` (per entry, a rung index): the rungs above it carry the cost across
    a kink it declares, where a central difference measures a secant (the mean of two slopes, for a kink far
    inside the step), and are left out.

    ``lost`` is the change a cost can round away (``eps max(|f0|, 1)``, the rounding of terms of order 1: a
    ``log(1 + x)`` of ``x`` below ``eps``): a rung at which the cost does not change at all, on either side,
    while the change the analytic value predicts there is below ``lost``, resolves nothing (the cost cannot
    tell that change from zero).  A cost that does not depend on the entry while its gradient says it does by
    more than its rounding is still resolved, and its mismatch established."""
    steps, d, sigma = wide_ladder(probe) if ladder is None else ladder
    n = probe.n_axes
    D, N, H = np.full((WIDE, n), np.nan), np.full((WIDE, n), np.inf), np.zeros((WIDE, n))
    plus, minus = steps[:WIDE], steps[WIDE:]
    for k in range(WIDE):
        width = plus[k].astype(np.float64) - minus[k].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            usable = (width != 0) if smooth_from is None else (width != 0) & (k >= smooth_from)
            D[k] = np.where(usable, (d[k] - d[WIDE + k]) / width, np.nan)
            N[k] = np.where(usable, (sigma[k] + sigma[WIDE + k]) / np.abs(width), np.inf)
        H[k] = np.abs(plus[k])
    f = RATIO**2
    E = np.full((WIDE, n), np.inf)
    with np.errstate(invalid="ignore", over="ignore"):
        for k in range(1, WIDE - 1):
            E[k] = np.maximum(np.abs(D[k - 1] - D[k]) / (f - 1), np.abs(D[k] - D[k + 1]) * f / (f - 1))
        # one Richardson level on each pair of rungs, O(h^4), with the error of its neighbours' change and the
        # noise of the combination: on a smooth cost these resolve what Richardson or the complex step did
        X = (f * D[1:] - D[:-1]) / (f - 1)
        NX = (f * N[1:] + N[:-1]) / (f - 1)
        EX = np.full(X.shape, np.inf)
        for k in range(1, X.shape[0] - 1):
            EX[k] = np.maximum(np.abs(X[k - 1] - X[k]) / (f * f - 1), np.abs(X[k] - X[k + 1]) * f * f / (f * f - 1))
        D, N, E, H = (np.concatenate([D, X]), np.concatenate([N, NX]), np.concatenate([E, EX]),
                      np.concatenate([H, H[1:]]))
        a = np.asarray(analytical, dtype=np.float64)
        bound = SAFETY * (np.nan_to_num(E, nan=np.inf) + N)
        mismatch = np.abs(np.asarray(first, dtype=np.float64) - a)
        # a non-finite first estimate (the cost overflowed at its step) is resolved by any finite rung
        half = np.where(np.isfinite(mismatch), mismatch / 2, np.inf)
        resolving = np.isfinite(D) & (bound < half)
        # a rung whose changes are both exactly zero where the analytic value predicts less than ``lost``
        # measured nothing; a Richardson level is as blind as either of its rungs
        raw = np.asarray(d)
        blind = (raw[:WIDE] == 0) & (raw[WIDE:] == 0) & (np.abs(a) * H[:WIDE] <= lost)
        resolving &= ~np.concatenate([blind, blind[1:] | blind[:-1]])
        agreeing = resolving & (np.abs(D - a) <= bound)
    agree = np.asarray(agreeing.any(axis=0))
    count = resolving.sum(axis=0)
    k = np.argmax(agreeing, axis=0)
    cols = np.arange(n)
    return Scales(agree, (count >= ESTABLISHED) & ~agree, count, np.where(agree, H[k, cols], np.nan),
                  np.where(agree, D[k, cols], np.nan))


def confirms(probe: Any, values: Any, step: Any, tolerance: Any) -> Any:
    """Which first estimates ``values`` (differences at steps ``step``, failing with tolerances
    ``tolerance``) a central difference at ``step / 4`` confirms: within a quarter of the tolerance, so that
    the first estimate's error is clearly below its tolerance and its failure is the gradient's.  2
    evaluations per entry; the others get the ladder (the first estimate may have been off: a model that
    misjudged the truncation or the noise)."""
    h = probe.snap((np.asarray(step) / 4).astype(probe.real_dtype))
    hm = probe.snap((-np.asarray(step) / 4).astype(probe.real_dtype))
    usable = (h != 0) & (hm != 0)
    d = probe.delta(np.stack([np.where(usable, h, 0), np.where(usable, hm, 0)]).astype(probe.dtype))
    with np.errstate(invalid="ignore", divide="ignore"):
        small = (d[0] - d[1]) / (h.astype(np.float64) - hm.astype(np.float64))
        return usable & (np.abs(small - np.asarray(values, dtype=np.float64)) <= np.asarray(tolerance) / 4)


def refine(probe: Any) -> Estimate:
    """The best estimate along each of ``probe``'s axes (module docstring), as an :class:`Estimate` whose
    ``truncation`` and ``noise`` are the chosen candidate's."""
    eps = machine_eps(probe.dtype)
    excess = max(1.0, float(probe.noise_excess))
    top = smooth_steps(probe, auto_steps(probe, (eps * excess) ** 0.2 * RATIO), 1.0)
    n = probe.n_axes
    D, N, H = np.full((LADDER, n), np.nan), np.full((LADDER, n), np.inf), np.zeros((LADDER, n))
    plus, minus, rows = [], [], []
    for k in range(LADDER):
        hp = probe.snap((top / RATIO**k).astype(probe.real_dtype))
        hm = probe.snap((-top / RATIO**k).astype(probe.real_dtype))
        usable = (hp != 0) & (hm != 0)
        if not usable.any():
            continue
        plus.append(np.where(usable, hp, 0))
        minus.append(np.where(usable, hm, 0))
        rows.append((k, usable))
    steps = np.concatenate([np.stack(plus), np.stack(minus)]).astype(probe.dtype)
    d = probe.delta(steps)
    sigma = probe.noise(steps)
    L = len(rows)
    for row, (k, usable) in enumerate(rows):
        width = plus[row].astype(np.float64) - minus[row].astype(np.float64)
        with np.errstate(invalid="ignore", divide="ignore"):
            D[k] = np.where(usable, (d[row] - d[L + row]) / width, np.nan)
            N[k] = np.where(usable, (sigma[row] + sigma[L + row]) / np.abs(width), np.inf)
        H[k] = np.abs(plus[row])
    candidates_v, candidates_e, candidates_n = [], [], []
    f = RATIO**2
    with np.errstate(invalid="ignore"):
        for k in range(1, LADDER - 1):  # D_k, judged against both neighbours
            candidates_v.append(D[k])
            candidates_e.append(np.maximum(np.abs(D[k - 1] - D[k]) / (f - 1), np.abs(D[k] - D[k + 1]) * f / (f - 1)))
            candidates_n.append(N[k])
        R = [(f * D[k + 1] - D[k]) / (f - 1) for k in range(LADDER - 1)]
        NR = [(f * N[k + 1] + N[k]) / (f - 1) for k in range(LADDER - 1)]
        for k in range(1, LADDER - 2):
            candidates_v.append(R[k])
            candidates_e.append(np.maximum(np.abs(R[k - 1] - R[k]) / (f * f - 1), np.abs(R[k] - R[k + 1])))
            candidates_n.append(NR[k])
    V, E, NN = np.array(candidates_v), np.array(candidates_e), np.array(candidates_n)
    total = np.where(np.isfinite(V) & np.isfinite(E), E + NN, np.inf)
    best = np.argmin(total, axis=0)
    cols = np.arange(n)
    values = V[best, cols]
    err = E[best, cols]
    noise = NN[best, cols]
    n_d = LADDER - 2  # the first candidates are the D_k, k = 1..LADDER-2, then the R_k, k = 1..LADDER-3
    rung = np.where(best < n_d, best + 1, np.minimum(best - n_d + 2, LADDER - 1))
    step = H[rung, cols]
    return Estimate(np.nan_to_num(values, nan=np.nan), step, noise=noise, truncation=err, error=err)
