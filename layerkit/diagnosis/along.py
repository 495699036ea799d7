"""Block-level patterns read along directions: the doctor's fits for a block of a directional report whose
mismatch is spread over many entries, so that no entry was measured alone.

Each of the block's own directional tests ``k`` (a unit direction ``u_k`` restricted to the block) gives the
numerical derivative ``n_k`` (the cost's), the analytical ``a_k = u_k . g`` and the tolerance ``tau_k``.  A
pattern is a linear model of the mismatch in a few features of the block read along the same directions:

* ``x_k = u_k . theta`` (the block's values), ``w_k = u_k . theta_W`` (every column but the bias column 0: what
  a course-style penalty covers), ``s_k = u_k . theta_S`` (every column but the last: a penalty shifted by one);
* ``p_k = u_k . p`` with ``p = (lambda/m) theta_W`` the penalty's gradient, when ``lambda/m`` is known or
  inferred (:attr:`~layerkit.diagnosis.case.Case.k`);
* ``q_k = u_k . T(g)``: the analytic gradient re-read in the other unrolling order.

A model with ``d`` coefficients is accepted only with at least ``d + 2`` directions and when every direction's
residual is within :data:`ALONG_TOL` times its own tolerance, scaled by the factor the model multiplies the
numerical derivative by (``a = c n`` carries ``c`` times ``n``'s error).  The numbers are the cost's: nothing
here is read off the analytic gradient alone except the penalty-only test, which compares the analytic
gradient with the penalty's gradient entry by entry, and is named only for a block that fails.
"""

from __future__ import annotations

import numpy as np

from ..check.report import Finding
from ..nn.layout import Block, Order
from .case import FIT_TOL, Along, Case, name_factor
from .patterns import _ORDER_NAMES, _whole, data_sign


def data_factor(f: Along) -> Finding | None:
    """``a - p = c (n - p)``: the data term off by a factor ``c`` while the penalty is right (the penalty's
    gradient ``p``, known or inferred, is not zero on the block); ``c = 0`` is the data term missing."""
    case, block = f.case, f.block
    p = case.penalty
    if p is None or not np.any(p[block.slice]):
        return None
    pk = f.along(p[block.slice])
    coef = f.holds(f.a - pk, (f.n - pk)[:, None], carry=1.0)
    if coef is None:
        return None
    c = float(coef[0])
    if abs(c - 1) <= FIT_TOL:
        return None
    if abs(c + 1) <= FIT_TOL:
        return data_sign(block, c, case, f.note())
    inferred = f" (lambda/m = {case.k:.6g}, inferred from the mismatch)" if case.k_inferred else ""
    if abs(c) <= FIT_TOL:
        return Finding("data-term-missing", (block.name,),
                       f"on {block.name} the analytic gradient is the penalty alone, lambda/m theta{inferred}: the "
                       "data term (backprop's average over the examples) is missing" + f.note(),
                       {"factor": c, "directional": True})
    named = name_factor(c, case.m if case.m else _whole(c))
    if not named:
        return None
    if not case.m and named.startswith(("m", "1/m")):
        named += " (if m, the number of examples, is that)"
    why = ("the data term is not divided by m (the penalty is)" if named.startswith("m") else
           "the data term is divided by m twice" if named.startswith("1/m") else
           "a factor in the data term only (a doubled sum, or 2 (h - y)?)")
    return Finding("scale-mismatch", (block.name,),
                   f"on {block.name}, the data term of the gradient (the gradient without its penalty lambda/m "
                   f"theta{inferred}) is {named} times the cost's, while the penalty is right: {why}" + f.note(),
                   {"factor": c, "factor_name": named, "part": "data", "directional": True})


def scale_or_sign(f: Along) -> Finding | None:
    """``a = c n`` along every direction: a sign slip (``c = -1``) or a factor on the whole block."""
    coef = f.holds(f.a, f.n[:, None])
    if coef is None:
        return None
    c = float(coef[0])
    if abs(c - 1) <= FIT_TOL:
        return None
    if abs(c + 1) <= FIT_TOL:
        return Finding("sign-flip", (f.block.name,), f"analytical = -numerical on {f.block.name}" + f.note(),
                       {"factor": c, "directional": True})
    named = name_factor(c, f.case.m)
    shown = f" ({named})" if named and named != f"{c:.6g}" else ""
    return Finding("scale-mismatch", (f.block.name,), f"analytical = {c:.6g}{shown} x numerical on "
                   f"{f.block.name}" + f.note(), {"factor": c, "factor_name": named or "", "directional": True})


def layout(f: Along) -> Finding | None:
    """The analytic gradient of a matrix block unrolled in the other order: ``n = u . T^-1(g)`` along every
    direction, with ``T`` the re-reading of the block's entries from one order into the other."""
    block = f.block
    if len(block.shape) != 2 or 1 in block.shape:
        return None
    g = f.case.a[block.slice].astype(np.float64)
    declared: Order = block.order
    other: Order = "F" if declared == "C" else "C"
    # the gradient was written in `other` order: entry i of the analytic vector belongs where `other` puts it
    as_meant = g.reshape(block.shape, order=other).ravel(order=declared)
    if np.array_equal(as_meant, g):
        return None
    coef = f.holds(f.n, f.along(as_meant)[:, None])
    if coef is None or abs(float(coef[0]) - 1) > FIT_TOL:
        return None
    fix = "order='F'" if other == "F" else "order='C' (the default)"
    return Finding("layout-mismatch", (block.name,),
                   f"the gradient of {block.name} is unrolled in {_ORDER_NAMES[other]} order, while the blocks were "
                   f"given in {_ORDER_NAMES[declared]} order: along every direction, numerical matches the analytic "
                   f"gradient re-read as a {block.shape[0]}x{block.shape[1]} matrix in {_ORDER_NAMES[other]} order.  "
                   f"If the whole vector is in that order, pass {fix} with the blocks; otherwise unroll the gradient "
                   "as the cost reads theta" + f.note(),
                   {"shape": list(block.shape), "order": other, "directional": True})


