"""Is the complex step applicable?  A comparison with real differences along one random direction.

The complex step ``Im J(x + i h u) / h`` is the derivative only when the cost is analytic in its parameters.
Code with ``abs``, comparisons, ``max``, ``np.real`` or branches on values still runs on complex numbers but
loses the imaginary part's meaning: ``|x + i h|`` is real, so the derivative of ``abs`` comes out 0.  Before a
check trusts the method, :func:`confirm_analytic` compares it, along a seeded random direction, with a
Richardson extrapolation of central differences of the real cost (4 real and 1 complex evaluation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import ComplexEvaluationError
from .methods import machine_eps
from .tolerance import SAFETY


def confirm_analytic(value: Any, x0: Any, noise_level: float, noise_excess: float = 1.0, seed: int = 0) -> int:
    """Raise :class:`~layerkit.errors.ComplexEvaluationError` unless the complex step along a random direction
    agrees with real differences within their error; ``value(theta)`` is the cost.  Returns the evaluations
    used."""
    rng = np.random.default_rng(seed + 1)
    scale = np.maximum(1.0, np.abs(np.asarray(x0, dtype=np.float64)))
    u = rng.standard_normal(x0.size) * scale
    u /= np.linalg.norm(u)
    eps = machine_eps(x0.dtype)
    h = eps**2
    cdt = np.result_type(x0.dtype, np.complex64)
    try:
        with np.errstate(all="ignore"):
            fc = value(x0.astype(cdt) + (1j * h * u).astype(cdt))
    except (TypeError, ValueError) as exc:
        raise ComplexEvaluationError(
            f"the target cannot be evaluated at complex parameters: {type(exc).__name__}: {exc}; "
            "use method='central' or 'richardson' instead") from None
    if not np.iscomplexobj(np.asarray(fc)):
        raise ComplexEvaluationError(
            "the target cannot be evaluated at complex parameters: it returned a real cost for a complex "
            "input, so the imaginary part was lost; use method='central' or 'richardson' instead")
    cs = float(np.imag(np.asarray(fc).reshape(-1)[0])) / h
    t = (eps * max(1.0, noise_excess)) ** 0.2 * 4
    vals = []
    for tk in (t, t / 2):
        with np.errstate(all="ignore"):
            fp = float(np.real(np.asarray(value(x0 + (tk * u).astype(x0.dtype))).reshape(-1)[0]))
            fm = float(np.real(np.asarray(value(x0 - (tk * u).astype(x0.dtype))).reshape(-1)[0]))
        vals.append((fp - fm) / (2 * tk))
    rich = (4 * vals[1] - vals[0]) / 3
    err = abs(rich - vals[1]) + 2 * noise_level / t
    if not abs(cs - rich) <= SAFETY * err + 64 * eps * max(abs(cs), abs(rich)):
        raise ComplexEvaluationError(
            f"the complex step is not applicable: along a random direction it gives a derivative of {cs:.10g} "
            f"while real differences give {rich:.10g} (+- {err:.1e}); the code is not analytic in its "
            "parameters (abs, comparisons, max, np.real, conditionals on values), so the imaginary part "
            "does not carry the derivative; use method='central' or 'richardson' instead")
    return 5
