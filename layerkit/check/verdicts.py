"""Verdict findings: the one place where a check says that it failed for a reason of its own, or that it could
not decide.  Cause findings (what is wrong with a gradient) are the doctor's
(:mod:`layerkit.diagnosis.patterns`).

* ``nondeterministic-cost`` and ``stateful-gradient``: the target is not a function of its parameters;
* ``precision-limited``, in three bearings (:attr:`~layerkit.check.report.Finding.bearing`):

  - *unresolved*: no entry fails, but the numerical derivative cannot resolve the gradient (its error bound
    is as large as the gradient itself), so a PASS would promise nothing: INCONCLUSIVE;
  - *undecided*: entries fail, but the check has evidence that finite differences of this cost do not
    measure its derivative (the second look found the error model misjudging the cost, estimates across a
    wide range of steps contradict each other, or a stencil that crossed a kink could only be settled
    coarsely): INCONCLUSIVE, never FAILED nor PASSED;
  - none: an explanation only (the doctor's: a mismatch at the level of the dtype's rounding, a noisy cost).

Nothing here can make a check pass.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ..nn.layout import ParameterLayout
from ..numerics import machine_eps
from .noise import EXCESS_THRESHOLD, Noise
from .refine import Scales
from .report import DirectionRecord, Finding

#: A mismatch of at most this many times its tolerance is inconclusive when the second look showed that the
#: error model misjudges this cost (see :func:`misjudged`).
MARGINAL = 4.0


# ---------------------------------------------------------------------- the target is not a function
def nondeterministic_cost(first: float, again: float) -> Finding:
    """Two evaluations at ``x0`` gave two costs."""
    return Finding(
        "nondeterministic-cost", (),
        f"the cost at the same point came out as {first:.17g} and then {again:.17g} (spread "
        f"{abs(again - first):.2e}): the target is not a deterministic function of its parameters (random "
        "sampling, dropout, a global counter?), so no numerical gradient of it can be trusted",
        {"costs": [first, again], "spread": abs(again - first)})


def nondeterministic_noise(noise: Noise) -> Finding:
    """The noise table at the same points came out differently on two passes."""
    return Finding(
        "nondeterministic-cost", (),
        f"the cost at the same points came out differently on two passes (noise {noise.level:.2e}): the target "
        "is not a deterministic function of its parameters (random sampling, dropout, a call counter?), so no "
        "numerical gradient of it can be trusted", {"noise": noise.level, "spread": noise.level})


def stateful_gradient(layout: ParameterLayout, a: NDArray, a1: NDArray) -> Finding:
    """The gradient at the same point differed between a call with fresh buffers (``a``) and one with the
    first call's (``a1``)."""
    diff = np.abs(a.astype(np.float64) - a1.astype(np.float64))
    j = int(np.nanargmax(diff))
    ratio = float(a1[j] / a[j]) if a[j] != 0 else math.inf
    how = ("it accumulates into its buffers (g += ... where g[...] = ... is meant): the second call "
           f"returned {ratio:.3g} times the first" if abs(ratio - 2) < 1e-6 else
           "it depends on the call history (state kept between calls)")
    return Finding(
        "stateful-gradient", (layout.block_of(j).name,),
        f"the gradient at the same point differs between two calls (fresh buffers, then the buffers of "
        f"the first call): at {layout.label(j)} {float(a[j]):.6g} then {float(a1[j]):.6g}; "
        f"{how}.  A gradient must be a function of the parameters alone",
        {"entries": [layout.label(int(k)) for k in np.flatnonzero(diff > 0)[:20]],
         "count": int(np.sum(diff > 0)), "ratio": ratio})


# ---------------------------------------------------------------------- undecided: evidence against the estimate
def undecided(blocks: tuple[str, ...], why: str, dtype: Any) -> Finding:
    """An INCONCLUSIVE verdict that covers the mismatch: ``why`` says what shows that finite differences of
    this cost do not measure its derivative."""
    return Finding(
        "precision-limited", blocks,
        f"inconclusive: {why}.  A mismatch here cannot be told from the finite differences' own error; "
        + ("use float64, or " if np.dtype(dtype) == np.float32 else "")
        + "compute the cost stably (see the cancellation finding, if any) and check again",
        bearing="undecided")