def penalty_shifted(f: Along) -> Finding | None:
    """``a - n = d w + e s`` with ``d = -e``: the gradient's penalty on every column but the last instead of
    every column but the first (``Theta[:, :-1]`` where ``Theta[:, 1:]`` was meant); ``e`` is ``lambda/m``."""
    w, s = f.columns_zeroed(0), f.columns_zeroed(-1)
    if w is None or s is None:
        return None
    coef = f.holds(f.a - f.n, np.stack([f.along(w), f.along(s)], axis=1))
    if coef is None:
        return None
    d, e = float(coef[0]), float(coef[1])
    if not (e > 0 and abs(d + e) <= 1e-3 * e):
        return None
    case = f.case
    known = case.k
    named = "lambda/m" if known is not None and abs(e - known) <= 1e-3 * known else f"{e:.6g}"
    why = f" = {named} ({case.k_text()})" if named == "lambda/m" else ""
    return Finding("regularization-mismatch", (f.block.name,),
                   f"the gradient's penalty on {f.block.name} is on the wrong columns: along every direction, "
                   f"analytical - numerical = k (u . theta on every column but the last) - k (u . theta on every "
                   f"column but the first), k = {e:.6g}{why}: the slice is shifted (Theta[:, :-1] where Theta[:, 1:] "
                   "was meant)" + f.note(), {"factor": e, "directional": True, "entries": "the whole block"})


def penalty_term(f: Along) -> Finding | None:
    """``a - n = k w`` (a course-style penalty on the weights) or ``a - n = k x`` (on every entry): a penalty
    in the cost or in the gradient but not both, or with another factor."""
    case = f.case
    w = f.columns_zeroed(0)
    for what, v in ((("the weights (every column but the bias column 0)", w),) if w is not None else ()) \
            + (("every entry", f.x),):
        coef = f.holds(f.a - f.n, f.along(v)[:, None])
        if coef is None or coef[0] == 0:
            continue
        k = float(coef[0])
        rel = ""
        if case.k is not None:
            rel = f" = {k / case.k:.3g} lambda/m ({case.k_text()})"
        return Finding("regularization-mismatch", (f.block.name,),
                       f"along every direction in {f.block.name}, analytical - numerical = k (u . theta) on {what}, "
                       f"with k = {k:.6g}{rel}: a penalty term present in the cost or in the gradient but not both"
                       + f.note(), {"factor": k, "directional": True, "entries": what})
    return None


def penalty_only(case: Case, block: Block) -> Finding | None:
    """The analytic gradient of a failing block is the penalty's gradient and nothing else, read entry by entry
    off the analytic gradient: ``g = k theta_W`` with ``k > 0`` (the known ``lambda/m``, or fitted)."""
    s = block.slice
    a = case.a[s].astype(np.float64)
    p = case.penalty
    if p is not None:
        pb = p[s]
        if np.any(pb) and np.all(np.abs(a - pb) <= 1e-9 * float(np.max(np.abs(pb)))):
            return Finding("data-term-missing", (block.name,),
                           f"on {block.name} the analytic gradient is the penalty alone, lambda/m theta "
                           f"({case.k_text()}), and the block fails along its own directions: the data term "
                           "(backprop's average over the examples) is missing", {"directional": True})
        return None
    if case.lam == 0:
        return None
    w = Along(case, block).columns_zeroed(0)
    if w is None or not np.any(w):
        return None
    k = float(a @ w) / float(w @ w)
    if not k > 0 or not np.all(np.abs(a - k * w) <= 1e-9 * float(np.max(np.abs(k * w)))):
        return None
    return Finding("data-term-missing", (block.name,),
                   f"on {block.name} the analytic gradient is k theta on every column but the bias column, "
                   f"k = {k:.6g} (lambda/m, inferred), and the block fails along its own directions: it is the "
                   "penalty's gradient alone, and the data term (backprop's average over the examples) is missing",
                   {"directional": True, "factor": k})


def zero_gradient(f: Along) -> Finding | None:
    if f.size and np.all(f.a == 0) and np.any(f.n != 0):
        return Finding("zero-gradient", (f.block.name,), f"analytical is exactly 0 along every direction in "
                       f"{f.block.name}: the block is never written" + f.note(),
                       {"whole_block": True, "directional": True})
    return None


#: The order the directional fits are tried in: the penalty-aware factor first (it is the more specific
#: model: with a penalty on the block, ``a = c n`` fits it only approximately), then the rest.
ALONG_PATTERNS = (zero_gradient, data_factor, scale_or_sign, layout, penalty_shifted, penalty_term)


def directional_block(case: Case, block: Block) -> Finding | None:
    """The first block-level pattern that holds along the block's own directions (module docstring), or the
    penalty-only test read off the analytic gradient."""
    found = penalty_only(case, block)
    if found is not None:
        return found
    f = Along(case, block)
    if f.size < 2:
        return None
    for pattern in ALONG_PATTERNS:
        found = pattern(f)
        if found is not None:
            return found
    return None

