"""Is the complex step applicable?  A comparison with real differences along random directions.

The complex step ``Im J(x + i h u) / h`` is the derivative only when the cost is analytic in its parameters.
Code with ``abs``, comparisons, ``max``, ``np.real`` or branches on values still runs on complex numbers but
loses the imaginary part's meaning: ``|x + i h|`` is real, so the derivative of ``abs`` comes out 0.  Before a
check trusts the method, :func:`confirm_analytic` compares it, along two seeded random directions, with the
best estimate of a ladder of central differences of the real cost (:func:`~layerkit.check.refine.refine`: 17
real and 1 complex evaluation per direction).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..errors import ComplexEvaluationError
from ..numerics import Direction, machine_eps
from .probes import CostDirections, LineProbe
from .refine import refine
from .tolerance import SAFETY


def confirm_analytic(value: Any, x0: Any, noise_level: float, noise_excess: float = 1.0,
                     seed: int = 0, n_directions: int = 2) -> tuple[int, NDArray]:
    """Raise :class:`~layerkit.errors.ComplexEvaluationError` unless the complex step along ``n_directions``
    random directions agrees with real differences within their error; ``value(theta)`` is the cost.

    Returns the evaluations used (18 per direction) and, per entry, the resolution of the confirmation: an
    error ``e_j`` of the complex step in entry ``j`` alone moves its derivative along ``u`` by ``e_j u_j``, so
    the comparison could only see it beyond ``(SAFETY err + |cs - real|) / |u_j|`` (the best over the
    directions).  A non-analytic part of the cost smaller than that cannot be told from noise, so a check must
    not claim the complex step to be more precise than it (see :mod:`layerkit.api`)."""
    rng = np.random.default_rng(seed + 1)
    scale = np.maximum(1.0, np.abs(np.asarray(x0, dtype=np.float64)))
    eps = machine_eps(x0.dtype)
    h = eps**2
    cdt = np.result_type(x0.dtype, np.complex64)
    resolution = np.full(x0.size, np.inf)
    for _ in range(n_directions):
        u = rng.standard_normal(x0.size) * scale
        u /= np.linalg.norm(u)
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
        f0 = float(np.real(np.asarray(value(np.array(x0, copy=True))).reshape(-1)[0]))
        line = CostDirections(value, x0, f0, noise_level=noise_level, rounding=False)
        est = refine(LineProbe(line, [Direction(0, x0.size, u)], np.ones(1), x0.dtype))
        assert est.truncation is not None and est.noise is not None  # a difference rule's estimate has both
        best, err = float(est.values[0]), float(est.truncation[0] + est.noise[0])
        allowed = SAFETY * err + 64 * eps * max(abs(cs), abs(best))
        if not abs(cs - best) <= allowed:
            raise ComplexEvaluationError(
                f"the complex step is not applicable: along a random direction it gives a derivative of "
                f"{cs:.10g} while real differences give {best:.10g} (+- {err:.1e}); the code is not analytic in "
                "its parameters (abs, comparisons, max, np.real, conditionals on values), so the imaginary part "
                "does not carry the derivative; use method='central' or 'richardson' instead")
        with np.errstate(divide="ignore"):
            resolution = np.minimum(resolution, (SAFETY * err + abs(cs - best)) / np.abs(u))
    return 18 * n_directions, resolution

