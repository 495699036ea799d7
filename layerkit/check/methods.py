"""Numerical gradient strategies: :class:`Forward`, :class:`Central`, :class:`Richardson`, :class:`ComplexStep`.

Every strategy is a frozen attrs value with one small protocol (:class:`Method`): given a
:class:`~layerkit.check.probes.Probe` (which evaluates cost *changes* ``J(x + s e_j) - J(x)`` along axes ``j``),
return an :class:`Estimate` of the derivative along each axis, with the two parts of its error separated:
the *noise* part (the error of the cost differences, which the probe reports, divided by the step) and the
*truncation* part (the neglected terms of the Taylor expansion).  Strategies never touch parameter vectors
themselves, so the same strategy runs on a plain function, a Network's fast path, or random directions.
The tolerance built from an estimate lives in :mod:`layerkit.check.tolerance`.

Error model of a difference rule of order ``p`` with step ``h`` along an axis of length scale ``l``::

    error ~  (h / l)^p V / l     (truncation)   +   W sigma / h     (noise in the cost differences)

where ``V`` is how much the cost varies over the length scale, ``sigma`` the noise of one cost difference and
``W = sum |w_s|`` the stencil's weight.  With ``sigma = eps_f V`` (``eps_f``: the cost's relative noise, the
machine epsilon ``eps`` of the target's dtype when the cost carries nothing but its own rounding) both terms
balance at ``h / l = eps_f^(1/(p+1))``, where the error is ``~ eps_f^(p/(p+1)) V / l``.  The automatic step is
that ``h``: ``eps^(1/(p+1))`` times the probe's *noise excess* ``eps_f / eps`` (1 unless the cost is
measurably noisier than its rounding, see :mod:`layerkit.check.noise`) to the power ``1/(p+1)``, times the
length scale ``l_j = max(1, |x_j|) / s_j`` (``s_j``: the target's axis scale; for a network's Dense weight the
largest ``|input|`` the weight multiplies, since the cost varies along that weight on a length scale
``1 / s_j``), never below 64 units in the last place of ``x_j``, and snapped so that ``x_j + h`` is exactly
representable (``h = (x_j + h) - x_j``), which makes the denominator exact.

Truncation is estimated per entry, never from the size of the whole cost (a large penalty term must not hide
a data-term error): from two steps ``h`` and ``h/2`` when the probe is cheap (``|D(h) - D(h/2)| / (1 - 2^-p)``),
from the extrapolation itself for :class:`Richardson` (``|R - R'|``), and otherwise from the model above with
``V_j = max(|D_j| l_j, |f''_j| l_j^2)`` (the curvature from the same evaluations when the stencil is symmetric).

To add a strategy, subclass :class:`FiniteDifference` with a stencil (see its docstring) or write any frozen
class with ``name``, ``step`` and ``estimate``, and :func:`register_method` it for the CLI.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, Union, runtime_checkable

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError, UnknownMethodError
from ..numerics import machine_eps
from .probes import Probe

Step = Union[float, str]

#: Smallest automatic step, in units in the last place of ``x_j``: the step is then represented to 1/64.
MIN_STEP_ULPS = 64.0


def _check_step(instance: Any, attribute: Any, value: Step) -> None:
    if isinstance(value, str):
        if value != "auto":
            raise InputError("step", "'auto' or a positive float", repr(value))
    elif isinstance(value, bool) or not isinstance(value, (int, float)) or not (0 < value < math.inf):
        raise InputError("step", "'auto' or a positive float", describe(value))


@frozen(eq=False)
class Estimate:
    """Result of a strategy along ``n`` axes.

    Attributes
    ----------
    values : NDArray, shape (n,)
        Estimated directional derivatives (the numerical gradient for coordinate axes).
    step : NDArray, shape (n,)
        The (largest) step used on each axis, in the units of ``x``.
    noise : NDArray, shape (n,) or None
        Bound on the part of each value's error that comes from the error of the cost differences.
    truncation : NDArray, shape (n,) or None
        Estimate of the part that comes from the neglected terms of the Taylor expansion.
    error : NDArray, shape (n,) or None
        Richardson's own error estimate ``|R - R'|`` (also its truncation), when the strategy gives one.
    relative : float
        The relative rounding of the values themselves (the complex step's only error).
    measured : bool
        Whether ``truncation`` is measured alone (the change of the estimate from ``h`` to ``h / 2`` of an
        exact evaluator), not a model: the tolerance then needs a smaller safety factor on it
        (:data:`~layerkit.check.tolerance.MEASURED_SAFETY`).
    model : NDArray, shape (n,) or None
        Beside a measured truncation, the truncation model's value: a kink between the two stencils inflates
        the measured one by the kink's share, which is not an error ``h^p`` shrinks (see
        :func:`~layerkit.check.full.estimate`).
    jumps : tuple of NDArray or None
        For a stencil with the offsets ``+1`` and ``-1``: the jumps ``D+ - D-`` of the one-sided slopes
        ``D+ = (J(x + h e_j) - J(x)) / h`` and ``D- = (J(x) - J(x - h e_j)) / h`` at each step it used (``h``,
        and ``h / 2`` where the truncation was measured), shape ``(k, n)``, with their rounding bounds, same
        shape.  A smooth cost's jump is ``h J''`` (it halves with the step); a kink's does not: see
        :func:`~layerkit.check.full.settle_kinks`.
    """

    values: NDArray
    step: NDArray
    noise: NDArray | None = None
    truncation: NDArray | None = None
    error: NDArray | None = None
    relative: float = 0.0
    measured: bool = False
    model: NDArray | None = None
    jumps: tuple[NDArray, NDArray] | None = None


def slope_jump(steps: NDArray, d: NDArray, noise: NDArray) -> tuple[NDArray, NDArray]:
    """``D+ - D-`` of the one-sided slopes and its rounding bound, from the steps ``+h`` and ``-h`` (rows 0
    and 1 of ``steps``, shape ``(2, n)``), the cost's changes ``d`` there and their rounding ``noise``."""
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        hp, hm = np.abs(np.asarray(steps[0], dtype=np.float64)), np.abs(np.asarray(steps[1], dtype=np.float64))
        dd = np.asarray(d, dtype=np.float64)
        nn = np.abs(np.asarray(noise, dtype=np.float64))
        return dd[0] / hp + dd[1] / hm, nn[0] / hp + nn[1] / hm


