"""The doctor: say where and why an analytic gradient disagrees with the numerical one.

:func:`diagnose` reads a :class:`~layerkit.check.report.Report` (and, when something failed, runs a few cheap
follow-up evaluations of the target) and adds :class:`~layerkit.check.report.Finding` values with these stable
codes.  ``r = analytical - numerical`` is the residual, ``x`` the parameter values.

=========================== ============================================================================
code                        meaning
=========================== ============================================================================
``non-finite``              the target produced NaN or inf (entries listed)
``nondeterministic-cost``   re-evaluating the cost at the same point gave different values
``precision-limited``       the mismatch is at the level the dtype's roundoff (and the step) predict
``nonsmooth``               one-sided differences of an entry disagree at every step (a kink, e.g. ReLU at 0)
``stateful-gradient``       the gradient at the same point differed between two calls (found by the check)
``zero-gradient``           analytical is exactly zero where numerical is not (a block never written)
``sign-flip``               analytical = -numerical on a block or overall
``scale-mismatch``          analytical = c * numerical on a block or overall (c named: m, 1/m, 2, 1/2); or
                            the data term alone off by c while the penalty is right
``layout-mismatch``         analytical matches numerical after re-unrolling a block in Fortran order
                            (equivalently: the block transposed)
``regularization-mismatch`` on the affected entries r = k x: a penalty in the cost or the gradient but not
                            both, or with a different factor; k is related to lambda/m and lambda/(2m);
                            or the penalty on the wrong columns (+lambda/m on some, -lambda/m on others)
``constant-offset``         on a row, a column or a block r is one constant (named: lambda/m, 1/m, lambda)
``data-term-missing``       the analytic gradient is the penalty lambda/m theta alone
``dropped-example``         r on a 2-D block is rank one: one example's contribution missing or doubled
``localized``               the mismatch is confined to a proper part of a block: a few entries, rows or
                            columns (listed)
``layer-mismatch``          (networks) a layer fails its own ``check_layer``: its backward is wrong
=========================== ============================================================================

It also always gives two verdicts: whether the step size could be the cause (the mismatch compared with
the numerical error the tolerance was built from), and which blocks are right.  A cost measurably noisier
than its own rounding gets a ``precision-limited`` finding even when the check passed, naming the usual
cause (cancellation) and its cure.

The doctor fits patterns to the report and runs experiments only through the
:class:`~layerkit.api.Experiments` runner the check hands it, within its budget of evaluations: one-sided
differences, the Taylor remainder along the worst entry, and for networks the gradient at lambda = 0 and a
directional check of every layer.  They run only when the check failed; a request beyond the budget is
skipped with a note.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..check.directional import taylor_remainder
from ..check.methods import Central
from ..check.report import Finding, Report
from ..check.tolerance import SAFETY
from ..nn.layout import Block, Order
from ..nn.losses import L2
from ..numerics import Direction

#: Relative misfit below which a fitted pattern (a = c n, r = k x, a reordering) counts as exact.
FIT_TOL = 1e-3
#: Most entries the follow-up evaluations look at.
MAX_PROBED = 24


# ---------------------------------------------------------------------- helpers
def _labels(report: Report, idx: NDArray, most: int = 8) -> str:
    names = [report.layout.label(int(j)) for j in idx[:most]]
    more = f" and {len(idx) - most} more" if len(idx) > most else ""
    return ", ".join(names) + more


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


def _fit(a: NDArray, b: NDArray) -> tuple[float, float]:
    """Least-squares ``c`` with ``a ~ c b`` and the relative misfit ``||a - c b|| / ||a||``."""
    bb = float(b @ b)
    na = float(np.linalg.norm(a))
    if bb == 0 or na == 0:
        return 0.0, math.inf
    c = float(a @ b) / bb
    return c, float(np.linalg.norm(a - c * b)) / na


def _close(a: NDArray, b: NDArray, tol: NDArray) -> bool:
    return bool(np.all(np.abs(a - b) <= tol))


def _region(block: Block, local: NDArray) -> str:
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


# ---------------------------------------------------------------------- the doctor
class _Doctor:
    def __init__(self, report: Report, subject: Any, strategy: Any, experiments: Any = None) -> None:
        self.r = report
        self.subject = subject
        self.strategy = strategy
        self.experiments = experiments
        self.n = report.numerical
        self.a = report.analytical
        self.tol = report.tolerance
        self.x = report.x.astype(np.float64)
        self.bad = report.mismatch
        self.lam = report.lambda_
        self.m = report.m
        self.findings: list[Finding] = [f for f in report.findings]
        self.notes: list[str] = []
        self.explained = np.zeros(self.n.size, dtype=bool)
        self.directional = report.mode == "directional"
        self.known = report.measured if report.measured is not None else np.ones(self.n.size, dtype=bool)
        d = report.directional
        self.evidence = {} if d is None else d.block_tests
        self._memo: dict[str, Any] = {}

    def attempt(self, what: str, fn: Any) -> Any:
        """Run one follow-up; a budget overrun or a failure of the target far from ``x0`` becomes a note."""
        if self.experiments is None:
            return None
        try:
            return fn()
        except Exception as exc:  # extra evidence must never hide the report
            self.notes.append(f"{what} was skipped: {type(exc).__name__}: {' '.join(str(exc).split())}")
            return None

    def add(self, code: str, blocks: list[str], message: str, **evidence: Any) -> None:
        self.findings.append(Finding(code, tuple(blocks), message, evidence))

    def blocks_of(self, idx: NDArray) -> list[str]:
        return list(dict.fromkeys(self.r.layout.block_of(int(j)).name for j in idx))

    # -------------------------------------------------------------- global checks
    def non_finite(self) -> bool:
        idx = np.flatnonzero((~np.isfinite(self.n) | ~np.isfinite(self.a)) & self.known)
        if not idx.size:
            return False
        which = []
        if (~np.isfinite(self.a)).any():
            which.append("the analytical gradient")
        if (~np.isfinite(self.n) & self.known).any():
            which.append("the cost at perturbed points")
        self.add("non-finite", self.blocks_of(idx),
                 f"{' and '.join(which)} produced NaN or inf at {_labels(self.r, idx)}",
                 entries=[self.r.layout.label(int(j)) for j in idx[:20]], count=int(idx.size))
        self.explained[idx] = True
        return True

    def nondeterministic(self) -> bool:
        """Found by the check itself (two evaluations at ``x0``); nothing else can be concluded then."""
        return "nondeterministic-cost" in self.r.codes()

    def noisy_cost(self) -> None:
        """A deterministic cost far noisier than its own rounding: name the cancellation (also on a pass)."""
        noise = self.r.noise
        if noise is None or not noise.measured or not noise.deterministic or noise.excess < 100:
            return
        self.add("precision-limited", [],
                 f"the cost carries noise of {noise.level:.2e}, {noise.excess:.0f} times the rounding of its value "
                 f"({noise.floor:.1e}): cancellation in the cost, e.g. log(1 - sigmoid(z)) or log(1 - h) at large "
                 "z, or 1 - h formed by subtraction.  Compute it stably from the logits: -log(sigmoid(z)) = "
                 "np.logaddexp(0, -z) and -log(1 - sigmoid(z)) = np.logaddexp(0, z).  Steps and tolerances were "
                 "derived from the measured noise", noise=noise.level, excess=noise.excess, cause="cancellation")

    def precision_limited(self) -> bool:
        bad = np.flatnonzero(self.bad & ~self.explained)
        if not bad.size:
            return False
        err = np.abs(self.n - self.a)
        model = self.tol if self.r.model_tolerance is None else self.r.model_tolerance
        ratio = float(np.max(err[bad] / np.maximum(model[bad], np.finfo(float).tiny)))
        if ratio <= 4:
            dt = self.r.dtype
            self.add("precision-limited", self.blocks_of(bad),
                     f"the mismatch is at the level that {dt} rounding with this step predicts "
                     f"(the largest error is {ratio:.2g} times its error-model tolerance): "
                     + ("use float64 or a larger step" if dt == "float32" else
                        "use a larger step (or the default 'auto') or a tolerance from the error model"),
                     ratio_to_model=ratio, dtype=dt)
            self.explained[bad] = True
            return True
        return False

    def nonsmooth(self) -> None:
        bad = np.flatnonzero(self.bad & ~self.explained)
        if not bad.size:
            return
        worst = bad[np.argsort(-np.abs(self.n - self.a)[bad])][:MAX_PROBED]

        def slopes() -> list[NDArray]:
            probe = self.experiments.probe(worst)
            h = Central().steps(probe) * 1e2
            jumps = []
            for scale in (1.0, 1e-2):
                hp = probe.snap(h * scale)
                hm = probe.snap(-h * scale)
                d = probe.delta(np.stack([hp, hm]))
                jumps.append(np.abs(d[0] / hp - d[1] / hm))  # forward minus backward one-sided slopes
            return jumps

        jumps = self.attempt("the test for kinks", slopes)
        if jumps is None:
            return
        j_big, j_small = jumps
        with np.errstate(invalid="ignore", divide="ignore"):
            kink = (j_small > 0.5 * j_big) & (j_small > 1e-3 * np.maximum(np.abs(self.n[worst]), np.abs(self.a[worst]))) \
                & (j_small > 0)
        if kink.any():
            idx = worst[kink]
            self.add("nonsmooth", self.blocks_of(idx),
                     f"the one-sided slopes of {_labels(self.r, idx)} differ by {float(np.max(j_small[kink])):.2e} "
                     "and do not shrink with the step: the cost has a kink there (ReLU at 0, abs, max), where "
                     "no finite difference is meaningful",
                     entries=[self.r.layout.label(int(j)) for j in idx], jump=float(np.max(j_small[kink])))
            self.explained[idx] = True

    # -------------------------------------------------------------- block patterns
    def block_patterns(self) -> None:
        spread = set(self.r.directional.spread_blocks) if self.r.directional is not None else set()
        for block in self.r.layout.blocks:
            s = block.slice
            bad = np.flatnonzero(self.bad[s] & ~self.explained[s])
            if self.directional and block.name in spread:
                self.directional_block(block)
                continue
            if not bad.size:
                continue
            for check in (self.zero_gradient, self.scale_or_sign, self.layout_mismatch, self.regularization,
                          self.penalty_columns, self.constant_offset, self.data_missing, self.data_factor,
                          self.dropped_example, self.localized):
                if check(block, bad):
                    self.explained[block.start + bad] = True
                    break

    def zero_gradient(self, block: Block, bad: NDArray) -> bool:
        s = block.slice
        a, n = self.a[s], self.n[s]
        if not np.all(a[bad] == 0):
            return False
        whole = bool(np.all(a == 0))
        where = "the whole block is zero: it is never written" if whole else \
            f"analytical is exactly 0 at {_region(block, bad)} ({_labels(self.r, block.start + bad)})"
        self.add("zero-gradient", [block.name],
                 f"{where}, while numerical is not (up to {float(np.max(np.abs(n[bad]))):.3g})",
                 whole_block=whole, count=int(bad.size))
        return True

    def directional_block(self, block: Block) -> None:
        """Block-level patterns from directions restricted to a block whose mismatch is spread out."""
        ev: list[Any] = list(self.evidence.get(block.name, []))
        if len(ev) < 2:
            return
        n = np.array([e.numerical for e in ev])
        a = np.array([e.analytical for e in ev])
        ux = np.array([e.u_dot_x for e in ev])
        note = f" (from {len(ev)} random directions restricted to {block.name}; the mismatch is spread over many entries)"
        if np.all(a == 0) and np.any(n != 0):
            self.add("zero-gradient", [block.name], f"analytical is exactly 0 along every direction in {block.name}: "
                     "the block is never written" + note, whole_block=True, directional=True)
            return
        c, misfit = _fit(a, n)
        if misfit <= FIT_TOL and abs(c - 1) > FIT_TOL:
            if abs(c + 1) <= FIT_TOL:
                self.add("sign-flip", [block.name], f"analytical = -numerical on {block.name}" + note, factor=c,
                         directional=True)
            else:
                named = name_factor(c, self.m)
                self.add("scale-mismatch", [block.name], f"analytical = {c:.6g}" + (f" ({named})" if named else "")
                         + f" x numerical on {block.name}" + note, factor=c, factor_name=named or "", directional=True)
            return
        k, misfit = _fit(a - n, ux)
        if misfit <= 1e-2 and k != 0:
            rel = ""
            if self.lam and self.m:
                rel = f" = {k / (self.lam / self.m):.3g} lambda/m (lambda = {self.lam:g}, m = {self.m})"
            self.add("regularization-mismatch", [block.name],
                     f"along every direction in {block.name}, analytical - numerical = k (u . theta) with k = {k:.6g}"
                     f"{rel}: a penalty term present in the cost or in the gradient but not both" + note,
                     factor=k, directional=True, entries="the whole block")

    def scale_or_sign(self, block: Block, bad: NDArray) -> bool:
        if self.directional:
            return False  # needs every entry; spread blocks use directional_block
        s = block.slice
        c, misfit = _fit(self.a[s], self.n[s])
        if misfit > FIT_TOL or abs(c - 1) <= FIT_TOL:
            return False
        if block.size < 2 and abs(c + 1) > FIT_TOL and not name_factor(c, self.m):
            return False  # one number is some multiple of another: only a named factor says something
        if abs(c + 1) <= FIT_TOL:
            self.add("sign-flip", [block.name], f"analytical = -numerical on {block.name}: a sign slip "
                     "(y - h instead of h - y, or a subtracted term that should be added)", factor=c)
            return True
        named = name_factor(c, self.m)
        what = f" ({named})" if named and named != f"{c:g}" else ""
        self.add("scale-mismatch", [block.name],
                 f"analytical = {c:.6g}{what} x numerical on {block.name}"
                 + (": a missing or extra factor 1/m" if named and "m" in named else
                    ": a missing or extra factor" if named else ""),
                 factor=c, factor_name=named or "")
        return True

    def layout_mismatch(self, block: Block, bad: NDArray) -> bool:
        if self.directional:
            return False  # needs every entry
        s = block.slice
        a, n, tol = self.a[s], self.n[s], self.tol[s]
        shapes = [block.shape] if len(block.shape) == 2 else []
        if len(block.shape) == 1 and block.size <= 100_000:
            P = block.size
            shapes = [(r, P // r) for r in range(2, int(math.isqrt(P)) + 1) if P % r == 0]
            shapes += [(c, r) for r, c in shapes if r != c]
        declared: Order = block.order if len(block.shape) == 2 else "C"
        other: Order = "F" if declared == "C" else "C"
        names = {"C": "C (row-major, numpy's ravel)", "F": "Fortran (column-major, MATLAB/Octave's G(:))"}
        for shape in shapes:
            if 1 in shape:
                continue
            pairs: tuple[tuple[Order, Order], ...] = ((declared, other), (other, declared))
            for src, dst in pairs:
                perm = n.reshape(shape, order=src).ravel(order=dst)
                perm_tol = tol.reshape(shape, order=src).ravel(order=dst)  # the error of n where it lands
                if not _close(a, perm, 4 * np.maximum(tol, perm_tol)):
                    continue
                if len(block.shape) == 2 and dst == other:
                    fix = "order='F'" if other == "F" else "order='C' (the default)"
                    text = (f"the gradient of {block.name} is unrolled in {names[other]} order, while the blocks were "
                            f"given in {names[declared]} order: analytical matches numerical after re-unrolling "
                            f"{block.name} as a {shape[0]}x{shape[1]} matrix in {names[other]} order.  If the whole "
                            f"vector is in that order, pass {fix} with the blocks; otherwise unroll the gradient as "
                            "the cost reads theta (or the block is transposed)")
                else:
                    text = (f"analytical matches numerical after re-unrolling {block.name} as a {shape[0]}x{shape[1]} "
                            f"matrix in {names[dst]} order: the gradient was unrolled in the wrong order "
                            "(MATLAB's G(:) is Fortran order; numpy's ravel is C order), or the block is transposed")
                self.add("layout-mismatch", [block.name], text, shape=list(shape), order=dst)
                return True
        return False

    def regularization(self, block: Block, bad: NDArray) -> bool:
        s = block.slice
        r = (self.a - self.n)[s]
        x = self.x[s]
        cands: list[tuple[str, NDArray]] = []
        if len(block.shape) == 2:
            rows, cols = block.shape
            grid = block.grid()
            bad_cols = np.unique(block.unravel(bad)[1])
            bad_rows = np.unique(block.unravel(bad)[0])
            if cols > 1:
                cands.append(("column 0 (the bias column)", grid[:, 0].ravel()))
            for c in bad_cols[:4]:
                if c != 0:
                    cands.append((f"column {c}", grid[:, c].ravel()))
            for rr in bad_rows[:4]:
                cands.append((f"row {rr}", grid[rr, :].ravel()))
            if cols > 1:
                cands.append(("the weights (every column but the bias column 0)", grid[:, 1:].ravel()))
            cands.append(("the whole block", grid.ravel()))
        else:
            cands.append((f"entries {', '.join(str(int(b)) for b in bad[:8])}" + ("..." if bad.size > 8 else ""), bad))
            cands.append(("the whole block", np.arange(block.size)))
        known = self.known[s]
        for what, idx in cands:
            if not np.isin(bad, idx).all():
                continue
            idx = idx[known[idx]]
            if idx.size < 2:  # one entry always fits r = k theta: that names no cause
                continue
            k, misfit = _fit(r[idx], x[idx])
            if misfit > 1e-2 or k == 0:
                continue
            rel = ""
            evidence: dict[str, Any] = {"factor": k, "entries": what}
            lam, m = self.lam, self.m
            meaning = ("the gradient adds a penalty the cost does not have" if k > 0
                       else "the cost has a penalty the gradient does not")
            if lam and m:
                base = lam / m
                ratio = k / base
                evidence["factor_over_lambda_over_m"] = ratio
                for value, text, why in (
                        (-1.0, "-lambda/m", "the cost regularizes these entries but the gradient does not"),
                        (1.0, "lambda/m", "the gradient regularizes these entries but the cost does not"),
                        (-0.5, "-lambda/(2m)", "the gradient's penalty is half the cost's: lambda/(2m) theta "
                                               "instead of lambda/m theta"),
                        (0.5, "lambda/(2m)", "the gradient's penalty is 1.5 times the cost's (or the cost uses "
                                             "lambda/(4m))"),
                        (-2.0, "-2 lambda/m", "the cost's penalty on these entries grows 2 lambda/m theta faster "
                                              "than the gradient's (counted twice in the cost, not in the "
                                              "gradient?)"),
                        (2.0, "2 lambda/m", "the gradient's penalty on these entries is 2 lambda/m theta more "
                                            "than the cost's")):
                    if abs(ratio - value) <= max(FIT_TOL, 2 * misfit) * abs(value):
                        rel = f" = {text} (lambda = {lam:g}, m = {m})"
                        meaning = why or meaning
                        evidence["factor_name"] = text
                        break
                else:  # the gradient's penalty is c times the cost's, with c named (1/(4m): divided by 2m twice)
                    c = 1.0 + ratio
                    named = name_factor(c, m) if what.startswith("the weights") else None
                    if named:
                        short = named.split(" =")[0]
                        rel = f" = ({short} - 1) lambda/m (lambda = {lam:g}, m = {m})"
                        meaning = (f"the gradient's penalty is {named} times the cost's (lambda/m theta): "
                                   + ("divided by 2m twice?" if "4m" in named and "1/" in named else
                                      "a factor in the penalty's gradient"))
                        evidence["penalty_factor"] = c
                        evidence["factor_name"] = f"({short} - 1) lambda/m"
            self.add("regularization-mismatch", [block.name],
                     f"on {what} of {block.name}, analytical - numerical = k * theta with k = {k:.6g}{rel}: "
                     f"{meaning}" + (" (the bias should not be regularized)" if what.startswith("column 0") and k < 0 else ""),
                     **evidence)
            return True
        return False

    # -------------------------------------------------------------- patterns of hand-written costs
    def penalty(self) -> NDArray | None:
        """``(lambda/m) theta`` on the entries a course-style penalty covers: a network's penalized entries;
        for a function with ``lambda`` and ``m`` given, every column but column 0 of its 2-D blocks (the
        classic convention).  None when unknown.  Computed once per diagnosis (every block's patterns ask)."""
        if "penalty" not in self._memo:
            self._memo["penalty"] = self._penalty()
        return self._memo["penalty"]

    def _penalty(self) -> NDArray | None:
        if not (self.lam and self.m):
            return None
        if self.experiments is not None and getattr(self.subject, "kind", "") == "network":
            return self.attempt("the penalty's gradient", self.experiments.penalty_gradient)
        mask = np.zeros(self.n.size, dtype=bool)
        for b in self.r.layout.blocks:
            if len(b.shape) != 2 or b.shape[1] < 2:
                return None
            mask[b.start + b.grid()[:, 1:].ravel()] = True
        return np.where(mask, L2.gradient(self.lam, self.m, self.x), 0.0)

    def penalty_columns(self, block: Block, bad: NDArray) -> bool:
        """The gradient's penalty on the wrong columns: on each failing column ``r = k theta`` with ``k`` one
        of ``+-lambda/m``, some added and some missing (``Theta[:, :-1]`` for ``Theta[:, 1:]``)."""
        if len(block.shape) != 2 or not (self.lam and self.m) or self.directional:
            return False
        cols = np.unique(block.unravel(bad)[1])
        if not 2 <= cols.size <= 3:
            return False
        R, T, base = block.matrix(self.a - self.n), block.matrix(self.x), self.lam / self.m
        ks = []
        for c in cols:
            k, misfit = _fit(R[:, c], T[:, c])
            if misfit > 1e-2 or abs(abs(k / base) - 1) > 1e-2:
                return False
            ks.append(int(round(k / base)))
        added, missing = [int(c) for c, k in zip(cols, ks) if k > 0], [int(c) for c, k in zip(cols, ks) if k < 0]
        if not added or not missing:
            return False
        self.add("regularization-mismatch", [block.name],
                 f"the gradient's penalty on {block.name} is on the wrong columns: it adds lambda/m theta on "
                 f"column{'s' if len(added) > 1 else ''} {', '.join(map(str, added))} (k = +lambda/m, lambda = "
                 f"{self.lam:g}, m = {self.m}), which the cost does not penalize, and leaves it out on column"
                 f"{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} (k = -lambda/m), which it "
                 "does: the slice is shifted (Theta[:, :-1] where Theta[:, 1:] was meant)",
                 added_columns=added, missing_columns=missing, factor=base, factor_name="lambda/m")
        return True

    def constant_offset(self, block: Block, bad: NDArray) -> bool:
        """``r`` is the same constant on every failing entry of a row, a column or the block (named when it is
        ``lambda/m``, ``lambda``, ``1/m``...): something adds a number where it should add a term."""
        if self.directional or bad.size < 2:
            return False
        r = (self.a - self.n)[block.slice]
        vals = r[bad]
        c = float(np.mean(vals))
        if c == 0 or np.max(np.abs(vals - c)) > 1e-3 * abs(c) + 4 * float(np.max(self.tol[block.slice][bad])):
            return False
        names = []
        if self.lam and self.m:
            names += [(self.lam / self.m, "lambda/m"), (self.lam / (2 * self.m), "lambda/(2m)"), (self.lam, "lambda")]
        if self.m:
            names += [(1.0 / self.m, "1/m")]
        named = next((t for v, t in names if abs(c - v) <= 1e-3 * abs(v)), None) or \
            next((f"-{t}" for v, t in names if abs(c + v) <= 1e-3 * abs(v)), None)
        what = _region(block, bad)
        self.add("constant-offset", [block.name],
                 f"on {what} of {block.name}, analytical - numerical = {c:.6g}" + (
                     f" = {named} (lambda = {self.lam:g}, m = {self.m})" if named else "")
                 + ", the same on every entry: the gradient adds a constant where it should add a term "
                   "(lambda/m instead of lambda/m * theta?)", offset=c, offset_name=named or "", region=what)
        return True

    def data_missing(self, block: Block, bad: NDArray) -> bool:
        """The analytic gradient equals the penalty's alone: the data term (backprop) is missing."""
        p = self.penalty()
        if p is None or self.directional:
            return False
        s = block.slice
        a, pb = self.a[s], p[s]
        if not np.any(pb) or not np.all(np.abs(a - pb) <= 1e-6 * np.abs(pb) + self.tol[s]):
            return False
        self.add("data-term-missing", [block.name],
                 f"on {block.name} the analytic gradient is the penalty alone, lambda/m theta (lambda = "
                 f"{self.lam:g}, m = {self.m}): the data term (backprop's average over the examples) is missing")
        return True

    def data_factor(self, block: Block, bad: NDArray) -> bool:
        """The data term is off by a factor while the penalty is right: ``a - p = c (n - p)``, ``c`` named."""
        p = self.penalty()
        if p is None or self.directional:
            return False
        s = block.slice
        c, misfit = _fit((self.a - p)[s], (self.n - p)[s])
        named = name_factor(c, self.m)
        if misfit > 1e-3 or not named or c in (0.0, 1.0):
            return False
        why = ("the data term is not divided by m (the penalty is)" if named.startswith("m") else
               "the data term is divided by m twice" if named.startswith("1/m") else
               "a factor in the data term only (a doubled sum, or 2 (h - y)?)")
        self.add("scale-mismatch", [block.name],
                 f"on {block.name}, the data term of the gradient (the gradient without its penalty lambda/m "
                 f"theta) is {named} times the cost's, while the penalty is right: {why}",
                 factor=c, factor_name=named, part="data")
        return True

    def dropped_example(self, block: Block, bad: NDArray) -> bool:
        """``r`` on a Dense-like block is rank one, ``u v^T``: one example's contribution ``delta_i a_i^T / m``
        missing or counted twice (named when the subject's activations identify ``a_i``)."""
        if len(block.shape) != 2 or min(block.shape) < 2 or self.directional or 2 * bad.size < block.size:
            return False  # one example's contribution touches (nearly) every entry of the block
        if self.m is not None and self.m < 3:
            return False  # with one or two examples any residual of a Dense block has rank one or two
        rows, cols = block.unravel(bad)
        if np.unique(rows).size < 2 or np.unique(cols).size < 2:
            return False  # a single wrong row or column is rank one too, and is not an example
        R = block.matrix(self.a - self.n)
        sv = np.linalg.svd(R, compute_uv=True, full_matrices=False)
        u, sig, vt = sv
        if sig[0] == 0 or sig[1] > 1e-6 * sig[0]:
            return False
        v = vt[0]
        example = self.identify_example(block, v)
        who = f" example {example}'s" if example is not None else " one example's"
        self.add("dropped-example", [block.name],
                 f"on {block.name}, analytical - numerical is rank one (an outer product u v^T, second singular "
                 f"value {sig[1] / sig[0]:.1e} of the first):{who} contribution delta_i a_i^T / m is missing "
                 "from the gradient or counted twice (a loop over the examples that skips one: range(1, m), or "
                 "m - 1)", example=example, rank=1)
        return True

    def identify_example(self, block: Block, v: NDArray) -> int | None:
        """The example whose ``[1, input]`` is parallel to ``v``, for a network's Dense block."""
        if getattr(self.subject, "kind", "") != "network" or v[0] == 0:
            return None
        net = self.subject.network
        binding = next((b for b in net.bindings if b.block == block.name), None)
        if binding is None:
            return None
        try:
            acts = self.subject.activations()
        except Exception:  # noqa: BLE001 - evidence only
            return None
        x = np.asarray(acts[binding.index], dtype=np.float64)
        if x.shape[1] + 1 != v.size:
            return None
        rows = np.hstack([np.ones((x.shape[0], 1)), x])
        w = v / v[0]
        err = np.max(np.abs(rows - w), axis=1) / np.maximum(1.0, np.max(np.abs(rows), axis=1))
        i = int(np.argmin(err))
        return i if err[i] <= 1e-6 and np.sum(err <= 1e-6) == 1 else None

    def localized(self, block: Block, bad: NDArray) -> bool:
        """The mismatch is confined to a proper part of the block (a few entries, rows or columns); the whole
        block, or every row, is no confinement and says nothing."""
        if bad.size >= block.size:
            return False
        few = bad.size <= 10
        region = ""
        if bad.size == 1:
            region = "one entry"
        elif len(block.shape) == 2:
            rows, cols = block.unravel(bad)
            ucols, urows = np.unique(cols), np.unique(rows)
            if len(ucols) <= 2 and len(ucols) < block.shape[1]:
                region = "column" + ("s " if len(ucols) > 1 else " ") + ", ".join(map(str, ucols))
            elif len(urows) <= 2 and len(urows) < block.shape[0]:
                region = "row" + ("s " if len(urows) > 1 else " ") + ", ".join(map(str, urows))
        if not (few or region):
            return False
        where = region or f"{bad.size} entries"
        self.add("localized", [block.name],
                 f"the mismatch in {block.name} is confined to {where}: {_labels(self.r, block.start + bad)}; "
                 "look at the code that computes exactly these entries",
                 entries=[self.r.layout.label(int(block.start + j)) for j in bad[:20]], count=int(bad.size),
                 region=where)
        return True

    def merge_overall(self) -> None:
        """One overall finding when every failing block shows the same scale or sign pattern."""
        failing = self.r.failed_blocks
        if len(failing) < 2 or self.directional:
            return
        for code in ("sign-flip", "scale-mismatch"):
            fs = [f for f in self.findings if f.code == code]
            if len(fs) == len(failing) and len({round(f.evidence.get("factor", 0), 6) for f in fs}) == 1:
                c, misfit = _fit(self.a, self.n)
                if misfit <= FIT_TOL:
                    first = fs[0]
                    self.findings = [f for f in self.findings if f.code != code]
                    msg = first.message.replace(f"on {first.blocks[0]}", "on every block")
                    self.add(code, failing, msg + " (overall)", **{**first.evidence, "overall": True})

    # -------------------------------------------------------------- verdicts and follow-ups
    def directional_verdict(self) -> str:
        d = self.r.directional
        tests = [] if d is None else list(d.tests)
        ratios = [abs(t.numerical - t.analytical) / max(t.tolerance, 1e-300) for t in tests]
        taylor = None if d is None else d.taylor
        if self.r.passed:
            return (f"no mismatch: every directional derivative is within {max(ratios, default=0):.2g} of its "
                    "error-model tolerance")
        worst = max(ratios, default=0.0)
        text = f"the worst directional mismatch is {worst:.1e} times its error-model tolerance"
        if taylor is not None:
            text += "; " + taylor["verdict"]
        elif worst >= 100:
            text += ": the step size is not the cause"
        return text

    def step_verdict(self) -> str:
        if self.directional:
            return self.directional_verdict()
        err = np.abs(self.n - self.a)
        bad = np.flatnonzero(self.bad & np.isfinite(err))
        with np.errstate(invalid="ignore"):
            ratio_all = err / np.maximum(self.tol, np.finfo(float).tiny)
        if not bad.size and self.bad.any():
            return ("the mismatch is a non-finite value (see the non-finite finding): no step size is the cause, "
                    "and none can be judged until it is finite")
        if not bad.size:
            if self.r.error_estimate is not None and np.isfinite(self.r.error_estimate).all():
                return (f"no mismatch: largest error {float(np.max(err, initial=0)):.1e}, Richardson's numerical "
                        f"error estimate {float(np.max(self.r.error_estimate, initial=0)):.1e}")
            return f"no mismatch: every entry is within {float(np.nanmax(ratio_all, initial=0.0)):.2g} of its " \
                   "error-model tolerance"
        j = int(bad[np.argmax(ratio_all[bad])])
        noise = self.r.noise
        if self.r.inconclusive:
            return ("inconclusive: " + (f"the cost is {noise.excess:.0f} times noisier than its own rounding, and "
                                        if noise is not None and noise.excess > 1 else "")
                    + "finite differences cannot tell a wrong gradient from their own error here (see the "
                    "precision-limited finding)")
        mm = float(err[j])
        numerr = float(self.tol[j]) / SAFETY  # the tolerance is SAFETY times the estimate's error
        ratio = mm / max(numerr, np.finfo(float).tiny)
        again = " (measured again over a ladder of steps)" if self.r.refined is not None and self.r.refined[j] else ""
        if ratio >= 100:
            text = (f"the mismatch ({mm:.2e}) is 10^{int(math.log10(ratio))} times larger than the numerical "
                    f"error ({numerr:.1e}{again}): the step size is not the cause; the analytic gradient is wrong")
        elif ratio >= 5:
            text = (f"the mismatch ({mm:.2e}) is only {ratio:.0f} times the numerical error ({numerr:.1e}{again}): "
                    "probably a real error, but re-check with method='richardson' or another step")
        else:
            text = (f"the mismatch ({mm:.2e}) is comparable to the numerical error ({numerr:.1e}{again}): the step "
                    "size or the precision could be the cause")
        taylor = self.taylor_along(j)
        return text + ("; " + taylor["verdict"] if taylor else "")

    def taylor_along(self, j: int) -> dict[str, Any] | None:
        """The Taylor-remainder verdict along the worst entry's coordinate (13 evaluations)."""
        label = self.r.layout.label(j)
        return self.attempt(f"the Taylor test along {label}", lambda: taylor_remainder(
            self.experiments.directions(), self.r.x.astype(self.subject.x0.dtype), self.a,
            Direction(j, j + 1, np.ones(1))))

    def network_followups(self) -> None:
        if self.experiments is None or self.r.subject != "network":
            return
        if self.lam:
            def at_zero() -> None:
                pen = self.experiments.penalty_gradient()
                a0 = self.experiments.gradient(0.0)
                if pen is None or a0 is None:
                    return
                n0 = self.n - pen
                ok = np.abs(n0 - a0) <= self.tol
                if self.directional:
                    ok = ok | ~self.known
                self.notes.append("with lambda = 0 the check " + (
                    "passes: the mismatch comes from the regularization term" if ok.all() else
                    "still fails: the data term (backprop) is wrong too"))
            self.attempt("the re-check at lambda = 0", at_zero)
        results = self.attempt("the check of each layer", self.experiments.check_layers) or []
        names: dict[int, dict[str, str]] = {}
        for b in getattr(self.subject.network, "bindings", ()):
            names.setdefault(b.index, {})[b.param] = b.block
        for k, layer, rep in results:
            if rep.passed or rep.inconclusive:  # an undecided layer check accuses nobody
                continue
            mine = names.get(k, {})
            self.add("layer-mismatch", [mine[b] for b in rep.failed_blocks if b in mine] or [f"layer {k}"],
                     f"layer {k} ({layer!r}) fails its own check_layer: its backward is wrong "
                     f"(input gradient {'wrong' if 'x' in rep.failed_blocks else 'right'}; "
                     f"relative difference {rep.relative_difference:.2e})", layer=k, layer_repr=repr(layer))

    def run(self) -> Report:
        self.noisy_cost()
        if self.r.passed:
            return self.r.with_findings(self.findings, step_verdict=self.step_verdict(),
                                        notes=list(self.r.notes) + self.notes)
        self.non_finite()
        if self.nondeterministic():
            return self.r.with_findings(self.findings, step_verdict="the cost is not deterministic: no step can "
                                        "give a reliable numerical gradient", notes=list(self.r.notes) + self.notes)
        if self.r.inconclusive:  # the mismatch is not the gradient's to answer for: no pattern is blamed on it
            pass
        elif not self.precision_limited():
            self.nonsmooth()
            self.block_patterns()
            self.merge_overall()
            self.network_followups()
        verdict = self.step_verdict()
        return self.r.with_findings(self.findings, step_verdict=verdict, notes=list(self.r.notes) + self.notes)


def diagnose(report: Report, subject: Any, strategy: Any, experiments: Any = None) -> Report:
    """Return ``report`` with findings, the step verdict and notes added (see the module docstring).

    ``experiments`` (an :class:`~layerkit.api.Experiments`) is what the doctor may run; without it only the
    patterns in the report are fitted."""
    return _Doctor(report, subject, strategy, experiments).run()
