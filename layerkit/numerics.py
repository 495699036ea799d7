"""Numerical constants and small formulas that several wings share: one home each.

* :func:`machine_eps`: the unit roundoff of a real or complex dtype's real part.
* :data:`AGREEMENT`: how many times their combined rounding (or noise) two computations of the same number
  may differ by and still count as agreeing.  Used where the fast engine's prediction is compared with the
  network's own cost, and where a layer's rule is compared with its ``forward``: a disagreement beyond it
  is a different model, not rounding.
* :data:`NOISE_C`: the relative rounding of one term the engine adds up, in units of ``eps``, before the
  growth that a sum of ``m`` such terms brings (``sqrt(m)`` for random signs, see
  :func:`layerkit.fast.state.magnitudes`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: Allowed disagreement between two computations of one number, in units of their combined rounding.
AGREEMENT = 64.0
#: Relative rounding of one engine term, before the factor that sums of ``m`` of them add.
NOISE_C = 4.0


def machine_eps(dtype: Any) -> float:
    """Machine epsilon of a real or complex dtype's real part."""
    return float(np.finfo(np.dtype(dtype)).eps)