def misjudged(ratio: NDArray, mismatch: NDArray, looked: dict[str, int]) -> str:
    """Why a mismatch of at most :data:`MARGINAL` times its tolerance is not established, when the second look
    found most of the entries it measured again to agree with the gradient ('' otherwise)."""
    if np.max(ratio[mismatch]) <= MARGINAL and looked["measured"] \
            and 2 * looked["agree"] >= looked["measured"] + looked["confirmed"]:
        return (f"the mismatch is at most {float(np.max(ratio[mismatch])):.2g} times its tolerance, and "
                f"{looked['agree']} of the {looked['measured'] + looked['confirmed']} entries measured again "
                "agreed with the gradient after failing at the first step: the error model misjudges this cost")
    return ""


def scales_verdict(scales: Scales, labels: list[str], first: NDArray, a: NDArray) -> str:
    """Why a mismatch is not established across scales (:func:`~layerkit.check.refine.across_scales`; '' when
    it is): some step that resolves it agrees with the gradient, or no step resolves it and no entry has it
    established.  A staircase of rounded values does that; a wrong gradient, on a cost noisy or not, disagrees
    with every step that resolves it."""
    if scales.established.any() or not (scales.agree.any() or (scales.resolving == 0).any()):
        return ""
    if scales.agree.any():
        i = int(np.argmax(scales.agree))
        if not np.isfinite(first[i]):
            return (f"the cost is not finite at the check's step along {labels[i]} (it overflows there), but at a "
                    f"step of {scales.step[i]:.2g} its estimate {scales.value[i]:.6g} agrees with the analytic "
                    f"{a[i]:.6g}: the step, not the gradient, is the cause (a float32 cost with large inputs "
                    "overflows sooner; float64 or smaller inputs resolve it)")
        return (f"estimates at different steps contradict each other: {labels[i]} is {first[i]:.6g} at the "
                f"check's step but {scales.value[i]:.6g} at a step of {scales.step[i]:.2g}, where it agrees "
                f"with the analytic {a[i]:.6g}.  The cost's differences depend on the step more than a smooth "
                "cost's can: a staircase of rounded values (log(1 - h) or 1 - h at a saturated unit, flat "
                "within each stair; a cost computed in float32)")
    i = int(np.argmin(scales.resolving))
    return (f"no step resolves the mismatch of {labels[i]} ({abs(first[i] - a[i]):.2g}): the cost's "
            "differences are not precise enough anywhere to tell it from their own error")


# ---------------------------------------------------------------------- unresolved: a PASS that would promise nothing
def resolution_cause(noise: Noise | None, truncation_bound: bool, dtype: Any, auto_step: bool = False) -> str:
    """What limits the numerical derivative's resolution, and the cure."""
    if truncation_bound:
        return "the truncation of the difference rule at this step; a smaller " + (
            "fixed step may resolve more" if auto_step else "step, or the automatic one, resolves more")
    return (f"the cost's noise ({noise.level:.1e}, {noise.excess:.0f} times its rounding) divided by the "
            "step" if noise is not None and noise.excess > 4 else "the rounding of the cost divided by the "
            "step") + ("; use float64, or check the network with its engine (engine='auto')"
                       if np.dtype(dtype) == np.float32 else
                       "; make the cost less noisy (a stable formula), or use a method of higher order")


def unresolved(blocks: tuple[str, ...], what: str, evidence: dict[str, Any], cause: str) -> Finding:
    """An INCONCLUSIVE verdict where nothing failed: ``what`` could not be resolved, for ``cause``."""
    return Finding("precision-limited", blocks, f"inconclusive: {what}.  The cause is {cause}",
                   evidence, bearing="unresolved")


#: A block whose gradient (analytic or numerical) is at least this fraction of the whole one's is not a
#: saturated corner: resolved no better than its own size, it makes a pass inconclusive.
SIGNIFICANT_BLOCK = 1e-2


