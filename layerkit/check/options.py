"""The options of one check, validated once and carried as one frozen value (:class:`CheckOptions`), and what
the pipeline needs to know of a strategy (:class:`MethodTraits`), read from it once.

A strategy is any object with ``name``, ``step`` and ``estimate`` (see :class:`~layerkit.check.methods.Method`);
its optional capabilities are declared by attributes: ``plan`` (a stencil: directional checks, second looks
and the network engine apply), ``offsets`` (its evaluation points), ``order`` (its truncation order) and
``tolerances`` (an error model of its own).  The complex step is :class:`~layerkit.check.methods.ComplexStep`
or any strategy named ``"complex-step"``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any

import attrs
import numpy as np
from attrs import frozen

from .._validate import describe, positive_int
from ..errors import InputError
from .methods import ComplexStep, Step, resolve

#: Engines a network check may ask for.
ENGINES = ("auto", "generic", "structured")
#: Modes of a check.
MODES = ("auto", "full", "directional")
#: Default number of random directions of the first, whole-vector directional test.
DEFAULT_DIRECTIONS = 2


@frozen
class MethodTraits:
    """What the pipeline needs to know of a strategy (module docstring).

    Attributes
    ----------
    stencil : bool
        A difference rule with ``plan``: directional mode, second looks and the network engine apply.
    complex_step : bool
        The complex step (the cost at complex points, no real differences).
    points : int
        ``len(offsets)``: cost evaluations per entry of one estimate (2 when the strategy does not say).
    order : int
        The truncation order of the rule (2 when the strategy does not say).
    own_tolerances : bool
        The strategy builds its tolerances itself (``tolerances(dtype, f0, scale, steps)``).
    """

    stencil: bool
    complex_step: bool
    points: int
    order: int
    own_tolerances: bool

    @classmethod
    def of(cls, strategy: Any) -> MethodTraits:
        return cls(stencil=hasattr(strategy, "plan"),
                   complex_step=isinstance(strategy, ComplexStep) or getattr(strategy, "name", "") == "complex-step",
                   points=len(getattr(strategy, "offsets", (1, -1))), order=getattr(strategy, "order", 2),
                   own_tolerances=hasattr(strategy, "tolerances"))


def resolve_method(method: Any, step: Step | None = None) -> Any:
    """A strategy from a registered name or a strategy object, with ``step`` applied when given."""
    m = resolve(method)
    if not (hasattr(m, "estimate") and hasattr(m, "name") and hasattr(m, "step")):
        raise InputError("method", "a registered method name or a strategy with name, step and estimate",
                         describe(method))
    if step is not None:
        m = attrs.evolve(m, step=step)
    return m


def tolerance_override(value: Any, argument: str) -> float | None:
    """``value`` as a finite float ``>= 0``, or None."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value >= 0) or value == float("inf"):
        raise InputError(argument, "a finite number >= 0", describe(value))
    return float(value)


def check_seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise InputError("seed", "a non-negative integer", describe(value))
    return int(value)


def _executor(value: Any) -> Executor | None:
    if value is not None and not callable(getattr(value, "submit", None)):
        raise InputError("executor", "a concurrent.futures.Executor (an object with submit)", describe(value))
    return value


def _mode(given: dict[str, Any], strategy: Any, traits: MethodTraits, overrides: bool) -> str:
    """The mode asked for, checked against the strategy and the tolerance overrides (after the engine, whose
    error comes first)."""
    mode = given.get("mode", "auto")
    if mode not in MODES:
        raise InputError("mode", "'auto', 'full' or 'directional'", repr(mode))
    if mode == "auto" and (overrides or not traits.stencil):
        mode = "full"  # tolerance overrides and the complex step are about every entry
    if given.get("engine", "auto") not in ENGINES:
        raise InputError("engine", "'auto', 'structured' or 'generic'", repr(given.get("engine")))
    if mode == "directional":
        if overrides:
            raise InputError("rtol/atol", "no tolerance override in mode='directional' (it uses the error model)",
                             f"rtol={given.get('rtol')}, atol={given.get('atol')}")
        if not traits.stencil:
            raise InputError("method", "a finite-difference method with a stencil (forward, central, richardson "
                             "or a FiniteDifference) for mode='directional'", repr(getattr(strategy, "name", strategy)))
    return str(mode)


@frozen(eq=False)
class CheckOptions:
    """Everything a check is asked to do, validated (see :func:`layerkit.check_function` for each option).

    ``mode`` is the mode asked for (``"auto"`` is decided by the pipeline once the cost has been timed);
    ``budget`` is the evaluations auto mode may take when the caller fixed them.
    """

    strategy: Any
    traits: MethodTraits
    rtol: float | None = None
    atol: float | None = None
    top: int = 5
    diagnose: bool = True
    executor: Executor | None = None
    engine: str = "auto"
    mode: str = "auto"
    n_directions: int = DEFAULT_DIRECTIONS
    seed: int = 0
    progress: Callable[[str, int], None] | None = None
    budget: int | None = None

    @classmethod
    def create(cls, method: Any = "central", **given: Any) -> CheckOptions:
        """Validate the keyword options of a ``check_*`` call (each error names its argument), in the order
        method and step, rtol, atol, top, seed, executor, mode, engine, n_directions, budget."""
        strategy = resolve_method(method, given.get("step"))
        traits = MethodTraits.of(strategy)
        rtol, atol = tolerance_override(given.get("rtol"), "rtol"), tolerance_override(given.get("atol"), "atol")
        top = positive_int(given.get("top", 5), "top", minimum=0)
        seed, executor = check_seed(given.get("seed", 0)), _executor(given.get("executor"))
        mode = _mode(given, strategy, traits, rtol is not None or atol is not None)
        n = given.get("n_directions")
        n_directions = DEFAULT_DIRECTIONS if n is None else positive_int(n, "n_directions")
        budget = None if given.get("budget") is None else positive_int(given["budget"], "budget")
        return cls(strategy, traits, rtol, atol, top, bool(given.get("diagnose", True)), executor,
                   given.get("engine", "auto"), mode, n_directions, seed, given.get("progress"), budget)

    @property
    def auto_step(self) -> bool:
        """Whether the strategy's step is the automatic one (a fixed step is the step the report is about)."""
        return bool(self.strategy.step == "auto")

    def for_layers(self) -> Any:
        """The check's method at its automatic step, for checks of single layers (a step fixed for a network
        says nothing of a layer): the central difference for a strategy without a stencil."""
        return attrs.evolve(self.strategy, step="auto") if self.traits.stencil else resolve("central")
