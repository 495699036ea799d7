"""The tolerance of a compared entry: one formula for every method, mode and probe.

An entry passes when ``|n - a| <= rtol max(|n|, |a|) + atol``, where ``n`` is the numerical estimate and
``a`` the analytic gradient.  The two terms bound the two sources of honest disagreement:

* ``atol_j = SAFETY (noise_j + truncation_j) + floor``: the error of the numerical estimate, from its
  :class:`~layerkit.check.methods.Estimate` (the noise of the cost differences divided by the step, and the
  truncation, each per entry), times a safety factor of 16 that absorbs the constants of the model.  A
  truncation *measured* on an exact evaluator (the change of the estimate from ``h`` to ``h / 2``, divided by
  ``1 - 2^-p``: the leading error term itself, with the next one at a fraction ``h / l`` of it) needs only
  :data:`MEASURED_SAFETY` = 6, which keeps a float32 forward difference's tolerance within about 6 to 10 times its
  true error (4 for the truncation, plus the rounding bound's own share);
* ``rtol = max(32 eps, estimate.relative)``: the analytic gradient's own rounding, relative (a float64
  backprop agrees with the exact gradient to a few ``eps``; the complex step adds its ``64 eps``).

``floor = max(32 eps max |a|, tiny / eps)`` keeps entries whose gradient is exactly zero from demanding an
exact zero of the estimate; it is proportional to ``eps``, so even a gradient dominated by a large penalty
keeps its small entries checked to about ``1e-14`` relative of the largest.  ``tiny / eps`` (9.9e-32 in
float32, 1.0e-292 in float64) bounds what underflow takes from an entry: each product that flushes below
``tiny`` loses at most ``tiny``, and ``2^23`` (float32) or ``2^52`` (float64) of them make that floor.  It is
no larger, because a floor is an error the check accepts whatever the gradient: a cost of ``1e-26`` in float32
has a gradient its differences resolve to a few digits, and a floor of ``sqrt(tiny)`` (1.1e-19) would pass
that gradient negated.  A nonzero gradient that lies wholly below the floor is not resolved, and the check
says INCONCLUSIVE (:func:`~layerkit.check.verdicts.below_floor`).

A failing entry gets a second look (:mod:`layerkit.check.refine`) before it is reported, so a tolerance
that is too tight costs evaluations, never a false alarm; one that is too loose would pass a wrong
gradient, so nothing here is inflated by the size of the cost.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..numerics import machine_eps
from .methods import Estimate

#: Safety factor between the estimated error of a numerical derivative and its tolerance.
SAFETY = 16.0
#: The safety factor on a truncation measured alone on an exact evaluator (module docstring).
MEASURED_SAFETY = 6.0
#: The analytic gradient's relative rounding, in units of ``eps``.
ANALYTIC_ROUNDING = 32.0


def floor_of(largest: float, dtype: Any) -> float:
    """``32 eps largest``, and at least ``tiny / eps`` of the dtype (9.9e-32 in float32, 1.0e-292 in float64):
    what products that underflow can take from an entry (module docstring)."""
    info = np.finfo(np.dtype(dtype))
    return max(ANALYTIC_ROUNDING * float(info.eps) * largest, float(info.tiny) / float(info.eps))


def floor(analytical: NDArray, dtype: Any) -> float:
    """:func:`floor_of` the largest finite entry of the whole analytic gradient."""
    a = np.asarray(analytical, dtype=np.float64)
    return floor_of(float(np.max(np.abs(a[np.isfinite(a)]), initial=0.0)), dtype)


def error_bound(noise: Any, truncation: Any, measured: bool = False) -> Any:
    """``SAFETY (noise + truncation)``: the numerical estimate's own error, what it cannot resolve (with
    :data:`MEASURED_SAFETY` on a measured truncation)."""
    return SAFETY * noise + (MEASURED_SAFETY if measured else SAFETY) * truncation


def relative_tolerance(dtype: Any, relative: float = 0.0) -> float:
    """``max(32 eps, relative)``: the analytic gradient's own rounding, or the estimate's relative one."""
    return max(ANALYTIC_ROUNDING * machine_eps(dtype), float(relative))


def tolerances(estimate: Estimate, analytical: NDArray, dtype: Any, scale: NDArray | None = None
               ) -> tuple[float, NDArray]:
    """``(rtol, atol)`` for the entries of ``estimate`` against ``analytical`` (both shape (n,)); the floor
    comes from ``scale`` (the whole analytic gradient) when the entries are a part of it."""
    n = estimate.values.shape
    noise = np.zeros(n) if estimate.noise is None else np.asarray(estimate.noise, dtype=np.float64)
    trunc = np.zeros(n) if estimate.truncation is None else np.asarray(estimate.truncation, dtype=np.float64)
    with np.errstate(invalid="ignore", over="ignore"):
        atol = error_bound(noise, trunc, estimate.measured) + floor(analytical if scale is None else scale, dtype)
    return relative_tolerance(dtype, estimate.relative), atol


def directional_tolerance(numerical: float, analytical: float, noise: float, truncation: float, dtype: Any,
                          relative: float = 0.0, reach: float = 0.0) -> float:
    """The same formula for one directional derivative ``u . g``, its floor from the larger of ``|u . g|`` and
    ``reach = ||u|| max |a|`` (``max |a|`` over the whole analytic gradient): the analytic gradient's rounding
    along ``u``, entry by entry the full check's ``32 eps max |a|``.  A direction inside a block of tiny entries
    (a saturated corner) is judged as the full check judges those entries, not to ``eps`` of themselves."""
    return relative_tolerance(dtype, relative) * max(abs(numerical), abs(analytical)) \
        + error_bound(noise, truncation) + floor_of(max(abs(analytical), reach), dtype)
