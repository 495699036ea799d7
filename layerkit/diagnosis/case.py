"""What the doctor reads of one check: the :class:`Case`, and the helpers its pattern fits share.

``r = analytical - numerical`` is the residual, ``x`` the parameter values.  A pattern is *exact* when it fits
to a relative misfit of :data:`FIT_TOL`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import cached_property
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..check.report import Report
from ..nn.layout import Block
from ..nn.losses import L2

#: Relative misfit below which a fitted pattern (a = c n, r = k x, a reordering) counts as exact.
FIT_TOL = 1e-3


def name_factor(c: float, m: int | None) -> str | None:
    """A readable name for a ratio ``c`` when it is 2, 1/2, m, 1/m (or their negatives), else None."""
    cands: list[tuple[float, str]] = [(2.0, "2"), (0.5, "1/2")]
    if m and m > 1:
        cands += [(float(m), f"m = {m}"), (1.0 / m, f"1/m = 1/{m}"), (2.0 * m, f"2m = {2 * m}"),
                  (1.0 / (2 * m), f"1/(2m) = 1/{2 * m}"), (4.0 * m, f"4m = {4 * m}"),
                  (1.0 / (4 * m), f"1/(4m) = 1/{4 * m}")]
    for value, name in cands:
        for sign, s in ((1, ""), (-1, "-")):
            if abs(c - sign * value) <= FIT_TOL * value:
                return s + name if sign < 0 else name
    return None


def fit(a: NDArray, b: NDArray) -> tuple[float, float]:
    """Least-squares ``c`` with ``a ~ c b`` and the relative misfit ``||a - c b|| / ||a||``."""
    bb = float(b @ b)
    na = float(np.linalg.norm(a))
    if bb == 0 or na == 0:
        return 0.0, math.inf
    c = float(a @ b) / bb
    return c, float(np.linalg.norm(a - c * b)) / na


def region(block: Block, local: NDArray) -> str:
    """Describe a set of entries of a block: a column, a row, or the entries themselves."""
    if len(block.shape) == 2:
        rows, cols = block.unravel(local)
        ucols, urows = np.unique(cols), np.unique(rows)
        if len(ucols) == 1:
            what = " (the bias column)" if ucols[0] == 0 and block.shape[1] > 1 else ""
            return f"column {ucols[0]}{what}"
        if len(urows) == 1:
            return f"row {urows[0]}"
    return f"{len(local)} entries"


class Case:
    """One report as the doctor reads it.

    Attributes
    ----------
    report, subject, experiments
        The report, the subject checked and the budgeted runner of follow-ups (None: patterns only).
    n, a, tol, x : NDArray, shape (P,)
        Numerical, analytical, tolerance and the point (float64).
    lam, m : the regularization and number of examples, when known.
    directional : bool
        Whether the report is a directional one (entries measured alone: ``known``).
    notes : list of str
        What the follow-ups had to say (a skipped experiment, a re-check at lambda = 0).
    """

    def __init__(self, report: Report, subject: Any, experiments: Any = None) -> None:
        self.report, self.subject, self.experiments = report, subject, experiments
        self.n, self.a, self.tol = report.numerical, report.analytical, report.tolerance
        self.x = report.x.astype(np.float64)
        self.bad = report.mismatch
        self.lam, self.m = report.lambda_, report.m
        self.directional = report.mode == "directional"
        self.known = report.measured if report.measured is not None else np.ones(self.n.size, dtype=bool)
        d = report.directional
        self.evidence: dict[str, Any] = {} if d is None else d.block_tests
        self.notes: list[str] = []

    def attempt(self, what: str, fn: Callable[[], Any]) -> Any:
        """Run one follow-up; a budget overrun or a failure of the target far from ``x0`` becomes a note."""
        if self.experiments is None:
            return None
        try:
            return fn()
        except Exception as exc:  # extra evidence must never hide the report
            self.notes.append(f"{what} was skipped: {type(exc).__name__}: {' '.join(str(exc).split())}")
            return None

    def labels(self, idx: NDArray, most: int = 8) -> str:
        names = [self.report.layout.label(int(j)) for j in idx[:most]]
        more = f" and {len(idx) - most} more" if len(idx) > most else ""
        return ", ".join(names) + more

    def blocks_of(self, idx: NDArray) -> list[str]:
        return list(dict.fromkeys(self.report.layout.block_of(int(j)).name for j in idx))

    @cached_property
    def penalty(self) -> NDArray | None:
        """``(lambda/m) theta`` on the entries a course-style penalty covers: a network's penalized entries;
        for a function with ``lambda`` and ``m`` given, every column but column 0 of its 2-D blocks (the
        classic convention).  None when unknown.  Computed once, on first need."""
        if not (self.lam and self.m):
            return None
        if self.experiments is not None and getattr(self.subject, "kind", "") == "network":
            return self.attempt("the penalty's gradient", self.experiments.penalty_gradient)
        mask = np.zeros(self.n.size, dtype=bool)
        for b in self.report.layout.blocks:
            if len(b.shape) != 2 or b.shape[1] < 2:
                return None
            mask[b.start + b.grid()[:, 1:].ravel()] = True
        return np.where(mask, L2.gradient(self.lam, self.m, self.x), 0.0)