@runtime_checkable
class Method(Protocol):
    """What a gradient-estimation strategy provides."""

    name: str
    step: Step

    def estimate(self, probe: Probe) -> Estimate:
        """Estimate the derivative along each of the probe's axes."""
        ...


#: Largest fixed step accepted, in units of each axis's length scale ``max(1, |x_j|)``: a step a million
#: times the scale on which the cost varies measures a secant across the cost, not its derivative at the
#: point (the truncation alone can be of any size), so it is refused as an argument error.
MAX_STEP_RATIO = 1e6


def nonzero_steps(h: NDArray, step: Any, probe: Probe) -> NDArray:
    """``h``, unless a snapped step is zero (``x_j + h`` rounds back to ``x_j`` in the probe's dtype), not
    finite (``x_j + h`` overflows) or, for a fixed ``step``, absurd (above :data:`MAX_STEP_RATIO` times the
    axis's length scale)."""
    if not isinstance(step, str):
        with np.errstate(over="ignore", invalid="ignore"):
            ratio = np.abs(h.astype(np.float64)) / np.asarray(probe.scale(), dtype=np.float64)
        if np.any(~(ratio <= MAX_STEP_RATIO)):
            j = int(np.flatnonzero(~(ratio <= MAX_STEP_RATIO))[0])
            raise InputError("step", f"a step of at most {MAX_STEP_RATIO:.0e} times max(1, |x_j|) (a larger one "
                             "measures a secant across the cost, not its derivative at the point)",
                             f"{step!r}, {float(ratio[j]):.2g} times the scale of axis {j}")
    if np.any(h == 0):
        j = int(np.flatnonzero(h == 0)[0])
        raise InputError("step", f"a step large enough to change every parameter in {np.dtype(probe.dtype)}",
                         f"{step!r}, which rounds to no change at axis {j} ({int(np.sum(h == 0))} axes in all)")
    x, axes = probe.x, probe.axes
    xj = np.zeros(h.shape) if x is None else np.asarray(x)[axes if axes is not None else slice(None)]
    with np.errstate(over="ignore", invalid="ignore"):
        wide = 4.0 * np.abs(h.astype(np.float64))  # the widest stencil (Richardson's h, central's 2h) fits
        ok = np.isfinite(wide) & np.isfinite((np.abs(xj).astype(np.float64) + wide).astype(probe.real_dtype))
    if not np.all(ok):
        j = int(np.flatnonzero(~ok)[0])
        raise InputError("step", f"a step that keeps every perturbed parameter finite in {np.dtype(probe.dtype)}",
                         f"{step!r}, which overflows at axis {j}")
    return h


