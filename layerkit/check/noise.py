"""How noisy is the cost?  A measured noise level, in the manner of Moré and Wild's ECnoise.

A computed cost ``f(x)`` is its exact value plus an error that behaves like noise: the rounding of every
operation, amplified where the code cancels (``log(1 - sigmoid(z))`` at large ``z``, ``1 - h`` by
subtraction), and, for a nondeterministic cost, real randomness.  A finite difference divides that error by
the step, so steps and tolerances must come from the noise the cost really has, not from ``eps |f|``.

The estimate (J. J. Moré and S. M. Wild, "Estimating computational noise", SIAM J. Sci. Comput. 33(3), 2011):
evaluate ``f`` at ``n + 1`` equally spaced points ``x + (i - n/2) delta u`` along a random unit direction
``u``, and form the difference table ``Delta^k f``.  Once ``delta`` is small enough that the smooth part of
``f`` contributes nothing to the ``k``-th differences, they are differences of noise, whose variance is
``(2k)! / (k!)^2`` times the noise variance; so::

    sigma_k = sqrt( gamma_k mean((Delta^k f)^2) ),    gamma_k = (k!)^2 / (2k)!

The level is accepted at the first order ``k`` where three consecutive estimates agree within a factor of 4
and the ``k``-th differences change sign (noise does; a smooth trend does not).  When every value is equal
``delta`` is too small, when no order qualifies it is too large; it is then moved by a factor of 100 and the
table is rebuilt (at most twice).

The level is never reported below the rounding of the value itself, ``eps |f(x)| / 2`` (the *floor*).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

#: Points per difference table besides ``x`` itself.
N_POINTS = 8
#: Highest difference order formed.
MAX_ORDER = 6


@frozen
class Noise:
    """The noise of one cost evaluation.

    Attributes
    ----------
    level : float
        Absolute noise of one evaluation (a standard deviation), at least :attr:`floor`.
    floor : float
        ``eps |f(x)| / 2``: the rounding of the value itself, what a cost without cancellation carries.
    measured : bool
        Whether :attr:`level` comes from a difference table (False: the floor is assumed, because the table
        was not built or was inconclusive).
    deterministic : bool
        Whether re-evaluating the cost at the same point gave the same value.
    n_evals : int
        Cost evaluations spent on the estimate.
    spacing : float
        The relative spacing ``delta`` of the accepted table (0 when none).
    order : int
        Difference order at which the level was accepted (0 when none).
    """

    level: float
    floor: float
    measured: bool = False
    deterministic: bool = True
    n_evals: int = 0
    spacing: float = 0.0
    order: int = 0

    @property
    def excess(self) -> float:
        """``level / floor``: how many times noisier than its own rounding the cost is (1 for none)."""
        return self.level / self.floor if self.floor > 0 else (math.inf if self.level > 0 else 1.0)

    @classmethod
    def assumed(cls, f0: float, dtype: Any, deterministic: bool = True) -> Noise:
        """The floor alone: the rounding of ``f0`` in ``dtype``."""
        floor = rounding_floor(f0, dtype)
        return cls(floor, floor, measured=False, deterministic=deterministic)

    def to_dict(self) -> dict[str, Any]:
        return {"level": self.level, "floor": self.floor, "measured": self.measured,
                "deterministic": self.deterministic, "n_evals": self.n_evals, "spacing": self.spacing,
                "order": self.order}


#: Noise excess below which a cost counts as carrying its own rounding only (a sum of many terms rounds to a
#: few times ``eps |f| / 2``): automatic steps change only above it.
EXCESS_THRESHOLD = 16.0


def step_excess(noise: Noise) -> float:
    """The noise excess that automatic steps follow: :attr:`Noise.excess` when it exceeds
    :data:`EXCESS_THRESHOLD`, else 1 (the steps of a cost that carries nothing but its rounding)."""
    return noise.excess if noise.measured and noise.excess > EXCESS_THRESHOLD else 1.0


def rounding_floor(f0: float, dtype: Any) -> float:
    """``eps |f0| / 2`` in ``dtype`` (the smallest positive normal number when ``f0`` is 0)."""
    eps = float(np.finfo(np.dtype(dtype)).eps)
    return max(0.5 * eps * abs(float(f0)), float(np.finfo(np.dtype(dtype)).tiny))


def noise_from_table(values: NDArray, differences: bool = False) -> tuple[float, int, str]:
    """ECnoise's decision on values at equally spaced points: ``(level, order, verdict)`` with verdict
    ``"ok"``, ``"too small"`` (every value equal) or ``"too large"`` (no order shows noise).  With
    ``differences`` the values are changes ``f(x + t u) - f(x)`` (an engine's), and the test that they vary
    by less than 10% of their size, meant for values of ``f`` itself, is skipped."""
    f = np.asarray(values, dtype=np.float64)
    if np.ptp(f) == 0:
        return 0.0, 0, "too small"
    scale = max(abs(float(f.max())), abs(float(f.min())))
    if not differences and scale > 0 and np.ptp(f) / scale > 0.1:
        return 0.0, 0, "too large"
    levels, signs = np.zeros(MAX_ORDER + 1), np.zeros(MAX_ORDER + 1, dtype=bool)
    gamma = 1.0
    d = f.copy()
    for k in range(1, MAX_ORDER + 1):
        d = np.diff(d)
        if d.size == 0:
            break
        gamma *= 0.5 * k / (2 * k - 1)  # (k!)^2 / (2k)!
        levels[k] = math.sqrt(gamma * float(np.mean(d * d)))
        signs[k] = bool(d.min() < 0 < d.max())
    for k in range(1, MAX_ORDER - 1):
        window = levels[k:k + 3]
        if window.min() > 0 and window.max() <= 4 * window.min() and signs[k]:
            return float(levels[k]), k, "ok"
    return 0.0, 0, "too large"


def measure_noise(cost: Callable[[NDArray], Any], x0: NDArray, f0: float, *, scale: NDArray | None = None,
                  seed: int = 0, f_again: float | None = None) -> Noise:
    """Estimate the noise of ``cost`` at ``x0`` (``f0 = cost(x0)``) from difference tables (module docstring).

    ``scale`` (shape (P,)) is each coordinate's length scale (default ``max(1, |x0|)``): the direction is
    ``u * scale`` normalized, so that the points move every coordinate relative to its own scale.
    ``f_again``, a second evaluation at ``x0``, tells whether the cost is deterministic.  Costs 8 evaluations
    per table, at most 3 tables.
    """
    dtype = x0.dtype
    eps = float(np.finfo(dtype).eps)
    floor = rounding_floor(f0, dtype)
    deterministic = f_again is None or f_again == f0
    rng = np.random.default_rng(seed)
    u = rng.standard_normal(x0.size) * (np.maximum(1.0, np.abs(x0)) if scale is None else scale)
    u /= max(float(np.max(np.abs(u))), np.finfo(float).tiny)  # the largest coordinate moves by delta scale_j
    delta = eps ** 0.25 / 10  # small enough that 4th..6th differences of a smooth cost vanish below eps |f|
    n_evals = 0
    half = N_POINTS // 2
    for _ in range(3):
        values = np.empty(N_POINTS + 1)
        values[half] = f0
        for i in range(N_POINTS + 1):
            if i == half:
                continue
            x = np.array(x0, copy=True)
            x += ((i - half) * delta * u).astype(dtype)
            with np.errstate(all="ignore"):
                values[i] = float(np.real(np.asarray(cost(x)).reshape(-1)[0]))
            n_evals += 1
        if not np.all(np.isfinite(values)):
            break
        level, order, verdict = noise_from_table(values)
        if verdict == "ok":
            if not deterministic and f_again is not None:
                level = max(level, abs(float(f_again) - f0) / math.sqrt(2))
            return Noise(max(level, floor), floor, measured=True, deterministic=deterministic, n_evals=n_evals,
                         spacing=delta, order=order)
        delta = delta * 100 if verdict == "too small" else delta / 100
    level = floor if deterministic or f_again is None else max(floor, abs(float(f_again) - f0) / math.sqrt(2))
    return Noise(level, floor, measured=False, deterministic=deterministic, n_evals=n_evals)
