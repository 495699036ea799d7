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

and each plus its noise, the probe's bound on the cost differences divided by the step.  16 evaluations per
entry; the tolerance is then built as for any estimate (:mod:`layerkit.check.tolerance`).

:func:`confirms` is the cheap test that comes first: a central difference at a quarter of the step (2
evaluations).  Where it agrees with the first estimate to a quarter of its tolerance, that estimate stands
and the ladder is not needed: a wrong gradient, which fails by far more than any step explains, costs only
those 2.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .methods import Estimate, auto_steps, machine_eps

#: Steps in the ladder, and the ratio between consecutive ones.
LADDER = 8
RATIO = 4.0


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
    excess = max(1.0, float(getattr(probe, "noise_excess", 1.0)))
    top = auto_steps(probe, (eps * excess) ** 0.2 * RATIO)
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