def auto_steps(probe: Probe, relative: float) -> NDArray:
    """The automatic per-axis step: ``relative`` times the probe's length scale, at least
    :data:`MIN_STEP_ULPS` units in the last place of ``x_j``, snapped."""
    h = relative * np.asarray(probe.scale(), dtype=np.float64)
    x, axes = probe.x, probe.axes
    if x is not None:
        xj = np.abs(np.asarray(x)[axes] if axes is not None else np.asarray(x)).astype(np.float64)
        h = np.maximum(h, MIN_STEP_ULPS * machine_eps(probe.dtype) * xj)
    return probe.snap(h.astype(probe.real_dtype))


def smooth_steps(probe: Probe, h: NDArray, reach: float | None) -> NDArray:
    """The automatic steps ``h``, each halved below the reach of its nearest kink where the stencil (widest
    offset ``reach h``) would carry the cost across one, when the probe knows (``smooth_reach``: the network
    engine, whose piecewise-linear layers say where their kinks are).  The difference then measures the
    derivative at the point, not a secant across a kink.  Only an exact engine offers it: its rounding is
    ``4 eps |t| R`` (proportional to the step), so a smaller step costs no accuracy, whereas a re-evaluated
    cost's noise ``sigma / h`` would grow.  A step that would fall below :data:`MIN_STEP_ULPS` units in the
    last place of ``x_j``, or below the square root of the dtype's smallest normal number, is kept (the point
    sits on a kink or next to one: the kink safeguards of :mod:`layerkit.check.kinks` measure it)."""
    reach_of = getattr(probe, "smooth_reach", None)
    if reach_of is None or not reach:
        return h
    widest = reach * np.abs(h.astype(np.float64))
    limit = reach_of(widest)
    shrink = np.flatnonzero(limit < widest)
    if not shrink.size:
        return h
    out = _shortened(probe, h, shrink, 0.5 * limit[shrink] / reach)
    said = getattr(probe, "shortened", None)
    if said is not None:
        said(np.flatnonzero(out != h))
    return out


def table_steps(probe: Probe, h: NDArray, reach: float | None) -> NDArray:
    """The automatic steps ``h``, each shortened to where an exact engine reads its changes off two Taylor
    tables (``table_reach``: the widest offset ``reach h`` at most the step below which the remainder after
    the ``t^2`` term is certified under the engine's budget, :meth:`~layerkit.fast.series.SeriesBlock.table_reach`).
    A symmetric stencil's difference is then the derivative itself, to rounding (the ``t^2`` terms cancel
    and nothing of ``t^3`` is left to truncate), the engine's rounding ``4 eps |t| R`` costs no accuracy at a
    smaller step (see :func:`smooth_steps`), and the third table is never formed.  Steps that would fall
    below the floor of :func:`smooth_steps` are kept; fixed steps are never changed."""
    reach_of = getattr(probe, "table_reach", None)
    if reach_of is None or not reach:
        return h
    widest = reach * np.abs(h.astype(np.float64))
    limit = reach_of(widest)
    shrink = np.flatnonzero(limit < widest)
    if not shrink.size:
        return h
    return _shortened(probe, h, shrink, limit[shrink] / reach)


def _shortened(probe: Probe, h: NDArray, shrink: NDArray, new: NDArray) -> NDArray:
    """``h`` with the axes ``shrink`` moved to the steps ``new`` (float64), snapped, except where ``new`` falls
    below :data:`MIN_STEP_ULPS` units in the last place of ``x_j`` or below the square root of the dtype's
    smallest normal number (a step far below the scale of normal numbers would leave the cost's changes
    subnormal, without precision) or snaps to 0: those keep their step."""
    new = np.asarray(new).astype(probe.real_dtype)
    x = probe.x
    xj = np.zeros(shrink.size) if x is None else np.abs(np.asarray(x)[probe.axes][shrink] if probe.axes is not None
                                                        else np.asarray(x)[shrink]).astype(np.float64)
    floor = np.maximum(MIN_STEP_ULPS * machine_eps(probe.dtype) * xj,
                       np.sqrt(np.finfo(probe.real_dtype).tiny) * np.maximum(1.0, xj))
    keep = new >= floor
    moved = np.array(h, copy=True)
    moved[shrink] = np.where(keep, new, h[shrink])
    moved = probe.snap(moved)
    return np.where(moved != 0, moved, h)


