"""The public entry points: :func:`check_function`, :func:`check_network`, :func:`check_layer`.

Each one compares the target's analytic gradient with a numerical estimate from a strategy
(:mod:`layerkit.check.methods`), returns a :class:`~layerkit.check.report.Report`, and -- unless ``diagnose=False``
-- lets the doctor (:mod:`layerkit.diagnosis.doctor`) add findings that say where and why they disagree.

None of them changes the caller's vector or the network's parameters, even when the target raises.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import attrs
import numpy as np
from numpy.typing import NDArray

from ._validate import describe, positive_int
from .errors import InputError
from .nn.layers import Layer
from .check.methods import Step, get_method
from .nn.network import Network
from .check.probes import CoordinateProbe
from .check.report import Report
from .check.subjects import Target, function_target, layer_target, network_target


def resolve_method(method: Any, step: Step | None = None) -> Any:
    """A strategy from a registered name or a strategy object, with ``step`` applied when given."""
    m = get_method(method) if isinstance(method, str) else method
    if not (hasattr(m, "estimate") and hasattr(m, "tolerances") and hasattr(m, "name")):
        raise InputError("method", "a registered method name or a strategy with name, estimate and tolerances",
                         describe(method))
    if step is not None:
        m = attrs.evolve(m, step=step)
    return m


def _tolerance_override(value: Any, argument: str) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0) or value == float("inf"):
        raise InputError(argument, "a finite number >= 0", describe(value))
    return float(value)


def run_check(target: Target, method: Any = "central", *, step: Step | None = None, rtol: float | None = None,
              atol: float | None = None, top: int = 5, diagnose: bool = True, executor: Executor | None = None,
              probe_factory: Callable[..., Any] | None = None, mode: str = "full",
              n_directions: int | None = None, seed: int = 0) -> Report:
    """Check ``target`` with ``method``; the common engine behind the three entry points.

    ``probe_factory(target, f0)`` may supply a structured probe (the Network fast path); by default every
    evaluation goes through ``target.cost`` on a :class:`~layerkit.check.probes.CoordinateProbe`.
    ``mode="directional"`` runs :func:`layerkit.check.directional.run_directional` instead.
    """
    strategy = resolve_method(method, step)
    rtol_o, atol_o = _tolerance_override(rtol, "rtol"), _tolerance_override(atol, "atol")
    top = positive_int(top, "top", minimum=0)
    if mode not in ("full", "directional"):
        raise InputError("mode", "'full' or 'directional'", repr(mode))
    if mode == "directional":
        from .check.directional import DEFAULT_DIRECTIONS, run_directional

        if rtol_o is not None or atol_o is not None:
            raise InputError("rtol/atol", "no tolerance override in mode='directional' (it uses the error model)",
                             f"rtol={rtol}, atol={atol}")
        report = run_directional(target, strategy, n_directions=n_directions or DEFAULT_DIRECTIONS, seed=seed,
                                 executor=executor, top=top)
        if diagnose:
            from .diagnosis.doctor import diagnose as run_doctor

            report = run_doctor(report, target, strategy)
        return report
    t0 = time.perf_counter()
    f0, analytical = target.evaluate()
    if probe_factory is not None:
        probe = probe_factory(target, f0)
    else:
        probe = CoordinateProbe(target.cost, target.x0, f0, executor=executor, axis_scale=target.axis_scale())
    est = strategy.estimate(probe)
    scale = float(np.max(np.abs(analytical[np.isfinite(analytical)]), initial=0.0))
    rtol_d, atol_d = strategy.tolerances(target.x0.dtype, float(np.real(f0)), scale, est.step)
    seconds = time.perf_counter() - t0
    h0 = strategy.base_step(target.x0.dtype) if strategy.step == "auto" else float(strategy.step)
    report = Report.build(
        method=strategy.name, step=h0, step_rule="auto" if strategy.step == "auto" else "fixed",
        dtype=target.x0.dtype, numerical=est.values, analytical=analytical,
        rtol=rtol_d if rtol_o is None else rtol_o,
        atol=atol_d if atol_o is None else np.full(analytical.shape, atol_o),
        layout=target.layout, x=target.x0, cost=f0, n_evals=probe.n_evals + 1, seconds=seconds,
        error_estimate=est.error, top=top, context={"target": target.kind, **target.context})
    if diagnose:
        from .diagnosis.doctor import diagnose as run_doctor

        report = run_doctor(report, target, strategy)
    return report


def check_function(fun: Callable[[NDArray], Any], x0: Any, method: Any = "central", *,
                   blocks: Mapping[str, Any] | None = None, step: Step | None = None, rtol: float | None = None,
                   atol: float | None = None, top: int = 5, diagnose: bool = True,
                   executor: Executor | None = None, lambda_: float | None = None,
                   m: int | None = None, mode: str = "full", n_directions: int | None = None,
                   seed: int = 0) -> Report:
    """Check a hand-written ``fun(theta) -> (cost, grad)`` at ``x0``.

    Parameters
    ----------
    fun : callable
        Returns the scalar cost and the gradient, a vector of ``x0.size`` entries (a column is accepted).
    x0 : array of shape (P,)
        float32 or float64; never modified.
    method : str or strategy
        ``"forward"``, ``"central"``, ``"richardson"``, ``"complex-step"`` or a strategy object.
    blocks : mapping name -> shape, optional
        How ``x0`` is made of blocks (in order, each unrolled in C order); sizes must sum to ``x0.size``.
        Without it the vector is one block named ``"x"``.
    step : "auto" or float, optional
        Overrides the strategy's step (see :mod:`layerkit.check.methods` for the automatic rule).
    rtol, atol : float, optional
        Override the error-model tolerances: an entry passes when ``|n - a| <= rtol max(|n|,|a|) + atol``.
    top : int
        How many worst entries the report keeps.
    diagnose : bool
        Let the doctor add findings (and run follow-up experiments when the check fails).
    executor : concurrent.futures.Executor, optional
        Spread the cost evaluations over it (``fun`` must be picklable for a process pool).
    lambda_, m : optional
        The regularization strength and number of examples behind ``fun``, when known: the doctor then
        names fitted factors such as ``lambda/m``.
    mode : "full" or "directional"
        ``"directional"`` compares derivatives along ``n_directions`` seeded (``seed``) random unit directions
        and, when they disagree, localizes the wrong entries by group testing (:mod:`layerkit.check.directional`).
    """
    target = function_target(fun, x0, blocks)
    if lambda_ is not None:
        target.context["lambda_"] = float(lambda_)
    if m is not None:
        target.context["m"] = positive_int(m, "m")
    return run_check(target, method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose,
                     executor=executor, mode=mode, n_directions=n_directions, seed=seed)


def check_network(net: Network, X: Any, y: Any, lambda_: float = 0.0, method: Any = "central", *,
                  step: Step | None = None, rtol: float | None = None, atol: float | None = None, top: int = 5,
                  diagnose: bool = True, engine: str = "auto", mode: str = "full",
                  n_directions: int | None = None, seed: int = 0) -> Report:
    """Check a :class:`~layerkit.Network`'s backprop on ``(X, y)`` with regularization ``lambda_``.

    Blocks are the network's (``Theta1``, ``Theta2``, ...).  ``engine="auto"`` uses the structured fast path
    of :mod:`layerkit.fast.probe` for real-valued finite differences and plain re-evaluation otherwise;
    ``engine="generic"`` always re-evaluates the whole cost (the naive loop).  The network's parameters are
    never changed.  In ``mode="directional"`` the changes along each direction are propagated through
    the layers exactly.  Other arguments as in :func:`check_function`.
    """
    target = network_target(net, X, y, lambda_)
    if engine not in ("auto", "generic", "structured"):
        raise InputError("engine", "'auto', 'structured' or 'generic'", repr(engine))
    factory = None
    strategy = resolve_method(method, step)
    if engine != "generic" and getattr(strategy, "name", "") != "complex-step" and mode == "full":
        from .fast.probe import structured_probe_factory

        factory = structured_probe_factory(required=engine == "structured")
    return run_check(target, strategy, rtol=rtol, atol=atol, top=top, diagnose=diagnose, probe_factory=factory,
                     mode=mode, n_directions=n_directions, seed=seed)


def check_layer(layer: Layer, x: Any, method: Any = "central", *, seed: int = 0, step: Step | None = None,
                rtol: float | None = None, atol: float | None = None, top: int = 5,
                diagnose: bool = True, mode: str = "full", n_directions: int | None = None) -> Report:
    """Check one layer's input gradient and parameter gradients.

    The scalar checked is ``sum(forward(x) * r)`` with ``r`` a seeded standard-normal upstream gradient
    of the output's shape, so ``backward(r)`` must return ``dL/dx`` and write ``dL/dparams``.  Blocks:
    ``"x"`` then the layer's parameter names.  The layer's own arrays are not changed; it is re-bound to
    private copies during the check and to its original arrays afterwards.
    """
    target, restore = layer_target(layer, x, seed)
    try:
        return run_check(target, method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose, mode=mode,
                         n_directions=n_directions, seed=seed)
    finally:
        restore()
