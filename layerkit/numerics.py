"""Numerical constants and small formulas that several wings share: one home each.

* :func:`machine_eps`: the unit roundoff of a real or complex dtype's real part; :func:`least_precise`: of
  several arrays' dtypes, the one a computation through all of them rounds like.
* :data:`AGREEMENT`: how many times their combined rounding (or noise) two computations of the same number
  may differ by and still count as agreeing.  Used where the fast engine's prediction is compared with the
  network's own cost, and where a layer's rule is compared with its ``forward``: a disagreement beyond it
  is a different model, not rounding.
* :func:`scaled`: the length scale of an axis, that automatic steps are relative to.
* :class:`Direction`: a unit direction on a range of the flat parameter vector.
* :data:`NOISE_C`: the relative rounding of one term the engine adds up, in units of ``eps``, before the
  growth that a sum of ``m`` such terms brings (``sqrt(m)`` for random signs, see
  :func:`layerkit.fast.state.magnitudes`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

#: Allowed disagreement between two computations of one number, in units of their combined rounding.
AGREEMENT = 64.0
#: Relative rounding of one engine term, before the factor that sums of ``m`` of them add.
NOISE_C = 4.0


def machine_eps(dtype: Any) -> float:
    """Machine epsilon of a real or complex dtype's real part."""
    return float(np.finfo(np.dtype(dtype)).eps)


def least_precise(dtype: Any, *arrays: Any) -> np.dtype:
    """The least precise real floating dtype among ``dtype`` and the ``arrays``' own (a float64 computation
    through one float32 array rounds like float32); ``dtype`` when it is not a floating dtype."""
    out = np.dtype(dtype)
    if out.kind not in "fc":
        return out
    out = np.dtype(np.finfo(out).dtype)
    for a in arrays:
        d = np.asarray(a).dtype if not isinstance(a, np.dtype) else a
        if d.kind in "fc" and machine_eps(d) > machine_eps(out):
            out = np.dtype(np.finfo(d).dtype)
    return out


def scaled(magnitude: NDArray, axis_scale: NDArray | None) -> NDArray:
    """The length scale of each axis that automatic steps are relative to: ``max(1, |x_j|) / s_j``."""
    out = np.maximum(1.0, magnitude)
    return out if axis_scale is None else out / axis_scale


@frozen(eq=False)
class Direction:
    """A unit direction supported on the flat range ``[lo, hi)`` of the parameter vector: ``u`` has
    ``hi - lo`` entries.  A coordinate ``e_j`` is ``Direction(j, j + 1, [1.0])``."""

    lo: int
    hi: int
    u: NDArray