def _reach(rule: Any) -> float | None:
    """The widest offset of a difference rule's stencil, in steps (None when the rule does not say)."""
    offsets = getattr(rule, "offsets", None)
    return max((abs(float(c)) for c in offsets), default=None) if offsets else None


def _noise_excess(probe: Probe) -> float:
    return max(1.0, float(probe.noise_excess))


def truncation_model(h: NDArray, scale: NDArray, order: int, values: NDArray,
                     pair: tuple[NDArray, NDArray] | None = None) -> NDArray:
    """The truncation of a rule of ``order`` at steps ``h`` along axes of length scale ``scale``:
    ``(h / l)^p V / l`` with ``V = max(|D| l, |f''| l^2)`` (module docstring); the curvature comes from
    ``pair``, the differences at ``+h`` and ``-h``, when the stencil has both."""
    hs = np.abs(np.asarray(h).astype(np.float64))
    V = np.abs(values) * scale
    if pair is not None:
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            curv = np.abs(np.asarray(pair[0], dtype=np.float64) + pair[1]) / (hs * hs)
        V = np.maximum(V, np.nan_to_num(curv) * scale * scale)
    return (hs / scale) ** order * V / scale


def _combine(coef: NDArray, d: NDArray) -> NDArray:
    """``sum_s coef[s] d[s]`` (both ``(S, n)``), in float64 (NaN where a difference was not finite)."""
    with np.errstate(all="ignore"):
        return np.einsum("sn,sn->n", coef, np.asarray(d, dtype=np.float64))


