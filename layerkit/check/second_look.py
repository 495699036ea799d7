"""The second look at what failed at the first step, one implementation for both modes.

A failing estimate (an entry of a full check, a direction of a directional one) is first measured again at a
quarter of its step (:func:`~layerkit.check.refine.confirms`, 2 evaluations): where that agrees with it to a
quarter of its tolerance, the first estimate stands and so does its failure (the step is not the cause).
The others are measured over a ladder of steps (:func:`~layerkit.check.refine.refine`, 16 evaluations), and
the new estimate replaces the first only where it *discredits* it: the two differ by more than the first
tolerance.  Re-measuring can therefore never loosen what the first step established; a model that
misjudged the truncation or the noise costs evaluations, never a false alarm.

What differs between the modes is which failures get the second look and what tolerance a replaced estimate
gets; that stays with the modes (:mod:`layerkit.check.full`, :mod:`layerkit.check.directional`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from attrs import frozen
from numpy.typing import NDArray

from .methods import Estimate
from .refine import confirms, refine


@frozen(eq=False)
class Relook:
    """The outcome for ``n`` failing estimates: ``confirmed`` (n,) -- a quarter step gave the same value;
    ``rest`` -- the positions of the others, and ``estimate`` -- the ladder's estimate there (None when there
    were none)."""

    confirmed: NDArray
    rest: NDArray
    estimate: Estimate | None


def look_again(probe: Any, values: Any, steps: Any, tolerance: Any, confirm: bool = True) -> Relook:
    """The second look at the ``n`` axes of ``probe`` (module docstring): ``values`` the first estimates,
    ``steps`` their steps, ``tolerance`` their first tolerances (each of shape (n,)); without ``confirm`` the
    quarter step is skipped (a step that is not positive cannot be quartered)."""
    n = probe.n_axes
    confirmed = np.asarray(confirms(probe, values, steps, tolerance)) if confirm else np.zeros(n, dtype=bool)
    rest = np.flatnonzero(~confirmed)
    estimate = refine(probe.subset(rest)) if rest.size else None
    return Relook(confirmed, rest, estimate)


def discredits(new: NDArray, first: NDArray, tolerance: NDArray, nan: bool = True) -> NDArray:
    """Where a new estimate discredits the first: ``|new - first| > tolerance``.  A non-finite new estimate
    discredits the first with ``nan`` (a full check, where it is then reported as such), not without (a
    directional check keeps its first estimate)."""
    with np.errstate(invalid="ignore"):
        return ~(np.abs(new - first) <= tolerance) if nan else np.abs(new - first) > tolerance
