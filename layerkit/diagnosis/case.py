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
    if len(local) == 1:
        return f"entry {int(local[0])}" + (" (the intercept)" if len(block.shape) == 1 and local[0] == 0 else "")
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

    def whole(self, block: Block) -> bool:
        """Whether every entry of ``block`` was measured (always in a full check; in a directional one when
        localization measured the whole block entry by entry)."""
        return bool(self.known[block.slice].all())

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
    def k(self) -> float | None:
        """The cost's penalty coefficient ``lambda/m``: from ``lambda`` and ``m`` when both are known, else
        inferred from the mismatch itself (:func:`inferred_penalty`); None when neither can say."""
        if self.lam and self.m:
            return float(self.lam) / float(self.m)
        if self.lam == 0 or getattr(self.subject, "kind", "") == "network":
            return None
        k = inferred_penalty(self.report.layout, self.a, self.n, self.x, self.known)
        if k is None and self.directional:
            k = inferred_penalty_along(self)
        return k

    @property
    def k_inferred(self) -> bool:
        """Whether :attr:`k` was inferred rather than given."""
        return not (self.lam and self.m) and self.k is not None

    def k_text(self) -> str:
        """How the text names ``k``: ``lambda = .., m = ..`` when given, else that it was inferred."""
        if not self.k_inferred:
            return f"lambda = {self.lam:g}, m = {self.m}"
        return f"lambda/m = {self.k:.6g}, inferred from the mismatch"

    @cached_property
    def penalty(self) -> NDArray | None:
        """``(lambda/m) theta`` on the entries a course-style penalty covers: a network's penalized entries;
        for a function, every column but column 0 of its 2-D blocks (the classic convention), with
        ``lambda/m`` given or inferred (:attr:`k`).  None when unknown.  Computed once, on first need."""
        if self.experiments is not None and getattr(self.subject, "kind", "") == "network":
            if not (self.lam and self.m):
                return None
            return self.attempt("the penalty's gradient", self.experiments.penalty_gradient)
        mask = weights_mask(self.report.layout)
        if mask is None or self.k is None:
            return None
        return np.where(mask, self.k * self.x, 0.0)


#: How many times its own tolerance a direction's residual may be for a fitted model to hold (the tolerance
#: is ``SAFETY`` times the finite difference's error model, so 4 leaves room for the model's own rounding).
ALONG_TOL = 4.0

#: Largest fraction of a fitted value its residual allowance may be (:meth:`Along.holds`): on directions that
#: resolve a block more coarsely, a permutation or a perturbation of the block fits ``a = c n`` as well.
ALONG_RESOLUTION = 0.3

class Along:
    """A block's own directional tests, as arrays: ``n``, ``a``, ``tol`` of shape ``(K,)`` and the directions
    ``U`` of shape ``(K, block.size)`` (the block's flat order)."""

    def __init__(self, case: Case, block: Block) -> None:
        ev = [e for e in case.evidence.get(block.name, []) if e.u is not None]
        self.case, self.block = case, block
        self.n = np.array([e.numerical for e in ev], dtype=np.float64)
        self.a = np.array([e.analytical for e in ev], dtype=np.float64)
        self.tol = np.array([e.tolerance for e in ev], dtype=np.float64)
        self.U = np.array([e.u for e in ev], dtype=np.float64).reshape(len(ev), block.size)
        self.x = case.x[block.slice]

    @property
    def size(self) -> int:
        return int(self.n.size)

    def along(self, v: NDArray) -> NDArray:
        """``u_k . v`` for a vector ``v`` over the block (its flat order)."""
        return self.U @ np.asarray(v, dtype=np.float64)

    def columns_zeroed(self, col: int) -> NDArray | None:
        """``theta`` with column ``col`` set to 0 (None for a block that is not a matrix of 2 columns or more)."""
        b = self.block
        if len(b.shape) != 2 or b.shape[1] < 2:
            return None
        M = self.x.reshape(b.shape, order=b.order).astype(np.float64)
        M[:, col] = 0.0
        return M.ravel(order=b.order)

    def holds(self, y: NDArray, M: NDArray, carry: float = 1.0) -> NDArray | None:
        """The least-squares coefficients of ``y ~ M c`` when the model holds (module docstring): at least
        ``d + 2`` directions, every residual within :data:`ALONG_TOL` ``max(1, carry |c_0|)`` tolerances, that
        allowance at most :data:`ALONG_RESOLUTION` of each value."""
        M = M.reshape(self.size, -1)
        if self.size < M.shape[1] + 2 or not np.all(np.isfinite(M)):
            return None
        coef, *_ = np.linalg.lstsq(M, y, rcond=None)
        allowance = ALONG_TOL * max(1.0, carry * abs(float(coef[0]))) * self.tol
        if np.any(allowance > ALONG_RESOLUTION * np.abs(y)):
            return None  # directions this coarse fit nearly any model: they name nothing
        return coef if bool(np.all(np.abs(M @ coef - y) <= allowance)) else None

    def note(self) -> str:
        return (f" (from {self.size} directions restricted to {self.block.name}; the mismatch is spread over many "
                "entries)")