def unresolved_entries(layout: ParameterLayout, a: NDArray, bound: NDArray,
                       n: NDArray | None = None) -> tuple[str, str, dict[str, Any]] | None:
    """When the estimate's error bound (noise and truncation, without the floor) is as large as the gradient
    itself, ``||bound|| >= ||a||``, an error as large as the gradient would pass.  Returns ``("inconclusive",
    what, evidence)`` then, or when a block whose gradient (``a``, or the numerical ``n``: a block the analytic
    gradient leaves at zero) is at least :data:`SIGNIFICANT_BLOCK` of the whole is resolved that poorly;
    ``("note", text, {})`` when only blocks of tiny gradients are (saturated units); else None."""
    absolute = np.abs(a.astype(np.float64))
    size = np.maximum(absolute, np.abs(n.astype(np.float64))) if n is not None else absolute
    whole = float(np.linalg.norm(size))
    weak = [(b, float(np.linalg.norm(bound[b.slice])) / max(float(np.linalg.norm(size[b.slice])), 1e-300))
            for b in layout.blocks]
    weak = [(b, r) for b, r in weak if r >= 1]
    if not weak:
        return None
    names = ", ".join(f"{b.name} (error bound {r:.2g} times its gradient's size)" for b, r in weak)
    significant = any(float(np.linalg.norm(size[b.slice])) >= SIGNIFICANT_BLOCK * whole for b, _ in weak)
    if np.linalg.norm(bound) < np.linalg.norm(absolute) and not significant:
        return "note", (f"the numerical derivative resolves {names} only poorly: an error of the size of those "
                        "blocks' gradients would not be seen there"), {}
    return "inconclusive", (f"the numerical derivative cannot resolve the gradient ({names}), so an error as large "
                            "as the gradient itself would pass unnoticed"), \
        {"blocks": [b.name for b, _ in weak], "ratios": [r for _, r in weak]}


#: A fixed step whose error bound is this fraction of some block's gradient (or more) does not resolve it
#: well enough to pass: an error of a tenth of the gradient would go unseen.  Automatic steps resolve about
#: ``sqrt(eps)`` of it; a fixed step this coarse is the cause, and the check says so.
FIXED_STEP_RESOLUTION = 0.1


def coarse_fixed_step(layout: ParameterLayout, a: NDArray, bound: NDArray, step: float) -> tuple[str, dict[str, Any]] | None:
    """For a check at a fixed ``step``: the blocks whose error bound reaches :data:`FIXED_STEP_RESOLUTION` of
    their gradient's size, as an inconclusive verdict's text and evidence (None when every block is resolved)."""
    absolute = np.abs(a.astype(np.float64))
    weak = [(b, float(np.linalg.norm(bound[b.slice])) / max(float(np.linalg.norm(absolute[b.slice])), 1e-300))
            for b in layout.blocks if b.size]
    weak = [(b, r) for b, r in weak if r >= FIXED_STEP_RESOLUTION]
    if not weak:
        return None
    names = ", ".join(f"{b.name} (error bound {r:.2g} times its gradient's size)" for b, r in weak)
    return (f"the fixed step {step:g} resolves {names} too coarsely: an error of a tenth of the gradient would "
            "pass unnoticed; the step is the cause (use the automatic step)"), \
        {"blocks": [b.name for b, _ in weak], "ratios": [r for _, r in weak], "step": step}


def coarse_fixed_directions(tests: tuple[DirectionRecord, ...], step: float) -> tuple[str, dict[str, Any]] | None:
    """The directional form of :func:`coarse_fixed_step`: a fixed ``step`` whose error bound reaches
    :data:`FIXED_STEP_RESOLUTION` of ``|u . g|`` along every direction."""
    ratio = min((t.bound / max(abs(t.analytical), 1e-300) for t in tests), default=0.0)
    if ratio < FIXED_STEP_RESOLUTION:
        return None
    return (f"the fixed step {step:g} resolves the gradient too coarsely (its error bound is at least {ratio:.2g} "
            "times u . g along every direction): an error of a tenth of the gradient would pass unnoticed; the "
            "step is the cause (use the automatic step)"), {"ratios": [ratio], "step": step}


