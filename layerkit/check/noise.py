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
``delta`` is too small, when no order qualifies it is too large; it is then moved by a factor of 10 and the
table is rebuilt (at most 6 tables).  A spacing that has to grow keeps growing past a table that looks too
large: a cost quantized in steps (a float32 cost evaluated at float64 points) shows one step of its staircase
as a jump before wider tables show it as the noise it is.

The level is never reported below the rounding of the value itself, ``eps |f(x)| / 2`` (the *floor*).

A table that shows noise above :data:`EXCESS_THRESHOLD` times the floor is followed by two more: the same
points again (a cost that differs at the same point is not deterministic: a random sample, a call counter),
and points on one side of ``x`` only, each side in turn (a kink at ``x``, ``|x_j|`` or a ReLU at exactly 0, or
one near ``x`` on one side, reads as noise in a centered table but not in a one-sided one; the smaller level
is kept).  Kinks near ``x`` on both sides are crossed by both: a level still above the threshold is measured
again on tables 64 times narrower (at most 3 times), kept while it drops more than 4 times -- real noise
does not depend on the spacing, a crossed kink's share of the differences shrinks with it.  A table that
shows no noise at all there (every value equal, a staircase's flat stair) is no evidence and stops this.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from ..numerics import Direction, machine_eps

#: Points per difference table besides ``x`` itself.
N_POINTS = 8
#: Highest difference order formed.
MAX_ORDER = 6
#: Tables tried, the spacing moving by a factor of 10 between them.
MAX_TABLES = 6
#: A noisy table's spacing is divided by ``SHRINK`` at most ``SHRINKS`` times while its level drops more than
#: 4 times at each: kinks near the point, which a table crosses, read as noise (module docstring).
SHRINK, SHRINKS = 64.0, 3


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
    kink : bool
        Whether a centered table read as noise what a table on one side of ``x0`` does not show: a kink at
        ``x0`` (then :attr:`level` is the one-sided table's).
    """

    level: float
    floor: float
    measured: bool = False
    deterministic: bool = True
    n_evals: int = 0
    spacing: float = 0.0
    order: int = 0
    kink: bool = False

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
                "order": self.order, "kink": self.kink}


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
                  seed: int = 0, f_again: float | None = None, direction: NDArray | None = None) -> Noise:
    """Estimate the noise of ``cost`` at ``x0`` (``f0 = cost(x0)``) from difference tables (module docstring).

    ``scale`` (shape (P,)) is each coordinate's length scale (default ``max(1, |x0|)``): the direction is
    ``u * scale`` normalized, so that the points move every coordinate relative to its own scale; or
    ``direction`` itself when given (noise can depend on the direction: a float32 sigmoid that rounds to 1
    is flat along its own unit's weights only).  ``f_again``, a second evaluation at ``x0``, tells whether the
    cost is deterministic.  Costs 8 evaluations per table, at most 6 tables (and 17 more for a noisy cost).
    """
    dtype = x0.dtype
    floor = rounding_floor(f0, dtype)
    if direction is None:
        rng = np.random.default_rng(seed)
        u = rng.standard_normal(x0.size) * (np.maximum(1.0, np.abs(x0)) if scale is None else scale)
    else:
        u = np.asarray(direction, dtype=np.float64)
    u = u / max(float(np.max(np.abs(u))), np.finfo(float).tiny)  # the largest coordinate moves by delta scale
    tables = _Tables(cost, x0, f0, u)
    deterministic = f_again is None or f_again == f0
    delta = float(np.finfo(dtype).eps) ** 0.25 / 10  # small enough that 4th..6th differences vanish below eps |f|
    centered = np.arange(N_POINTS + 1) - N_POINTS // 2
    rising = None  # the direction the spacing moves in, set by the first inconclusive table
    for _ in range(MAX_TABLES):
        values = tables.at(centered, delta)
        if not np.all(np.isfinite(values)):
            break
        level, order, verdict = noise_from_table(values)
        if verdict == "ok":
            return _accepted(tables, values, level, order, delta, floor, deterministic, f_again)
        if rising is None:
            rising = verdict == "too small"
        elif rising and verdict == "too large":
            pass  # a quantized cost: one step of its staircase looks like a jump; wider tables show noise
        elif not rising and verdict == "too small":
            break
        delta = delta * 10 if rising else delta / 10
    level = floor if deterministic or f_again is None else max(floor, abs(float(f_again) - f0) / math.sqrt(2))
    return Noise(level, floor, measured=False, deterministic=deterministic, n_evals=tables.n_evals)


class _Tables:
    """The cost at equally spaced points ``x0 + k spacing u``, counting its evaluations."""

    def __init__(self, cost: Callable[[NDArray], Any], x0: NDArray, f0: float, u: NDArray) -> None:
        self.cost, self.x0, self.f0, self.u = cost, x0, f0, u
        self.n_evals = 0

    def at(self, offsets: NDArray, spacing: float) -> NDArray:
        values = np.empty(offsets.size)
        for i, k in enumerate(offsets):
            if k == 0:
                values[i] = self.f0
                continue
            x = np.array(self.x0, copy=True)
            x += (k * spacing * self.u).astype(self.x0.dtype)
            with np.errstate(all="ignore"):
                values[i] = float(np.real(np.asarray(self.cost(x)).reshape(-1)[0]))
            self.n_evals += 1
        return values


def _accepted(tables: _Tables, values: NDArray, level: float, order: int, delta: float, floor: float,
              deterministic: bool, f_again: float | None) -> Noise:
    """The noise of an accepted table.  A cost noisier than its rounding: is it the same at every call (else
    it is not a function of its parameters), and is it noise at all, or a kink at x0 (|x| or ReLU at 0) that a
    centered table reads as noise?  The same points again, then a table that stays on one side of x0."""
    kink = False
    if level > EXCESS_THRESHOLD * floor:
        centered = np.arange(N_POINTS + 1) - N_POINTS // 2
        if deterministic and not np.array_equal(tables.at(centered, delta), values):
            deterministic = False
        for sign in (1, -1):  # a kink at x0, or one near it on one side, is off a table on the other side
            side, _, verdict_side = noise_from_table(tables.at(sign * np.arange(1, N_POINTS + 2), delta))
            if verdict_side in ("ok", "too small") and side * EXCESS_THRESHOLD < level:
                level, kink = side, True
                break
        spacing = delta
        for _ in range(SHRINKS if level > EXCESS_THRESHOLD * floor and deterministic else 0):
            # kinks near x0 on both sides: noise does not shrink with the spacing, a crossed kink's share of
            # the differences does (by the spacing's factor), until the table no longer reaches it
            spacing /= SHRINK
            small, _, verdict_small = noise_from_table(tables.at(centered, spacing))
            if verdict_small != "ok" or 4 * small >= level:
                break
            level, kink = small, True
    if not deterministic and f_again is not None:
        level = max(level, abs(float(f_again) - tables.f0) / math.sqrt(2))
    return Noise(max(level, floor), floor, measured=True, deterministic=deterministic, n_evals=tables.n_evals,
                 spacing=delta, order=order, kink=kink)


def calibrate(probe: Any, x: NDArray, seed: int, sides: Callable[[NDArray], NDArray] | None = None) -> float:
    """The noise level of an exact evaluator, measured on its own difference table along a random direction
    (8 evaluations of the evaluator, see :mod:`layerkit.check.noise`); 0 when the table shows no noise.
    ``sides``: the subject's kinked units' sides (:meth:`~layerkit.check.subjects.Subject.kink_sides`), when
    it declares kinks: a table that carries a unit across one would read the kink as noise (and inflate every
    tolerance), so it is narrowed until it does not.  When even the narrowest does (a unit within about
    1e-9 of the scale from its kink), the tables are measured across it as without ``sides``: a kink read
    as noise makes tolerances too wide there, and the kink safeguards measure such a direction on the point's
    own side; no measurement at all would leave a user rule's cancellation uncounted (a false alarm)."""
    rng = np.random.default_rng(seed + 7)
    u = rng.standard_normal(x.size)
    d = Direction(0, x.size, u / np.linalg.norm(u))
    scale = max(1.0, float(np.max(np.abs(x))))
    delta = machine_eps(x.dtype) ** 0.25 / 10 * scale
    at = None if sides is None else np.asarray(sides(x))
    measured = False
    for _ in range(3):
        offsets = (np.arange(9) - 4) * delta
        if at is not None and _crosses(sides, x, d, 4 * delta, at):
            delta /= 100
            continue
        measured = True
        values, _ = probe.delta([d], offsets[:, None])
        level, _, verdict = noise_from_table(values[:, 0], differences=True)
        if verdict == "ok":
            return level
        if verdict == "too small":
            return 0.0
        delta /= 100
    if not measured:  # every table crossed a kink: measured across it all the same
        return calibrate(probe, x, seed)
    return 0.0


def _crosses(sides: Any, x: NDArray, d: Direction, reach: float, at: NDArray) -> bool:
    """Whether ``x +- reach d.u`` puts some kinked unit on another side than ``at`` (two forward passes)."""
    for sign in (1.0, -1.0):
        theta = np.array(x, copy=True)
        theta[d.lo:d.hi] = theta[d.lo:d.hi] + (sign * reach * np.asarray(d.u, dtype=np.float64)).astype(x.dtype)
        if np.any(np.asarray(sides(theta)) != at):
            return True
    return False