@frozen
class FiniteDifference:
    """Base class of difference rules ``D(h) = sum_s w_s [J(x + c_s h e_j) - J(x)] / h``.

    Subclasses set the class attributes ``name``, ``offsets`` (the ``c_s``), ``weights`` (the ``w_s``),
    ``order`` (``p``: the truncation error is ``O(h^p)``) and ``order_step`` (how the error expansion
    proceeds: 2 for symmetric stencils, whose expansion has only even powers; 1 otherwise).  For example a
    five-point stencil is::

        @frozen
        class FivePoint(FiniteDifference):
            name = "five-point"
            offsets = (-2.0, -1.0, 1.0, 2.0)
            weights = (1 / 12, -2 / 3, 2 / 3, -1 / 12)
            order = 4
            order_step = 2

    Attributes
    ----------
    step : "auto" or float
        ``"auto"``: ``h_j = (eps e)^(1/(p+1)) max(1, |x_j|) / s_j`` (``e``: the probe's noise excess, ``s_j``: its
        axis scale), snapped (see the module docstring).  A float is used as the absolute step on every axis
        (snapped too), as in course code's ``epsilon = 1e-4``.
    """

    name: ClassVar[str] = "finite-difference"
    offsets: ClassVar[tuple[float, ...]] = ()
    weights: ClassVar[tuple[float, ...]] = ()
    order: ClassVar[int] = 1
    order_step: ClassVar[int] = 1

    step: Step = field(default="auto", validator=_check_step)

    def base_step(self, dtype: Any, noise_excess: float = 1.0) -> float:
        """The relative step ``(eps e)^(1/(p+1))`` that balances truncation ``h^p`` and noise ``eps e / h``."""
        return (machine_eps(dtype) * max(1.0, noise_excess)) ** (1.0 / (self.order + 1))

    def steps(self, probe: Probe, step: Step | None = None) -> NDArray:
        """Per-axis step: from ``step`` (default: this strategy's), scaled and snapped by the probe.

        Raises InputError when a step is too small to change some ``x_j`` in the probe's dtype.
        """
        step = self.step if step is None else step
        if step == "auto":
            h = table_steps(probe, auto_steps(probe, self.base_step(probe.dtype, _noise_excess(probe))), _reach(self))
            return nonzero_steps(smooth_steps(probe, h, _reach(self)), step, probe)
        return nonzero_steps(probe.snap(np.full(probe.n_axes, float(step), dtype=probe.real_dtype)), step, probe)

    def plan(self, probe: Probe, h: NDArray) -> tuple[NDArray, NDArray]:
        """The stencil at steps ``h``: ``(steps, coef)``, both of shape ``(S, n)``; the estimate is
        ``sum_s coef[s] * probe.delta(steps)[s]``.  Lets a wrapper batch and combine several rules."""
        offsets = np.asarray(self.offsets, dtype=np.float64)
        weights = np.asarray(self.weights, dtype=np.float64)
        steps = offsets[:, None] * h[None, :].astype(np.float64)
        return steps.astype(h.dtype), weights[:, None] / h[None, :].astype(np.float64)

    def estimate(self, probe: Probe, h: NDArray | None = None) -> Estimate:
        h = self.steps(probe) if h is None else h
        steps, coef = self.plan(probe, h)
        d = probe.delta(steps)
        values = _combine(coef, d)
        noise = _combine(np.abs(coef), probe.noise(steps))
        jumps = [self._jump(steps, d, probe.noise(steps))]
        cheap = probe.cheap
        if cheap or self.step != "auto":
            # measured from a second stencil at h/2: always for an exact engine (cheap), and for a step the
            # user fixed, which no error model chose (a large step's truncation can be dominated by a third
            # derivative, which the model below does not see)
            h2 = nonzero_steps(probe.snap(h / 2), self.step, probe)
            steps2, coef2 = self.plan(probe, h2)
            d2 = probe.delta(steps2)
            values2 = _combine(coef2, d2)
            jumps.append(self._jump(steps2, d2, probe.noise(steps2)))
            with np.errstate(invalid="ignore", over="ignore"):
                truncation = np.abs(values - values2) / (1 - 2.0 ** -self.order)
            model = self.truncation_model(probe, h, d, values)
            if not cheap:
                truncation = np.fmax(truncation, model)
        else:
            truncation = model = self.truncation_model(probe, h, d, values)
        pairs = [j for j in jumps if j is not None]
        return Estimate(values, h, noise=noise, truncation=truncation, measured=bool(cheap),
                        model=model if cheap else None,
                        jumps=(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])) if pairs else None)

    def _jump(self, steps: NDArray, d: NDArray, noise: NDArray) -> tuple[NDArray, NDArray] | None:
        """``D+ - D-`` and its rounding bound from the changes at the offsets ``+1`` and ``-1`` (None when the
        stencil lacks one of them)."""
        offs = list(self.offsets)
        if not (1.0 in offs and -1.0 in offs):
            return None
        pair = [offs.index(1.0), offs.index(-1.0)]
        return slope_jump(steps[pair], np.asarray(d)[pair], np.asarray(noise)[pair])

    def truncation_model(self, probe: Probe, h: NDArray, d: NDArray, values: NDArray) -> NDArray:
        """``(h_j / l_j)^p V_j / l_j`` with ``V_j = max(|D_j| l_j, |f''_j| l_j^2)`` (module docstring); the
        curvature comes from the offsets ``+1`` and ``-1`` when the stencil has both."""
        offs = list(self.offsets)
        pair = (d[offs.index(1.0)], d[offs.index(-1.0)]) if 1.0 in offs and -1.0 in offs else None
        return truncation_model(h, np.asarray(probe.scale(), dtype=np.float64), self.order, values, pair)


@frozen
class Forward(FiniteDifference):
    """Forward difference ``[J(x + h e_j) - J(x)] / h``: 1 evaluation per entry.

    Truncation ``h |f''| / 2`` (order 1), noise ``sigma / h``; optimal ``h ~ sqrt(eps)``
    (1.5e-8 in float64, 3.5e-4 in float32), leaving an error ``~ sqrt(eps)``.
    """

    name: ClassVar[str] = "forward"
    offsets: ClassVar[tuple[float, ...]] = (1.0,)
    weights: ClassVar[tuple[float, ...]] = (1.0,)
    order: ClassVar[int] = 1
    order_step: ClassVar[int] = 1