def unresolved_directions(tests: tuple[DirectionRecord, ...]) -> tuple[str, dict[str, Any]] | None:
    """The directional form: no whole-vector direction resolves its own derivative, ``|u . g| <= bound`` for
    every one (a negated or zeroed gradient would then pass them all)."""
    if any(abs(t.analytical) > t.bound for t in tests):
        return None
    ratio = min(t.bound / max(abs(t.analytical), 1e-300) for t in tests)
    return (f"the numerical derivative cannot resolve the gradient along any of the {len(tests)} directions (its "
            f"error bound is at least {ratio:.2g} times u . g), so an error as large as the gradient itself would "
            "pass unnoticed"), {"ratios": [ratio]}


#: A block's own directions (along its gradient) must resolve its derivative to this fraction of itself for
#: a directional pass: an error of a tenth of a block's gradient would otherwise pass unnoticed.
BLOCK_RESOLUTION = 0.1


def unresolved_blocks(block_tests: dict[str, tuple[DirectionRecord, ...]], layout: ParameterLayout,
                      a: NDArray, noisy: bool = False) -> tuple[str, dict[str, Any]] | None:
    """The block form of :func:`unresolved_directions`: a block whose gradient is at least
    :data:`SIGNIFICANT_BLOCK` of the whole one's and whose own directions (along its gradient, where the
    whole-vector ones resolved it coarsely) resolve their derivative to no better than :data:`BLOCK_RESOLUTION`
    of the smaller of ``|u . g|`` and the numerical derivative; and, on a cost measurably noisier than its
    rounding (``noisy``), a block whose analytic gradient is zero and whose own direction does not resolve it."""
    whole = float(np.linalg.norm(a.astype(np.float64)))
    weak = []
    for b in layout.blocks:
        tests = block_tests.get(b.name, ())
        size = float(np.linalg.norm(a[b.slice].astype(np.float64)))
        # a block the analytic gradient leaves at zero has no size of its own: on a cost the check knows is
        # blurred (``noisy``), an unresolved test of its own cannot tell it from a block never written
        if not tests or (size < SIGNIFICANT_BLOCK * whole and not (size == 0 and noisy)):
            continue
        # judged by the smaller of the two derivatives: a wrong analytic gradient must not make its block look
        # resolved (a factor 1.5 raises |u . g|)
        ratio = min(t.bound / max(min(abs(t.analytical), abs(t.numerical)), 1e-300) for t in tests)
        if ratio >= BLOCK_RESOLUTION:
            weak.append((b.name, ratio))
    if not weak:
        return None
    names = ", ".join(f"{name} (error bound {r:.2g} times its derivative along its own direction)" for name, r in weak)
    return (f"the numerical derivative resolves {names} too coarsely: an error of a tenth of that block's "
            "gradient would pass unnoticed"), {"blocks": [n for n, _ in weak], "ratios": [r for _, r in weak]}


#: The cause of :func:`below_floor`'s verdict.
TINY_CAUSE = "the scale of the cost for its dtype, not the gradient's code"


def below_floor(analytical: float, numerical: float, floor_value: float, dtype: Any
                ) -> tuple[str, dict[str, Any]] | None:
    """A gradient that is not zero but lies wholly below the tolerance's floor
    (:func:`~layerkit.check.tolerance.floor_of`): ``0 < max(|a|, |n|) <= floor``, with ``analytical`` and
    ``numerical`` the largest magnitudes of the analytic and the numerical derivatives.  Every entry passes
    whatever its sign there, so a pass would promise nothing."""
    largest = max(float(analytical), float(numerical))
    if not 0 < largest <= floor_value:
        return None
    return (f"the gradient is at most {largest:.1e}, below the floor {floor_value:.1e} of the tolerance "
            f"({np.dtype(dtype).name}: what underflow takes from an entry), so a gradient of the opposite sign "
            "would pass too; scale the cost up (a sum instead of a mean, a larger loss weight) and check again"), \
        {"largest": largest, "floor": floor_value}


