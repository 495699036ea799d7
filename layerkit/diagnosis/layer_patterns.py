"""The doctor's patterns of layer-function bugs: a batch normalization whose input gradient treats the batch
statistics as constants, a max pooling whose gradient is spread over its windows, and a convolution whose
input gradient uses the kernel flipped.  Each returns its finding when its model fits the block (None
otherwise), like the patterns of :mod:`layerkit.diagnosis.patterns`, in whose
:data:`~layerkit.diagnosis.patterns.BLOCK_PATTERNS` they are tried (after the scale and sign).

Every fit is made on what the user's code computes: the numerical gradient (from the user's forward) and the
analytic one (from the user's backward), and for the kernel a few more evaluations of the user's forward.
Nothing is assumed of the layer but the shape of its input: ``(N, D)`` or ``(N, C, H, W)`` blocks, and for
the kernel a second ``(F, C, HH, WW)`` block.  A network's blocks are its parameters, never a batch of
inputs, so these patterns leave networks alone.

``r = analytical - numerical`` is the residual, ``tol`` each entry's tolerance (``SAFETY`` = 16 times the
error bound of its estimate), so ``tol / SAFETY`` is the estimate's own error.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..check.report import Finding
from ..check.tolerance import SAFETY, directional_tolerance
from ..nn.layout import Block
from ..numerics import Direction
from .case import FIT_TOL, Case, fit

#: Fewest values per feature for the affine fit of :func:`batch_statistics`: two coefficients per feature
#: leave ``N - 2`` values to test the fit on; with 3 or more, a residual that is not affine in ``x`` fits to
#: FIT_TOL by chance with probability about ``FIT_TOL^3``.
MIN_GROUP = 5

#: How many times its summed tolerance the numerical gradient of a block must be, summed in absolute value,
#: for :func:`batch_statistics` to read "sums to 0 over the batch" as the forward subtracting the batch mean:
#: the entries then cancel to at most ``1 / RESOLVED`` of their mass, and each tolerance is ``SAFETY`` = 16
#: times its estimate's error bound, so the mass is at least 64 times the estimates' error.  (In float32 a
#: batchnorm with a small ``gamma`` has a numerical input gradient only a few tolerances large.)
RESOLVED = 4

#: Directions :func:`kernel_flipped` measures along (2 evaluations each, and 1 for the cost at the flipped
#: kernel).
FLIP_DIRECTIONS = 3


def _inputs(case: Case) -> bool:
    """Whether the blocks can be a layer's inputs (a function's or a layer's check, not a network's)."""
    return getattr(case.subject, "kind", "") != "network"


def _features(block: Block, flat: NDArray) -> NDArray:
    """The block of ``flat`` as ``(values, features)``: the columns of an ``(N, D)`` block, the channels of an
    ``(N, C, H, W)`` one over ``(N, H, W)``."""
    v = block.matrix(flat).astype(np.float64)
    if v.ndim == 4:
        return v.transpose(0, 2, 3, 1).reshape(-1, v.shape[1])
    return v


def batch_statistics(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """``batch-statistics-missing``: a batch normalization's input gradient without the terms of the batch
    mean and variance (``dx = dout * gamma / sqrt(var + eps)``, the statistics treated as constants).

    The true gradient is ``(N dxhat - sum(dxhat) - xhat sum(dxhat xhat)) / (N sigma)`` per feature; leaving
    out the mean's term ``-sum(dxhat) / (N sigma)`` and the variance's ``-xhat sum(dxhat xhat) / (N sigma)``
    leaves, per feature ``j`` (a column of ``(N, D)``, a channel of ``(N, C, H, W)`` over ``(N, H, W)``)::

        r_ij = c0_j + c1_j (x_ij - mean_i x_ij)

    a constant (the mean's term) plus a multiple of the centred input (the variance's, as ``xhat`` is
    affine in ``x``).  The fit, by least squares per feature, must hold

    * on every feature, to within every entry's tolerance, and to a relative misfit
      ``||r - fit|| / ||r||`` of at most ``FIT_TOL`` plus what the estimates' own error
      (``||tol|| / SAFETY``) can leave: a residual affine in ``x`` is what the missing terms leave, and
      little else does;
    * with at least :data:`MIN_GROUP` values per feature (the fit has two coefficients);

    and the numerical gradient must show the normalization itself: on every feature it sums to zero over
    the batch within the sum of the entries' tolerances (the cost does not change when a feature is
    shifted by the same amount on every example: the forward subtracts the batch mean), with that sum
    resolved (the numerical gradient at least :data:`RESOLVED` times its tolerance, summed over the block).  A scale bug
    ``a = c n`` (also affine in ``n``, but not in ``x``) is named by ``scale-mismatch``, tried first.  Each
    term is named when its part of the fit is above ``FIT_TOL ||r||`` and the estimates' error.

    Whether a term is missing or there with a wrong factor (the wrong sign, ``N - 1`` for ``N``) is measured
    when ``gamma`` and ``beta`` are inputs of the check too (:func:`_term_factors`); otherwise the finding
    says "missing or wrong".  A penalty's ``r = k x`` and a per-feature constant are special cases of the
    fit, so this pattern is tried before theirs: on an input whose cost is invariant to shifting a feature
    over the batch, they are the statistics' terms."""
    if not _inputs(case) or len(block.shape) not in (2, 4) or not case.whole(block):
        return None
    r = _features(block, case.a - case.n)
    n, x, tol = (_features(block, v) for v in (case.n, case.x, case.tol))
    if r.shape[0] < MIN_GROUP or not np.isfinite(r).all():
        return None
    if not np.all(np.abs(n.sum(axis=0)) <= tol.sum(axis=0)) or np.abs(n).sum() < RESOLVED * tol.sum():
        return None  # the cost changes when a feature is shifted over the batch: no batch mean subtracted
    centred = x - x.mean(axis=0)
    c0 = r.mean(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        c1 = np.where((centred ** 2).sum(axis=0) > 0, (r * centred).sum(axis=0) / (centred ** 2).sum(axis=0), 0.0)
    fitted = c0 + c1 * centred
    resid = r - fitted
    norm_r, error = float(np.linalg.norm(r)), float(np.linalg.norm(tol)) / SAFETY
    misfit = float(np.linalg.norm(resid))
    if norm_r == 0 or np.any(np.abs(resid) > tol) or misfit > FIT_TOL * norm_r + error:
        return None
    floor = FIT_TOL * norm_r + error
    parts = {"mean": (c0, float(np.linalg.norm(np.broadcast_to(c0, r.shape)))),
             "variance": (c1, float(np.linalg.norm(c1 * centred)))}
    off = [t for t in ("mean", "variance") if parts[t][1] > floor]
    if not off:
        return None
    found = _term_factors(case, block, x, {t: parts[t][0] for t in off})
    features = r.shape[1]
    per = "column" if len(block.shape) == 2 else "channel"
    text = _statistics_text(off, found, r.shape[0])
    evidence: dict[str, Any] = {"terms": off, "features": features, "per": per, "misfit": misfit / norm_r}
    if found is not None:
        evidence["present_factors"] = found[1]
        evidence["gamma_beta"] = list(found[0])
    return Finding(
        "batch-statistics-missing", (block.name,),
        f"on every feature of {block.name} ({features} {per}{'s' if features > 1 else ''}"
        f"{'' if per == 'column' else ', over (N, H, W)'}), "
        f"analytical - numerical = c0 + c1 (x - mean(x)) over the batch (relative misfit {misfit / norm_r:.1e}), "
        "and the numerical gradient sums to 0 over the batch in every feature (the forward subtracts the batch "
        f"mean): {text}", evidence)


#: How close to its expected size a fitted term must be (relative) for :func:`batch_statistics` to measure
#: its factor: ``sigma`` is taken as the batch's standard deviation without the forward's ``eps`` (unknown),
#: which moves the sizes by about ``eps / (2 var)`` (5e-6 for ``eps = 1e-5`` and unit variance).
STAT_TOL = 1e-2

_TERMS = {"mean": "the mean's term -sum(dxhat) / (N sigma)",
          "variance": "the variance's term -xhat sum(dxhat xhat) / (N sigma)"}


def _term_factors(case: Case, block: Block, x: NDArray, fitted: dict[str, NDArray]
                  ) -> tuple[tuple[str, str], dict[str, float]] | None:
    """The ``gamma`` and ``beta`` blocks, and the factor each fitted term is present with in the analytic
    gradient (0: missing; 1 would be right), measured against what the term would leave in ``r`` were it
    missing, per feature: ``gamma sum(dout) / (N sigma)`` for the mean's (``sum(dout)`` is the numerical
    gradient of ``beta``), ``gamma sum(dout xhat) / (N sigma^2)`` times ``x - mean`` for the variance's
    (``sum(dout xhat)`` is that of ``gamma``).  A term fitted as ``k`` times its size is present ``1 - k``
    times.  Tried on every ordered pair of the other blocks of shape ``(features,)``; a pair is taken when every
    fitted term is such a multiple over the features to a relative misfit of :data:`STAT_TOL` and, with a
    single feature (where any pair fits), its factors are named ones (:func:`_named_factor`).  None when no
    pair is."""
    N, features = x.shape
    vectors = [b for b in case.report.layout.blocks
               if b.name != block.name and tuple(b.shape) == (features,) and case.whole(b)]
    sigma = np.sqrt(x.var(axis=0))
    if not np.all(sigma > 0):
        return None
    for g in vectors:
        for b in vectors:
            if g.name == b.name:
                continue
            gamma = case.x[g.slice].astype(np.float64)
            sizes = {"mean": gamma * case.n[b.slice] / (N * sigma),
                     "variance": gamma * case.n[g.slice] / (N * sigma ** 2)}
            factors = {}
            for term, coef in fitted.items():
                k, misfit = fit(np.asarray(coef, dtype=np.float64), np.asarray(sizes[term], dtype=np.float64))
                if misfit > STAT_TOL or (features < 2 and _named_factor(1.0 - k, N) is None):
                    break
                factors[term] = 1.0 - k
            else:
                return (g.name, b.name), factors
    return None


def _named_factor(c: float, N: int) -> str | None:
    """A name for the factor a term is present with: 0 (missing), -1 (the wrong sign), N/(N-1) or (N-1)/N
    (N - 1 for N somewhere), 2 or 1/2; None for another."""
    names = [(0.0, "missing"), (-1.0, "with the wrong sign"), (2.0, "twice"), (0.5, "halved")]
    if N > 1:
        names += [(N / (N - 1), f"N/(N-1) = {N}/{N - 1} times (N - 1 where N is meant?)"),
                  ((N - 1) / N, f"(N-1)/N = {N - 1}/{N} times (N - 1 where N is meant?)")]
    return next((text for v, text in names if abs(c - v) <= STAT_TOL * max(1.0, abs(v))), None)


def _statistics_text(off: list[str], found: tuple[tuple[str, str], dict[str, float]] | None, N: int) -> str:
    """What the fitted terms say: missing, or there with a factor (when :func:`_term_factors` measured it)."""
    if found is None:
        return (f"the input gradient's {' and '.join(off)} term{'s are' if len(off) > 1 else ' is'} missing or wrong"
                " (the batch statistics treated as constants, dx = dout * gamma / sigma, leaves both out; the "
                "numerical gradients of gamma and beta, as inputs measured entry by entry, tell which)")
    (gamma, beta), factors = found
    missing = [t for t in off if abs(factors[t]) <= STAT_TOL]
    parts = []
    if missing:
        parts.append(f"the input gradient treats the batch {' and '.join(missing)} as constant"
                     f"{'s' if len(missing) > 1 else ''}: it is missing {' and '.join(_TERMS[t] for t in missing)}"
                     + (" (dx = dout * gamma / sigma alone)" if len(missing) == 2 else ""))
    for t in off:
        if t not in missing:
            parts.append(f"{_TERMS[t]} is there {_named_factor(factors[t], N) or f'{factors[t]:.4g} times'}")
    kept = [t for t in ("mean", "variance") if t not in off]
    return ("; ".join(parts) + (f"; the {kept[0]}'s term is right" if kept else "")
            + f"; the terms' sizes measured from the numerical gradients of {gamma} and {beta}")


#: Window sides :func:`pooling_spread` tries on every image size; larger ones only when they divide it.
MAX_WINDOW = 8


def _window_sizes(n: int) -> list[int]:
    """The window sides tried along an image side of ``n``: 1 to :data:`MAX_WINDOW`, and every divisor of
    ``n`` (a global pooling's window is the whole side)."""
    return sorted({k for k in range(1, min(n, MAX_WINDOW) + 1)} | {k for k in range(1, n + 1) if n % k == 0})


def pooling_spread(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """``pooling-spread``: a max pooling whose gradient is spread over each window instead of routed to the
    window's maximum.

    The window is inferred from the gradients alone: on an ``(N, C, H, W)`` block, every ``ph x pw`` is tried
    (each side 1 to :data:`MAX_WINDOW` or a divisor of the image's, smallest area first), tiling the image from
    its corner with stride = window (rows and columns the tiles leave over must pass).  The model, on every
    tile:

    * the numerical gradient is concentrated: at most one entry beyond its tolerance (a max depends on its
      largest entry alone), on every tile but at most a quarter of those with a numerical mass (a near tie
      within the step splits ``dout`` between two entries: a kink the step crossed, common in float32);
    * the analytic gradient is uniform on the tile, to ``4 tol`` plus ``FIT_TOL`` of its value;
    * and either the tile sums agree (the upstream value divided evenly: ``dout / (ph pw)`` on every entry,
      average pooling's gradient), or the uniform value is the numerical tile's sum (``dout`` copied to every
      entry), to ``4`` times the tile's summed tolerance plus ``FIT_TOL`` of the value; one of the two on every
      tile.

    A sub-window of the true one fails the sums (its tiles without the maximum have analytic mass and no
    numerical one), a larger one the concentration (several maxima in every tile), so at most one size fits.
    The numerical gradient must be nonzero on some tile.  Average pooling's own gradient (uniform numerical
    tiles) fails the concentration."""
    if not _inputs(case) or len(block.shape) != 4 or not case.whole(block):
        return None
    N, C, H, W = block.shape
    n, a, tol = (block.matrix(v).astype(np.float64) for v in (case.n, case.a, case.tol))
    flags = np.zeros(block.size, dtype=bool)
    flags[bad] = True
    bad_grid = flags.reshape(block.shape, order=block.order)
    sizes = sorted(((ph, pw) for ph in _window_sizes(H) for pw in _window_sizes(W) if ph * pw >= 2),
                   key=lambda s: (s[0] * s[1], s))
    for ph, pw in sizes:
        Ho, Wo = H // ph, W // pw
        if bad_grid[:, :, Ho * ph:, :].any() or bad_grid[:, :, :, Wo * pw:].any():
            continue
        found = _tiles_fit(*(t[:, :, :Ho * ph, :Wo * pw].reshape(N, C, Ho, ph, Wo, pw) for t in (n, a, tol)))
        if found is not None:
            how = {"divided": f"divided evenly over the window (dout / {ph * pw} on every entry: average "
                              "pooling's gradient)",
                   "copied": "copied to every entry of the window"}[found]
            return Finding(
                "pooling-spread", (block.name,),
                f"on {block.name}, in every {ph}x{pw} window (stride {ph}x{pw}, inferred from the gradients), the "
                "numerical gradient is on one entry (the window's maximum) and the analytic one is the same on "
                f"every entry, {how}: max pooling's gradient is spread over the window instead of routed to the "
                "maximum (dx[argmax] += dout)", {"window": [ph, pw], "stride": [ph, pw], "how": found})
    return None


def _tiles_fit(n: NDArray, a: NDArray, tol: NDArray) -> str | None:
    """``"divided"`` or ``"copied"`` when the tiles of ``(N, C, Ho, ph, Wo, pw)`` arrays fit
    :func:`pooling_spread`'s model, else None."""
    axes = (3, 5)
    beyond = (np.abs(n) > tol).sum(axis=axes)
    massive = int(np.count_nonzero(beyond))
    if massive == 0 or np.count_nonzero(beyond > 1) > massive // 4:
        return None
    mean_a = a.mean(axis=axes, keepdims=True)
    slack = 4 * tol.max(axis=axes, keepdims=True)
    if np.any(np.abs(a - mean_a) > slack + FIT_TOL * np.abs(mean_a)):
        return None
    sums_n, sums_a = n.sum(axis=axes, keepdims=True), a.sum(axis=axes, keepdims=True)
    slack_sum = 4 * tol.sum(axis=axes, keepdims=True)
    if np.all(np.abs(sums_a - sums_n) <= slack_sum + FIT_TOL * np.abs(sums_n)):
        return "divided"
    if np.all(np.abs(mean_a - sums_n) <= slack_sum + FIT_TOL * np.abs(sums_n)):
        return "copied"
    return None


def _partners(case: Case, block: Block) -> list[Block]:
    """The kernels ``(F, C, HH, WW)`` a failing ``(N, C, H, W)`` block may be convolved with: another 4-D
    block with its channels, no larger spatially, more than one tap, and changed by a spatial flip."""
    if len(block.shape) != 4:
        return []
    out = []
    for k in case.report.layout.blocks:
        if k.name == block.name or len(k.shape) != 4 or k.shape[1] != block.shape[1]:
            continue
        if k.shape[2] > block.shape[2] or k.shape[3] > block.shape[3] or k.shape[2] * k.shape[3] < 2:
            continue
        w = k.matrix(case.x)
        if np.array_equal(w, w[:, :, ::-1, ::-1]):
            continue  # a symmetric kernel: flipped, it is itself, and nothing can be told
        out.append(k)
    return out


def kernel_flipped(case: Case, block: Block, bad: NDArray) -> Finding | None:
    """``kernel-flipped``: a convolution whose input gradient uses the kernel flipped (rotated by 180
    degrees) relative to the forward's.

    The model: the analytic gradient of the input block ``x`` (``(N, C, H, W)``) is the gradient of the
    user's own cost with the kernel ``w`` (a ``(F, C, HH, WW)`` block) replaced by ``w[:, :, ::-1, ::-1]``.
    It is measured, not assumed: along :data:`FLIP_DIRECTIONS` unit directions ``u`` in ``x`` (the mismatch's
    own when the check measured the block whole, and seeded random ones), the derivative of the cost at the
    point with ``w`` flipped (central differences,
    :meth:`~layerkit.diagnosis.experiments.Experiments.derivatives_at`: ``1 + 2 x 3`` evaluations, charged to
    the doctor's budget; the caller's arrays are never touched, the point is a copy) must agree with
    ``a . u`` within the check's own directional tolerance, on every direction; at the real ``w`` the
    numerical ``n . u`` (from the check, with the bound ``sum |u_j| tol_j``, or measured the same way in a
    directional report) must disagree with it beyond its error on at least one direction, by at least 10
    times the agreement's tolerance (else the flip changes too little of what the directions see for their
    agreement to tell the two kernels apart); and the flipped point must explain the mismatch, leaving at
    most ``FIT_TOL`` of the largest one at the real ``w`` beyond the estimates' own error (their bound over
    ``SAFETY``: a float32 central difference is good to about 1e-3).  Only for a function's or a layer's
    check, with the doctor's experiments."""
    if case.experiments is None or not _inputs(case):
        return None
    for kernel in _partners(case, block):
        def test(k: Block = kernel) -> Finding | None:
            return _flip_test(case, block, k)

        found = case.attempt(f"the test of a flipped kernel {kernel.name}", test)
        if found is not None:
            return found
    return None


def _flip_test(case: Case, block: Block, kernel: Block) -> Finding | None:
    x0, a, dtype = case.report.x, case.a[block.slice].astype(np.float64), case.report.dtype
    dirs = _flip_directions(case, block)
    flipped = np.array(x0, copy=True)
    w = kernel.matrix(x0)
    flipped[kernel.slice] = np.ascontiguousarray(w[:, :, ::-1, ::-1]).ravel(order=kernel.order)
    values, bounds, taken = case.experiments.derivatives_at(flipped, dirs)
    off_flip, tol_flip, err_flip = _against(a, values, bounds, taken, dtype)
    spent = 1 + 2 * len(dirs)
    if not np.all(off_flip <= tol_flip):
        return None
    if case.whole(block):
        n, tol = case.n[block.slice].astype(np.float64), case.tol[block.slice].astype(np.float64)
        off_real = np.array([abs(float((n - a) @ d.u)) for d in dirs])
        tol_real = np.array([float(np.abs(d.u) @ tol) for d in dirs])
    else:
        values, bounds, taken = case.experiments.derivatives_at(x0, dirs)
        off_real, tol_real, _ = _against(a, values, bounds, taken, dtype)
        spent *= 2
    worst = float(off_real.max())
    if (not np.any(off_real > tol_real) or worst < 10 * float(tol_flip.max())
            or float(off_flip.max()) > FIT_TOL * worst + float(err_flip.max())):
        return None
    left = float(off_flip.max()) / worst
    along = ("the mismatch and " if case.whole(block) else "") + f"{len(dirs) - case.whole(block)} random directions"
    return Finding(
        "kernel-flipped", (block.name,),
        f"along {along} in {block.name}, the analytic gradient is the derivative of the cost with the kernel "
        f"{kernel.name} flipped ({kernel.name}[:, :, ::-1, ::-1]), to {left:.1e} of the mismatch at {kernel.name} "
        f"itself ({spent} more evaluations of the forward): the input gradient uses the kernel rotated by 180 "
        f"degrees relative to the forward (a full convolution of dout with {kernel.name} that forgot, or doubled, "
        "its rotation)",
        {"kernel": kernel.name, "directions": len(dirs), "evaluations": spent, "mismatch_left": left})


def _flip_directions(case: Case, block: Block) -> list[Direction]:
    """:data:`FLIP_DIRECTIONS` unit directions in ``block``: the mismatch's own (``r / ||r||``, when the block
    was measured whole: the direction in which the real kernel and the flipped one differ most), then seeded
    random ones."""
    rng = np.random.default_rng(0x666C6970)
    out = []
    if case.whole(block):
        r = (case.a - case.n)[block.slice].astype(np.float64)
        if np.isfinite(r).all() and np.any(r):
            out.append(Direction(block.start, block.stop, r / np.linalg.norm(r)))
    while len(out) < FLIP_DIRECTIONS:
        u = rng.standard_normal(block.size)
        out.append(Direction(block.start, block.stop, u / np.linalg.norm(u)))
    return out


def _against(a: NDArray, values: NDArray, bounds: NDArray, taken: list[NDArray], dtype: Any
             ) -> tuple[NDArray, NDArray, NDArray]:
    """``|D - a . t|`` for measured derivatives ``D`` along the displacements ``t`` really taken, the directional
    tolerance of each (the check's own formula: the analytic gradient's rounding, the estimate's error bound,
    the floor), and the estimate's own error (the bound over ``SAFETY``)."""
    along = np.array([float(a @ t) for t in taken])
    off = np.abs(np.asarray(values, dtype=np.float64) - along)
    tol = np.array([directional_tolerance(float(v), float(p), 0.0, 0.0, dtype) + float(b)
                    for v, p, b in zip(values, along, bounds)])
    return off, tol, np.asarray(bounds, dtype=np.float64) / SAFETY