@frozen
class Central(FiniteDifference):
    """Central difference ``[J(x + h e_j) - J(x - h e_j)] / (2h)``: 2 evaluations per entry.

    Truncation ``h^2 |f'''| / 6`` (order 2, even expansion), noise ``sigma / h``; optimal ``h ~ eps^(1/3)``
    (6.1e-6 in float64, 4.9e-3 in float32), leaving an error ``~ eps^(2/3)`` (3.7e-11 relative in float64).
    Both sides are snapped, so the denominator ``h+ + h-`` is exact.
    """

    name: ClassVar[str] = "central"
    offsets: ClassVar[tuple[float, ...]] = (1.0, -1.0)
    weights: ClassVar[tuple[float, ...]] = (0.5, -0.5)
    order: ClassVar[int] = 2
    order_step: ClassVar[int] = 2

    def plan(self, probe: Probe, h: NDArray) -> tuple[NDArray, NDArray]:
        hm = probe.snap(-h)
        with np.errstate(over="ignore"):
            width = (h.astype(np.float64) - hm.astype(np.float64))
        return np.stack([h, hm]), np.stack([1 / width, -1 / width])


@frozen
class Richardson:
    """Richardson extrapolation of a base difference rule over steps ``h, h/2, ..., h/2^levels``.

    With a base of order ``p`` whose error expands in steps of ``k`` (central: ``p = 2, k = 2``), level
    ``l`` combines two estimates as ``(2^q D(h/2) - D(h)) / (2^q - 1)`` with ``q = p + (l - 1) k``, which
    cancels the ``h^q`` term.  One level on central differences gives order 4 (weights ``-1/3, 4/3``),
    at 4 evaluations per entry.

    The automatic step balances the extrapolated truncation ``h^(p + levels k)`` against the noise
    ``eps / h``: ``h ~ eps^(1/(p + levels k + 1))`` (7.4e-4 in float64 for one level on central).

    The error estimate of each entry is ``|R - R'|``, where ``R`` is the final extrapolation and ``R'`` the
    best estimate one level below it: a conservative estimate of the truncation of ``R`` (it is that of ``R'``).
    """

    name: ClassVar[str] = "richardson"
    base: Any = field(factory=Central, converter=lambda m: resolve(m))
    levels: int = field(default=1)
    step: Step = field(default="auto", validator=_check_step)

    @levels.validator
    def _check_levels(self, attribute: Any, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InputError("levels", "an integer >= 1", describe(value))

    @property
    def order(self) -> int:
        return self.base.order + self.levels * self.base.order_step

    def base_step(self, dtype: Any, noise_excess: float = 1.0) -> float:
        return (machine_eps(dtype) * max(1.0, noise_excess)) ** (1.0 / (self.order + 1))

    def steps(self, probe: Probe) -> NDArray:
        """The largest per-axis step ``h`` (the levels use ``h / 2^l``), scaled and snapped by the probe."""
        if self.step == "auto":
            h = table_steps(probe, auto_steps(probe, self.base_step(probe.dtype, _noise_excess(probe))),
                            _reach(self.base))
            return nonzero_steps(smooth_steps(probe, h, _reach(self.base)), "auto", probe)
        return nonzero_steps(probe.snap(np.full(probe.n_axes, float(self.step), dtype=probe.real_dtype)),
                             self.step, probe)

    def _plans(self, probe: Probe, h: NDArray) -> tuple[list[NDArray], list[NDArray]]:
        levels = [h] + [probe.snap(h / 2**level) for level in range(1, self.levels + 1)]
        for hl in levels:
            nonzero_steps(hl, self.step, probe)
        parts = [self.base.plan(probe, hl) for hl in levels]
        return [p[0] for p in parts], [p[1] for p in parts]

    def weights(self) -> list[float]:
        """Coefficient of each level's base estimate in the final extrapolation (``-1/3, 4/3`` for one level
        on central)."""
        n = self.levels + 1
        w = [np.eye(n)[i] for i in range(n)]
        for level in range(1, self.levels + 1):
            f = 2.0 ** (self.base.order + (level - 1) * self.base.order_step)
            w = [(f * w[i + 1] - w[i]) / (f - 1) for i in range(len(w) - 1)]
        return [float(v) for v in w[0]]

    def plan(self, probe: Probe, h: NDArray) -> tuple[NDArray, NDArray]:
        """Every level's stencil in one batch: ``(steps, coef)`` of the final extrapolation."""
        steps, coefs = self._plans(probe, h)
        return np.concatenate(steps), np.concatenate([w * c for w, c in zip(self.weights(), coefs)])

    def estimate(self, probe: Probe) -> Estimate:
        h = self.steps(probe)
        steps_l, coefs = self._plans(probe, h)
        sizes = [len(s) for s in steps_l]
        steps = np.concatenate(steps_l)
        del steps_l  # S x n values: keep one copy only
        d = probe.delta(steps)
        sigma = probe.noise(steps)
        table, row, jumps = [], 0, []
        for level, (size, coef) in enumerate(zip(sizes, coefs)):
            table.append(_combine(coef, d[row: row + size]))
            if level < 2 and isinstance(self.base, FiniteDifference):  # the jumps at h and h / 2
                jumps.append(self.base._jump(steps[row: row + size], d[row: row + size], sigma[row: row + size]))
            row += size
        del d
        prev = table
        for level in range(1, self.levels + 1):
            q = self.base.order + (level - 1) * self.base.order_step
            f = 2.0**q
            prev, below = [(f * prev[i + 1] - prev[i]) / (f - 1) for i in range(len(prev) - 1)], prev
        best = prev[0]
        error = np.abs(best - below[-1])
        noise = np.zeros(h.shape, dtype=np.float64)
        row = 0
        for w, size, coef in zip(self.weights(), sizes, coefs):
            noise += abs(w) * _combine(np.abs(coef), sigma[row: row + size])
            row += size
        pairs = [j for j in jumps if j is not None]
        return Estimate(best, h, noise=noise, truncation=error, error=error,
                        jumps=(np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])) if pairs else None)