def unresolved_zero(bound: float, what: str, noise: Noise | None, x0: NDArray, f0: float
                    ) -> tuple[str, dict[str, Any]] | None:
    """A zero analytic gradient has no size of its own to compare the error bound with.  It is unresolved when
    the cost carries noise beyond :data:`~layerkit.check.noise.EXCESS_THRESHOLD` times its rounding (the check
    knows it is blurred) and the bound exceeds ``sqrt(eps) max(|f0|, 1) / l`` (``l = max(1, max |x0|)``), what
    a forward difference resolves on a clean cost of this size.  On a clean cost a zero gradient is resolved
    as well as finite differences can, and passes."""
    if noise is None or not noise.measured or noise.excess <= EXCESS_THRESHOLD:
        return None
    reference = math.sqrt(machine_eps(x0.dtype)) * max(abs(f0), 1.0) \
        / max(1.0, float(np.max(np.abs(x0.astype(np.float64)), initial=0.0)))
    if not bound > reference:
        return None
    return (f"the analytic gradient is zero and the numerical derivative cannot resolve a gradient smaller than "
            f"{bound:.1e} (its error bound per {what}), so a gradient that should not be zero would pass "
            "unnoticed"), {"bound": bound, "reference": reference}


# ---------------------------------------------------------------------- explanations (the doctor's)
#: A float64 cost whose noise is within this factor of float32's rounding of its value (either way), and
#: whose value is a float32 number, is read as computed in float32 inside: a float32 sum of m terms carries
#: about ``eps32 sqrt(m)`` of the largest.
FLOAT32_BAND = 300.0


def float32_valued(cost: float) -> bool:
    """Whether ``cost`` is exactly a float32 number but not a float16 one (a float64 result has that chance
    ``2^-29``; small integers and coarse steps, which float16 holds, say nothing)."""
    with np.errstate(over="ignore"):
        return (math.isfinite(cost) and float(np.float32(cost)) == cost and float(np.float16(cost)) != cost)


def noisy_cost(noise: Noise, cost: float = math.nan) -> Finding:
    """A deterministic cost far noisier than its own rounding: the usual causes (float32 inside a float64
    cost, when the noise is at float32's rounding and ``cost`` is a float32 number; cancellation) and their
    cures."""
    f32 = noise.floor * float(np.finfo(np.float32).eps) / float(np.finfo(np.float64).eps)
    if noise.floor > 0 and 1 / FLOAT32_BAND <= noise.level / f32 <= FLOAT32_BAND and float32_valued(cost):
        return Finding(
            "precision-limited", (),
            f"the cost carries noise of {noise.level:.2e}, {noise.excess:.0f} times the float64 rounding of its "
            f"value ({noise.floor:.1e}) but {noise.level / f32:.2g} times its float32 rounding: the cost is "
            "probably computed in float32 inside (a float32 input, array or constant makes numpy compute in "
            "float32); cast to float64 where it is computed.  Cancellation can do the same (log(1 - h) at large "
            "z: use np.logaddexp).  Steps and tolerances were derived from the measured noise",
            {"noise": noise.level, "excess": noise.excess, "cause": "float32-inside"})
    return Finding(
        "precision-limited", (),
        f"the cost carries noise of {noise.level:.2e}, {noise.excess:.0f} times the rounding of its value "
        f"({noise.floor:.1e}): cancellation in the cost, e.g. log(1 - sigmoid(z)) or log(1 - h) at large "
        "z, or 1 - h formed by subtraction.  Compute it stably from the logits: -log(sigmoid(z)) = "
        "np.logaddexp(0, -z) and -log(1 - sigmoid(z)) = np.logaddexp(0, z).  Steps and tolerances were "
        "derived from the measured noise", {"noise": noise.level, "excess": noise.excess, "cause": "cancellation"})


def rounding_level(blocks: list[str], ratio: float, dtype: str) -> Finding:
    """The mismatch is at the level that the dtype's rounding with this step predicts."""
    return Finding(
        "precision-limited", tuple(blocks),
        f"the mismatch is at the level that {dtype} rounding with this step predicts "
        f"(the largest error is {ratio:.2g} times its error-model tolerance): "
        + ("use float64 or a larger step" if dtype == "float32" else
           "use a larger step (or the default 'auto') or a tolerance from the error model"),
        {"ratio_to_model": ratio, "dtype": dtype})
