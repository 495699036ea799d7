"""The doctor's pattern fits: each looks at the failing entries of one block and, when its pattern fits, returns
the finding that names the cause (None otherwise).  :data:`BLOCK_PATTERNS` is the order they are tried in;
the first that fits explains the block.

``r = analytical - numerical`` is the residual, ``x`` the parameter values, ``bad`` the failing entries of the
block not explained yet (positions inside it).  Directional reports measure only some entries: the patterns
that need every entry leave them alone, and a block whose mismatch is spread gets :func:`~layerkit.diagnosis.along.directional_block`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..check.report import Finding
from ..nn.layout import Block, Order
from .case import FIT_TOL, Case, fit, name_factor, region
from .layer_patterns import batch_statistics, kernel_flipped, pooling_spread

Pattern = Callable[[Case, Block, NDArray], "Finding | None"]


def zero_gradient(case: Case, block: Block, bad: NDArray) -> Finding | None:
    s = block.slice
    a, n = case.a[s], case.n[s]
    if not np.all(a[bad] == 0):
        return None
    whole = bool(np.all(a == 0))
    where = "the whole block is zero: it is never written" if whole else \
        f"analytical is exactly 0 at {region(block, bad)} ({case.labels(block.start + bad)})"
    return Finding("zero-gradient", (block.name,),
                   f"{where}, while numerical is not (up to {float(np.max(np.abs(n[bad]))):.3g})",
                   {"whole_block": whole, "count": int(bad.size)})


def scale_or_sign(case: Case, block: Block, bad: NDArray) -> Finding | None:
    if not case.whole(block):
        return None  # needs every entry; spread blocks use along.directional_block
    s = block.slice
    c, misfit = fit(case.a[s], case.n[s])
    if misfit > FIT_TOL or abs(c - 1) <= FIT_TOL:
        return None
    if block.size < 2 and abs(c + 1) > FIT_TOL and not name_factor(c, case.m):
        return None  # one number is some multiple of another: only a named factor says something
    if abs(c + 1) <= FIT_TOL:
        return Finding("sign-flip", (block.name,), f"analytical = -numerical on {block.name}: a sign slip "
                       "(y - h instead of h - y, or a subtracted term that should be added)", {"factor": c})
    named = name_factor(c, case.m if case.m else _whole(c))
    if named and not case.m and named.startswith(("m", "1/m")):
        named += ", if m, the number of examples, is that"
    what = f" ({named})" if named and named != f"{c:g}" else ""
    return Finding("scale-mismatch", (block.name,),
                   f"analytical = {c:.6g}{what} x numerical on {block.name}"
                   + (": a missing or extra factor 1/m" if named and "m" in named else
                      ": a missing or extra factor" if named else ""),
                   {"factor": c, "factor_name": named or ""})


_ORDER_NAMES = {"C": "C (row-major, numpy's ravel)", "F": "Fortran (column-major, MATLAB/Octave's G(:))"}


def _shapes(block: Block) -> list[tuple[int, int]]:
    """The matrix shapes a block could be re-unrolled as: its own, or for a vector every factorization."""
    if len(block.shape) == 2:
        return [block.shape]
    if len(block.shape) == 1 and block.size <= 100_000:
        P = block.size
        shapes = [(r, P // r) for r in range(2, int(math.isqrt(P)) + 1) if P % r == 0]
        return shapes + [(c, r) for r, c in shapes if r != c]
    return []


def layout_mismatch(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """Analytical equals numerical re-unrolled in the other order, on every entry whose counterpart was
    measured too (all of them in a full check; in a directional one, the localized entries: the counterpart of
    a failing entry fails as well, and entries the re-reading leaves in place pass).  Every failing entry must
    be among them, and at least 4 entries."""
    s = block.slice
    a, n, tol, known = case.a[s], case.n[s], case.tol[s], case.known[s]
    declared: Order = block.order if len(block.shape) == 2 else "C"
    other: Order = "F" if declared == "C" else "C"
    for shape in _shapes(block):
        if 1 in shape:
            continue
        pairs: tuple[tuple[Order, Order], ...] = ((declared, other), (other, declared))
        for src, dst in pairs:
            perm = n.reshape(shape, order=src).ravel(order=dst)
            perm_tol = tol.reshape(shape, order=src).ravel(order=dst)  # the error of n where it lands
            both = known & known.reshape(shape, order=src).ravel(order=dst)
            if int(both.sum()) < 4 or not both[bad].all():
                continue
            if not bool(np.all(np.abs(a - perm)[both] <= 4 * np.maximum(tol, perm_tol)[both])):
                continue
            if len(block.shape) == 2 and dst == other:
                fix = "order='F'" if other == "F" else "order='C' (the default)"
                text = (f"the gradient of {block.name} is unrolled in {_ORDER_NAMES[other]} order, while the blocks "
                        f"were given in {_ORDER_NAMES[declared]} order: analytical matches numerical after "
                        f"re-unrolling {block.name} as a {shape[0]}x{shape[1]} matrix in {_ORDER_NAMES[other]} "
                        f"order.  If the whole vector is in that order, pass {fix} with the blocks; otherwise unroll "
                        "the gradient as the cost reads theta (or the block is transposed)")
            else:
                text = (f"analytical matches numerical after re-unrolling {block.name} as a {shape[0]}x{shape[1]} "
                        f"matrix in {_ORDER_NAMES[dst]} order: the gradient was unrolled in the wrong order "
                        "(MATLAB's G(:) is Fortran order; numpy's ravel is C order), or the block is transposed")
            return Finding("layout-mismatch", (block.name,), text, {"shape": list(shape), "order": dst})
    return None


def _candidates(block: Block, bad: NDArray) -> list[tuple[str, NDArray]]:
    """The parts of a block a penalty term may cover: the bias column, failing columns and rows, the
    weights, the whole block (for a vector: the failing entries, the whole block)."""
    if len(block.shape) != 2:
        return [(f"entries {', '.join(str(int(b)) for b in bad[:8])}" + ("..." if bad.size > 8 else ""), bad),
                ("the whole block", np.arange(block.size))]
    cols = block.shape[1]
    grid = block.grid()
    bad_rows, bad_cols = (np.unique(v) for v in block.unravel(bad))
    cands: list[tuple[str, NDArray]] = []
    if cols > 1:
        cands.append(("column 0 (the bias column)", grid[:, 0].ravel()))
    cands += [(f"column {c}", grid[:, c].ravel()) for c in bad_cols[:4] if c != 0]
    cands += [(f"row {rr}", grid[rr, :].ravel()) for rr in bad_rows[:4]]
    if cols > 1:
        cands.append(("the weights (every column but the bias column 0)", grid[:, 1:].ravel()))
    cands.append(("the whole block", grid.ravel()))
    return cands


#: Named values of ``k / (lambda/m)`` for ``r = k theta``, with what each means.
_PENALTY_FACTORS = (
    (-1.0, "-lambda/m", "the cost regularizes these entries but the gradient does not"),
    (1.0, "lambda/m", "the gradient regularizes these entries but the cost does not"),
    (-0.5, "-lambda/(2m)", "the gradient's penalty is half the cost's: lambda/(2m) theta instead of lambda/m theta"),
    (0.5, "lambda/(2m)", "the gradient's penalty is 1.5 times the cost's (or the cost uses lambda/(4m))"),
    (-2.0, "-2 lambda/m", "the cost's penalty on these entries grows 2 lambda/m theta faster than the gradient's "
                          "(counted twice in the cost, not in the gradient?)"),
    (2.0, "2 lambda/m", "the gradient's penalty on these entries is 2 lambda/m theta more than the cost's"),
)


def _penalty_meaning(case: Case, k: float, misfit: float, what: str, evidence: dict[str, Any]) -> tuple[str, str]:
    """``(relation, meaning)`` of a fitted ``r = k theta``: ``k`` named against lambda/m when both are known
    (``evidence`` gets the ratio and the name)."""
    meaning = ("the gradient adds a penalty the cost does not have" if k > 0
               else "the cost has a penalty the gradient does not")
    lam, m = case.lam, case.m
    if not (lam and m):
        return "", ("the gradient's penalty on these entries exceeds the cost's by k theta (the cost leaves it "
                    "out, or uses a smaller factor)" if k > 0 else
                    "the cost's penalty on these entries exceeds the gradient's by |k| theta (the gradient leaves it "
                    "out, or uses a smaller factor, e.g. lambda/(2m) for lambda/m)")
    ratio = k / (lam / m)
    evidence["factor_over_lambda_over_m"] = ratio
    for value, text, why in _PENALTY_FACTORS:
        if abs(ratio - value) <= max(FIT_TOL, 2 * misfit) * abs(value):
            evidence["factor_name"] = text
            return f" = {text} (lambda = {lam:g}, m = {m})", why or meaning
    # the gradient's penalty is c times the cost's, with c named (1/(4m): divided by 2m twice)
    c = 1.0 + ratio
    named = name_factor(c, m) if what.startswith("the weights") else None
    if not named:
        return "", meaning
    short = named.split(" =")[0]
    evidence["penalty_factor"] = c
    evidence["factor_name"] = f"({short} - 1) lambda/m"
    return (f" = ({short} - 1) lambda/m (lambda = {lam:g}, m = {m})",
            f"the gradient's penalty is {named} times the cost's (lambda/m theta): "
            + ("divided by 2m twice?" if "4m" in named and "1/" in named else "a factor in the penalty's gradient"))


def regularization(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """On a part of the block that covers every failing entry, ``r = k x``: a penalty in the cost or the
    gradient but not both, or with another factor.  A vector's intercept alone (``theta[0]``, the regression
    exercises) fits with ``k`` named only: ``+-lambda/m``."""
    s = block.slice
    r, x, known = (case.a - case.n)[s], case.x[s], case.known[s]
    if len(block.shape) == 1 and bad.tolist() == [0] and case.k is not None and x[0] != 0:
        k = float(r[0] / x[0])
        for sign, text in ((1.0, "the gradient regularizes the intercept theta[0] but the cost does not"),
                           (-1.0, "the cost regularizes the intercept theta[0] but the gradient does not")):
            if abs(k - sign * case.k) <= 1e-6 * case.k + float(case.tol[s][0]) / abs(x[0]):
                return Finding("regularization-mismatch", (block.name,),
                               f"on entry 0 (the intercept) of {block.name}, analytical - numerical = k * theta with "
                               f"k = {k:.6g} = {'+' if sign > 0 else '-'}lambda/m ({case.k_text()}): {text} (the "
                               "intercept should not be regularized)",
                               {"factor": k, "entries": "entry 0", "factor_name": "lambda/m"})
    for what, idx in _candidates(block, bad):
        if not np.isin(bad, idx).all():
            continue
        idx = idx[known[idx]]
        if idx.size < 2:  # one entry always fits r = k theta: that names no cause
            continue
        k, misfit = fit(r[idx], x[idx])
        if misfit > 1e-2 or k == 0:
            continue
        evidence: dict[str, Any] = {"factor": k, "entries": what}
        rel, meaning = _penalty_meaning(case, k, misfit, what, evidence)
        return Finding("regularization-mismatch", (block.name,),
                       f"on {what} of {block.name}, analytical - numerical = k * theta with k = {k:.6g}{rel}: "
                       f"{meaning}" + (" (the bias should not be regularized)" if what.startswith("column 0") and k < 0
                                       else ""), evidence)
    return None


def penalty_columns(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """The gradient's penalty on the wrong columns: on each failing column ``r = k theta`` with ``k`` one of
    ``+-lambda/m``, some added and some missing (``Theta[:, :-1]`` for ``Theta[:, 1:]``)."""
    if len(block.shape) != 2 or case.k is None:
        return None
    cols = np.unique(block.unravel(bad)[1])
    if not 2 <= cols.size <= 3:
        return None
    R, T, base = block.matrix(case.a - case.n), block.matrix(case.x), case.k
    if not block.matrix(case.known)[:, cols].all():
        return None  # each failing column is fitted whole
    ks = []
    for c in cols:
        k, misfit = fit(R[:, c], T[:, c])
        if misfit > 1e-2 or abs(abs(k / base) - 1) > 1e-2:
            return None
        ks.append(int(round(k / base)))
    added, missing = [int(c) for c, k in zip(cols, ks) if k > 0], [int(c) for c, k in zip(cols, ks) if k < 0]
    if not added or not missing:
        return None
    return Finding(
        "regularization-mismatch", (block.name,),
        f"the gradient's penalty on {block.name} is on the wrong columns: it adds lambda/m theta on "
        f"column{'s' if len(added) > 1 else ''} {', '.join(map(str, added))} (k = +lambda/m, "
        f"{case.k_text()}), which the cost does not penalize, and leaves it out on column"
        f"{'s' if len(missing) > 1 else ''} {', '.join(map(str, missing))} (k = -lambda/m), which it "
        "does: the slice is shifted (Theta[:, :-1] where Theta[:, 1:] was meant)",
        {"added_columns": added, "missing_columns": missing, "factor": base, "factor_name": "lambda/m"})


def constant_offset(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """``r`` is the same constant on every failing entry of a row, a column or the block (named when it is
    ``lambda/m``, ``lambda``, ``1/m``...): something adds a number where it should add a term.  A single
    failing entry (a vector's intercept) fits any constant: it is named only when the constant is one of
    those names."""
    if not bad.size or not case.known[block.start + bad].all():
        return None
    vals = (case.a - case.n)[block.slice][bad]
    c = float(np.mean(vals))
    noise = float(np.max(case.tol[block.slice][bad]))
    if abs(c) <= 8 * noise:  # a constant within a few tolerances of zero is not resolved: any small mismatch fits
        return None
    if np.max(np.abs(vals - c)) > 1e-3 * abs(c) + 4 * noise:
        return None
    names = []
    if case.lam and case.m:
        names += [(case.lam / case.m, "lambda/m"), (case.lam / (2 * case.m), "lambda/(2m)"), (case.lam, "lambda")]
    if case.m:
        names += [(1.0 / case.m, "1/m")]
    named = next((t for v, t in names if abs(c - v) <= 1e-3 * abs(v)), None) or \
        next((f"-{t}" for v, t in names if abs(c + v) <= 1e-3 * abs(v)), None)
    if bad.size < 2 and not named:
        return None
    what = region(block, bad)
    return Finding("constant-offset", (block.name,),
                   f"on {what} of {block.name}, analytical - numerical = {c:.6g}" + (
                       f" = {named} (lambda = {case.lam:g}, m = {case.m})" if named else "")
                   + ", the same on every entry: the gradient adds a constant where it should add a term "
                     "(lambda/m instead of lambda/m * theta?)", {"offset": c, "offset_name": named or "", "region": what})


def data_missing(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """The analytic gradient equals the penalty's alone: the data term (backprop) is missing."""
    p = case.penalty
    if p is None or not case.whole(block):
        return None
    s = block.slice
    a, pb = case.a[s], p[s]
    if not np.any(pb) or not np.all(np.abs(a - pb) <= 1e-6 * np.abs(pb) + case.tol[s]):
        return None
    return Finding("data-term-missing", (block.name,),
                   f"on {block.name} the analytic gradient is the penalty alone, lambda/m theta ({case.k_text()}): "
                   "the data term (backprop's average over the examples) is missing")


def data_factor(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """The data term is off by a factor while the penalty is right: ``a - p = c (n - p)``, ``c`` named."""
    p = case.penalty
    if p is None or not case.whole(block):
        return None
    s = block.slice
    c, misfit = fit((case.a - p)[s], (case.n - p)[s])
    if misfit <= 1e-3 and abs(c + 1) <= FIT_TOL:
        return data_sign(block, c, case)
    named = name_factor(c, case.m if case.m else _whole(c))
    if misfit > 1e-3 or not named or c in (0.0, 1.0):
        return None
    if not case.m and named.startswith(("m", "1/m")):
        named += " (if m, the number of examples, is that)"
    why = ("the data term is not divided by m (the penalty is)" if named.startswith("m") else
           "the data term is divided by m twice" if named.startswith("1/m") else
           "a factor in the data term only (a doubled sum, or 2 (h - y)?)")
    inferred = f" (lambda/m = {case.k:.6g}, inferred from the mismatch)" if case.k_inferred else ""
    return Finding("scale-mismatch", (block.name,),
                   f"on {block.name}, the data term of the gradient (the gradient without its penalty lambda/m "
                   f"theta{inferred}) is {named} times the cost's, while the penalty is right: {why}",
                   {"factor": c, "factor_name": named, "part": "data"})


def data_sign(block: Block, c: float, case: Case, note: str = "") -> Finding:
    """``sign-flip`` of the data term alone: ``a - p = -(n - p)`` with the penalty's gradient ``p`` right."""
    inferred = f" (lambda/m = {case.k:.6g}, inferred from the mismatch)" if case.k_inferred else ""
    return Finding("sign-flip", (block.name,),
                   f"on {block.name}, the data term of the gradient (the gradient without its penalty lambda/m "
                   f"theta{inferred}) is -1 times the cost's, while the penalty is right: a sign slip in the data "
                   "term (y - h instead of h - y)" + note, {"factor": c, "part": "data"})


def _whole(c: float) -> int | None:
    """``c`` or ``1/c`` as a whole number of at least 3 (a candidate for ``m``, the number of examples)."""
    for v in (c, 1.0 / c if c else 0.0):
        if v >= 3 and abs(v - round(v)) <= FIT_TOL * v:
            return int(round(v))
    return None


def dropped_example(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """``r`` on a Dense-like block is rank one, ``u v^T``: one example's contribution ``delta_i a_i^T / m``
    missing or counted twice (named when the subject's activations identify ``a_i``)."""
    if len(block.shape) != 2 or min(block.shape) < 2 or not case.whole(block) or 2 * bad.size < block.size:
        return None  # one example's contribution touches (nearly) every entry of the block
    if case.m is not None and case.m < 3:
        return None  # with one or two examples any residual of a Dense block has rank one or two
    rows, cols = block.unravel(bad)
    if np.unique(rows).size < 2 or np.unique(cols).size < 2:
        return None  # a single wrong row or column is rank one too, and is not an example
    u, sig, vt = np.linalg.svd(block.matrix(case.a - case.n), compute_uv=True, full_matrices=False)
    if sig[0] == 0 or sig[1] > 1e-6 * sig[0]:
        return None
    if np.ptp(u[:, 0]) <= 1e-6 * float(np.max(np.abs(u[:, 0]))):
        return None  # every row the same: an offset per column (a missing term of a mean), not one example
    # m unknown: a gradient made of fewer than 3 examples' outer products has rank below 3, and any error of
    # its data term is then of low rank too; a rank-one residual says "one example" only beside a numerical
    # gradient of rank 3 or more
    own = np.linalg.svd(block.matrix(case.n), compute_uv=False)
    if case.m is None and np.count_nonzero(own > 1e-6 * own[0]) < min(3, own.size):
        return None
    example = identify_example(case, block, vt[0])
    who = f" example {example}'s" if example is not None else " one example's"
    return Finding("dropped-example", (block.name,),
                   f"on {block.name}, analytical - numerical is rank one (an outer product u v^T, second singular "
                   f"value {sig[1] / sig[0]:.1e} of the first):{who} contribution delta_i a_i^T / m is missing "
                   "from the gradient or counted twice (a loop over the examples that skips one: range(1, m), or "
                   "m - 1)", {"example": example, "rank": 1})


def identify_example(case: Case, block: Block, v: NDArray) -> int | None:
    """The example whose ``[1, input]`` is parallel to ``v``, for a network's Dense block."""
    if getattr(case.subject, "kind", "") != "network" or v[0] == 0:
        return None
    binding = next((b for b in case.subject.network.bindings if b.block == block.name), None)
    if binding is None:
        return None
    try:
        acts = case.subject.activations()
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


def _confined(block: Block, bad: NDArray) -> str:
    """The lines a set of entries of a 2-D block is confined to (at most two columns or rows), or ''."""
    if len(block.shape) != 2:
        return ""
    rows, cols = block.unravel(bad)
    ucols, urows = np.unique(cols), np.unique(rows)
    if len(ucols) <= 2 and len(ucols) < block.shape[1]:
        return "column" + ("s " if len(ucols) > 1 else " ") + ", ".join(map(str, ucols))
    if len(urows) <= 2 and len(urows) < block.shape[0]:
        return "row" + ("s " if len(urows) > 1 else " ") + ", ".join(map(str, urows))
    return ""


def localized(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """The mismatch is confined to a proper part of the block (a few entries, rows or columns); the whole
    block, or every row, is no confinement and says nothing."""
    if bad.size >= block.size:
        return None
    where = "one entry" if bad.size == 1 else _confined(block, bad)
    if not (bad.size <= 10 or where):
        return None
    where = where or f"{bad.size} entries"
    return Finding("localized", (block.name,),
                   f"the mismatch in {block.name} is confined to {where}: {case.labels(block.start + bad)}; "
                   "look at the code that computes exactly these entries",
                   {"entries": [case.report.layout.label(int(block.start + j)) for j in bad[:20]],
                    "count": int(bad.size), "region": where})


#: The block patterns, in the order they are tried: the first that fits explains the block.  The layer
#: functions' (:mod:`layerkit.diagnosis.layer_patterns`) come after the scale (which wins over the affine
#: fit of the batch statistics); the batch statistics before the penalty's ``r = k theta`` and the constant
#: offset, which are special cases of their fit on one feature (on an input whose forward subtracts the
#: batch mean, which the penalty and offset patterns do not ask), and the one that spends evaluations last.
BLOCK_PATTERNS: tuple[Pattern, ...] = (zero_gradient, scale_or_sign, layout_mismatch, batch_statistics,
                                       regularization, penalty_columns, constant_offset, data_missing,
                                       data_factor, pooling_spread, kernel_flipped, dropped_example, localized)


def merged(findings: list[Finding], case: Case) -> list[Finding]:
    """One overall finding when every failing block shows the same scale or sign pattern."""
    failing = case.report.failed_blocks
    if len(failing) < 2 or not all(case.whole(b) for b in case.report.layout.blocks):
        return findings
    for code in ("sign-flip", "scale-mismatch"):
        fs = [f for f in findings if f.code == code]
        if len(fs) == len(failing) and len({round(f.evidence.get("factor", 0), 6) for f in fs}) == 1:
            c, misfit = fit(case.a, case.n)
            if misfit <= FIT_TOL:
                first = fs[0]
                findings = [f for f in findings if f.code != code]
                msg = first.message.replace(f"on {first.blocks[0]}", "on every block")
                findings.append(Finding(code, tuple(failing), msg + " (overall)", {**first.evidence, "overall": True}))
    return findings