@frozen
class ComplexStep:
    """Complex-step derivative ``Im J(x + i h e_j) / h``: 1 complex evaluation per entry.

    Truncation ``h^2 |f'''| / 6`` and *no* subtractive cancellation, so ``h`` can be tiny: the automatic
    step is ``eps^2 * max(1, |x_j|)`` (4.9e-32 in float64), which makes the truncation negligible and
    leaves only the rounding of the evaluation itself, ``~ eps`` relative (:attr:`Estimate.relative` is
    ``64 eps``: the evaluation's rounding amplified by the conditioning of the cost).  No snapping is needed:
    the real part of ``x`` is not changed.  The target must be analytic and accept complex parameters
    (``abs``, comparisons and ``np.real`` break it); a check confirms it first along a random direction.
    """

    name: ClassVar[str] = "complex-step"
    step: Step = field(default="auto", validator=_check_step)

    def base_step(self, dtype: Any, noise_excess: float = 1.0) -> float:
        return machine_eps(dtype) ** 2

    def steps(self, probe: Probe) -> NDArray:
        """Per-axis imaginary step (not snapped: the real part of ``x`` does not move)."""
        if self.step == "auto":
            return self.base_step(probe.dtype) * np.asarray(probe.scale(), dtype=probe.real_dtype)
        return np.full(probe.n_axes, float(self.step), dtype=probe.real_dtype)

    def estimate(self, probe: Probe) -> Estimate:
        h = self.steps(probe)
        values = probe.imag(h) / h
        # truncation h^2 |f3| / 6, with the model of the module docstring (negligible at the automatic step)
        scale = np.asarray(probe.scale(), dtype=np.float64)
        truncation = (np.abs(h.astype(np.float64)) / scale) ** 2 * np.abs(values)
        return Estimate(values, h, noise=np.zeros(h.shape), truncation=truncation,
                        relative=64 * machine_eps(probe.dtype))


# ---------------------------------------------------------------------- registry
_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_method(name: str, factory: Callable[..., Any]) -> None:
    """Make a strategy available by name (for ``check_*(method=name)`` and the CLI's ``--method``).

    ``factory(step=...)`` must return an object following :class:`Method`.
    """
    if not isinstance(name, str) or not name:
        raise InputError("name", "a non-empty string", describe(name))
    _REGISTRY[name] = factory


def method_names() -> list[str]:
    """Registered strategy names, in registration order."""
    return list(_REGISTRY)


def resolve(method: Any) -> Any:
    """A strategy from a registered name, or the strategy object itself."""
    return get_method(method) if isinstance(method, str) else method


def get_method(name: str, **options: Any) -> Any:
    """The strategy registered as ``name``, built with ``options`` (e.g. ``step=1e-4``)."""
    try:
        factory = _REGISTRY[name]
    except (KeyError, TypeError):
        raise UnknownMethodError(str(name), method_names()) from None
    return factory(**options)


register_method("forward", Forward)
register_method("central", Central)
register_method("richardson", Richardson)
register_method("complex-step", ComplexStep)