def weights_mask(layout: Any) -> NDArray | None:
    """What a course-style penalty covers: every column but column 0 (the bias column) of each 2-D block, or
    of a single vector every entry but entry 0 (the intercept, as in the regression exercises).  None for any
    other layout (a block not a matrix of 2 columns or more, beside others)."""
    mask = np.zeros(layout.size, dtype=bool)
    if len(layout.blocks) == 1 and len(layout.blocks[0].shape) == 1 and layout.size >= 2:
        mask[1:] = True
        return mask
    for b in layout.blocks:
        if len(b.shape) != 2 or b.shape[1] < 2:
            return None
        mask[b.start + b.grid()[:, 1:].ravel()] = True
    return mask


#: How closely a fit that infers the penalty's coefficient must hold (relative to the analytic gradient).
INFER_TOL = 1e-7


#: Fewest measured entries of a block that :func:`inferred_penalty` fits (two coefficients, and room for the
#: misfit to mean something): a directional check measures only the entries it localized.
MIN_KNOWN = 6


def inferred_penalty(layout: Any, a: NDArray, n: NDArray, x: NDArray, known: NDArray) -> float | None:
    """The cost's penalty coefficient ``k`` (``lambda/m``, the penalty's gradient ``k theta`` on every column
    but the bias column) read off a mismatch that a wrong factor on the data term or the penalty leaves:
    on a block, ``a = c n + d theta_W`` with ``c != 1`` (``a - k theta_W = c (n - k theta_W)``: ``k = d / (1 - c)``;
    the data term dropped, ``c = 0``, or scaled by ``c``), or ``a = n + d theta_W + e theta_S`` with
    ``theta_S`` the columns but the last and ``d = -e`` (a penalty shifted by one column: ``k = e``).  The fit
    must hold to :data:`INFER_TOL` on the block's measured entries (at least :data:`MIN_KNOWN`); the first block
    that fits gives ``k`` (None when none does, or ``k <= 0``)."""
    for b in layout.blocks:
        seen = known[b.slice]
        if len(b.shape) != 2 or b.shape[1] < 2 or int(seen.sum()) < MIN_KNOWN:
            continue
        A, N = a[b.slice].astype(np.float64)[seen], n[b.slice].astype(np.float64)[seen]
        W, S = b.matrix(x).astype(np.float64), b.matrix(x).astype(np.float64)
        W[:, 0], S[:, -1] = 0.0, 0.0
        w, sh = W.ravel(order=b.order)[seen], S.ravel(order=b.order)[seen]
        scale = float(np.linalg.norm(A)) or 1.0
        coef, misfit = _lstsq(np.stack([N, w], axis=1), A)
        if misfit <= INFER_TOL * scale and abs(1 - coef[0]) > 1e-3:
            k = coef[1] / (1 - coef[0])
            if k > 0:
                return float(k)
        coef, misfit = _lstsq(np.stack([w, sh], axis=1), A - N)
        if misfit <= INFER_TOL * scale and coef[1] > 0 and abs(coef[0] + coef[1]) <= 1e-3 * coef[1]:
            return float(coef[1])
    return None


def inferred_penalty_along(case: Case) -> float | None:
    """The directional form of :func:`inferred_penalty`, from the own directions of a block whose mismatch is
    spread (:class:`Along`): ``a = c n + d w`` with ``c != 1`` (``k = d / (1 - c)``), or ``a - n = d w + e s``
    with ``d = -e`` (``k = e``), each holding within the directions' tolerances."""
    for b in case.report.layout.blocks:
        f = Along(case, b)
        w, sh = f.columns_zeroed(0), f.columns_zeroed(-1)
        if w is None or sh is None or f.size < 4:
            continue
        wk, sk = f.along(w), f.along(sh)
        if f.holds(f.a, f.n[:, None]) is not None:
            continue  # a factor on the whole block explains it: no penalty to read off
        coef = f.holds(f.a, np.stack([f.n, wk], axis=1))
        if coef is not None and abs(1 - coef[0]) > 1e-3 and coef[1] / (1 - coef[0]) > 0:
            return float(coef[1] / (1 - coef[0]))
        coef = f.holds(f.a - f.n, np.stack([wk, sk], axis=1))
        if coef is not None and coef[1] > 0 and abs(coef[0] + coef[1]) <= 1e-3 * coef[1]:
            return float(coef[1])
    return None


def _lstsq(M: NDArray, y: NDArray) -> tuple[NDArray, float]:
    coef, *_ = np.linalg.lstsq(M, y, rcond=None)
    return coef, float(np.linalg.norm(M @ coef - y))
