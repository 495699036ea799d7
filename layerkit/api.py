"""The public entry points, :func:`check_function`, :func:`check_network`, :func:`check_layer`, and the recipe
behind all three, :func:`run_check`.

A check, in order (each step in :mod:`layerkit.check`, each taking its inputs and returning its results):

1. the analytic gradient at ``x0``, twice, through fresh and through reused buffers
   (:mod:`~layerkit.check.baseline`): a difference is a ``stateful-gradient`` finding and fails the check;
   two different costs mean a nondeterministic cost;
2. what computes the cost changes (:mod:`~layerkit.check.engine`): the subject's own cost, whose noise it
   measures first (:mod:`~layerkit.check.noise`), or, for a network, the fast engine
   (:mod:`layerkit.fast`), whose predictions it first compares with the network's own cost; on
   disagreement the engine is not used and the report's notes say why;
3. the mode (:func:`~layerkit.check.pipeline.choose_mode`), then the full check
   (:mod:`~layerkit.check.full`) or the directional one (:mod:`~layerkit.check.directional`): the estimate,
   every tolerance from the estimate's own error (:mod:`~layerkit.check.tolerance`), the safeguards both
   share (the second look, kink settling), the verdicts (:mod:`~layerkit.check.verdicts`) and the report;
4. the doctor (:mod:`layerkit.diagnosis.doctor`), with a budgeted runner for the experiments it may do
   (:class:`~layerkit.diagnosis.experiments.Experiments`).

Everything runs inside the subject's session: the caller's network, layer or vector is as it was afterwards,
whatever happens (see :mod:`layerkit.check.subjects`).  Floating-point warnings are silenced inside a check
(the target's included): what overflows or turns into NaN is reported, entry by entry, as a non-finite
finding instead.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from concurrent.futures import Executor
from typing import Any

import numpy as np
from attrs import evolve
from numpy.typing import NDArray

from ._validate import positive_int
from .backward import backward_function
from .check.baseline import baseline
from .check.engine import Evaluators
from .check.ledger import Ledger
from .check.methods import MAX_STEP_RATIO, Step
from .check.options import CheckOptions, check_seed, tolerance_override
from .check.pipeline import choose_mode, directional_check, full_check
from .check.report import Report
from .check.subjects import LayerSubject, NetworkSubject, Subject, function_subject
from .diagnosis.doctor import diagnose as run_doctor
from .diagnosis.experiments import Experiments
from .errors import InputError
from .nn.batch import Dropout
from .nn.layers import Layer
from .nn.layout import Order
from .nn.network import Network
from .snapshot import streams_kept

#: The doctor's follow-ups may spend twice the check's evaluations, and at least this many: enough for the
#: kink test on 24 entries (96), the Taylor fit (13) and a directional check of a few layers.
DOCTOR_BUDGET = 256


def run_check(subject: Subject, options: CheckOptions) -> Report:
    """Check ``subject`` as ``options`` say (the steps of the module docstring)."""
    _refuse_absurd_step(subject, options)
    with streams_kept(_owners(subject)), subject.session(), np.errstate(all="ignore"):
        ledger = Ledger()
        base = baseline(subject, ledger)
        evaluators = Evaluators(subject, options, base, ledger)
        mode, budget = choose_mode(subject, options, base, ledger)
        check = directional_check if mode == "directional" else full_check
        report = check(subject, options, base, evaluators, ledger, budget)
        if options.diagnose:
            experiments = Experiments(evaluators, max(DOCTOR_BUDGET, 2 * report.n_evals), _layer_check(options))
            report = run_doctor(report, subject, options.strategy, experiments)
        fixed = [f"layer {k} ({layer!r}) used one fixed mask during the check: the check is of that mask's network "
                 "(Dropout.resample draws another)" for k, layer in enumerate(_layers_of(subject))
                 if isinstance(layer, Dropout) and layer.training]
        if fixed:
            report = evolve(report, notes=report.notes + tuple(fixed))
        own = getattr(subject, "n_target_evals", None)
        if own is not None and report.evaluator == "engine" and own <= report.n_evals:
            report = evolve(report, target_evals=int(own))
    return report


def _refuse_absurd_step(subject: Subject, options: CheckOptions) -> None:
    """A fixed step above :data:`~layerkit.check.methods.MAX_STEP_RATIO` times some axis's length scale
    ``max(1, |x_j|)`` is an argument error in every mode (the full check's probes refuse it per axis too)."""
    if options.auto_step:
        return
    step = float(options.strategy.step)
    scale = np.maximum(1.0, np.abs(subject.x0.astype(np.float64)))
    j = int(np.argmin(scale))
    if not step <= MAX_STEP_RATIO * float(scale[j]):
        raise InputError("step", f"a step of at most {MAX_STEP_RATIO:.0e} times max(1, |x_j|) (a larger one "
                         "measures a secant across the cost, not its derivative at the point)",
                         f"{step!r}, {step / float(scale[j]):.2g} times the scale of axis {j}")


def _layers_of(subject: Subject) -> list[Any]:
    network = getattr(subject, "network", None)
    if network is not None:
        return list(network.layers)
    layer = getattr(subject, "layer", None)
    return [] if layer is None else [layer]


def _owners(subject: Subject) -> list[Any]:
    """The caller's objects behind ``subject`` whose random streams a check must leave where they are."""
    found = [getattr(subject, name, None) for name in ("fun", "network")]
    return [o for o in found if o is not None] + _layers_of(subject)


def _layer_check(options: CheckOptions) -> Callable[[Layer, NDArray, int], Report]:
    """How the doctor checks layer ``k`` of a network on its own: the check's method at its automatic step,
    directional, a few examples, no diagnosis."""
    strategy = options.for_layers()

    def check(layer: Layer, x: NDArray, k: int) -> Report:
        return run_check(LayerSubject(layer, x), CheckOptions.create(strategy, diagnose=False, mode="directional",
                                                                      seed=k))
    return check


def check_function(fun: Callable[[NDArray], Any], x0: Any, method: Any = "central", *,  # noqa: PLR0913 - the options a user sets
                   blocks: Mapping[str, Any] | None = None, step: Step | None = None, rtol: float | None = None,
                   atol: float | None = None, top: int = 5, diagnose: bool = True,
                   executor: Executor | None = None, lambda_: float | None = None,
                   m: int | None = None, mode: str = "auto", n_directions: int | None = None,
                   seed: int = 0, order: Order = "C", progress: Callable[[str, int], None] | None = None,
                   budget: int | None = None) -> Report:
    """Check a hand-written ``fun(theta) -> (cost, grad)`` at ``x0``.

    Parameters
    ----------
    fun : callable
        Returns the cost (a scalar, or an array of one entry: ``(1,)``, ``(1, 1)``) and the gradient: a vector
        of ``x0.size`` entries (a column is accepted) or, with ``blocks``, one array per block, as
        ``(cost, g1, g2, ...)`` or ``(cost, [g1, g2, ...])``.
    x0 : array of shape (P,) or (P, 1)
        float32 or float64; never modified (``fun`` gets a fresh copy at every call, of the same shape).
    method : str or strategy
        ``"forward"``, ``"central"``, ``"richardson"``, ``"complex-step"`` or a strategy object.
    blocks : mapping name -> shape, optional
        How ``x0`` is made of blocks (in order, each unrolled in ``order``); sizes must sum to ``x0.size``.
        Without it the vector is one block named ``"x"``.
    order : "C" or "F"
        How each block is unrolled in ``x0`` and the gradient: ``"C"`` (numpy's ``ravel``, the default) or
        ``"F"`` (MATLAB/Octave's ``[Theta1(:); Theta2(:)]``, as most ports of the classic course do).  The
        report names entries in that layout, and its flat indices are positions in your own vector.
    step : "auto" or float, optional
        Overrides the strategy's step (see :mod:`layerkit.check.methods` for the automatic rule).
    rtol, atol : float, optional
        Override the error-model tolerances: an entry passes when ``|n - a| <= rtol max(|n|,|a|) + atol``.
    top : int
        How many worst entries the report keeps.
    diagnose : bool
        Let the doctor add findings (and run follow-up experiments, within a budget, when the check fails).
    executor : concurrent.futures.Executor, optional
        Spread the cost evaluations over it (``fun`` must be picklable for a process pool).
    lambda_, m : optional
        The regularization strength and number of examples behind ``fun``, when known: the doctor then
        names fitted factors such as ``lambda/m``.
    mode : "auto", "full" or "directional"
        ``"full"`` checks every entry.  ``"directional"`` compares derivatives along ``n_directions`` seeded
        (``seed``) random unit directions and, when they disagree, localizes the wrong entries by group
        testing over rows and columns (:mod:`layerkit.check.directional`).  ``"auto"`` (the default) times the
        first evaluations and runs the full check when it takes at most ``AUTO_SECONDS`` (10 s), the
        directional one within that many seconds' worth of evaluations otherwise (a note says so).
    progress : callable, optional
        ``progress(stage, evaluations)``, called as a directional check goes (the CLI shows it).
    budget : int, optional
        ``mode="auto"`` in evaluations instead of seconds: the full check when it needs at most ``budget``
        evaluations, else the directional one within ``budget`` (the same choice on every machine).
    """
    lam = None if lambda_ is None else tolerance_override(lambda_, "lambda_")
    mm = None if m is None else positive_int(m, "m")
    subject = function_subject(fun, x0, blocks, lam, mm, order)
    return run_check(subject, CheckOptions.create(
        method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose, executor=executor, mode=mode,
        n_directions=n_directions, seed=seed, progress=progress, budget=budget))


def check_network(net: Network, X: Any, y: Any, lambda_: float = 0.0, method: Any = "central", *,  # noqa: PLR0913 - the options a user sets
                  step: Step | None = None, rtol: float | None = None, atol: float | None = None, top: int = 5,
                  diagnose: bool = True, engine: str = "auto", mode: str = "auto",
                  n_directions: int | None = None, seed: int = 0,
                  progress: Callable[[str, int], None] | None = None, budget: int | None = None) -> Report:
    """Check a :class:`~layerkit.Network`'s backprop on ``(X, y)`` with regularization ``lambda_``.

    The network itself is evaluated (its class, layers, ties and bindings), in place, and left exactly as it
    was.  Blocks are the network's (``Theta1``, ``Theta2``, ...).  ``engine="auto"`` computes the cost changes
    of real-valued finite differences with the engine of :mod:`layerkit.fast.probe` when it applies and agrees
    with the network's own cost, and re-evaluates the cost otherwise; ``engine="generic"`` always re-evaluates
    the whole cost (the naive loop); ``engine="structured"`` insists on the engine.  In ``mode="directional"``
    the changes along each direction are propagated through the layers exactly.  Other arguments as in
    :func:`check_function`.
    """
    subject = NetworkSubject(net, X, y, lambda_)
    return run_check(subject, CheckOptions.create(
        method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose, engine=engine, mode=mode,
        n_directions=n_directions, seed=seed, progress=progress, budget=budget))


def check_backward(forward: Callable[..., Any], backward: Callable[..., Any], inputs: Mapping[str, Any],  # noqa: PLR0913 - the options a user sets
                   method: Any = "central", *, dout: Any = None, seed: int = 0, **options: Any) -> Report:
    """Check a layer function pair ``forward(*arrays) -> out | (out, cache)`` and ``backward(dout, cache) ->
    gradients`` (:mod:`layerkit.backward`): one block per input of ``inputs`` (a mapping from name to array,
    in ``forward``'s order), the scalar ``sum(out * dout)`` with ``dout`` seeded standard normal unless given.
    ``options`` are :func:`check_function`'s (``step``, ``mode``, ``rtol``, ...)."""
    fun, x0, blocks = backward_function(forward, backward, inputs, dout, check_seed(seed))
    return check_function(fun, x0, method, blocks=blocks, seed=seed, **options)


def check_layer(layer: Layer, x: Any, method: Any = "central", *, seed: int = 0, step: Step | None = None,  # noqa: PLR0913 - the options a user sets
                rtol: float | None = None, atol: float | None = None, top: int = 5,
                diagnose: bool = True, mode: str = "auto", n_directions: int | None = None,
                budget: int | None = None) -> Report:
    """Check one layer's input gradient and parameter gradients.

    The scalar checked is ``sum(forward(x) * r)`` with ``r`` a seeded standard-normal upstream gradient
    of the output's shape, so ``backward(r)`` must return ``dL/dx`` and write ``dL/dparams``.  Blocks:
    ``"x"`` then the layer's parameter names.  The layer computes with its own bound arrays; their values,
    its bindings and its attributes are restored afterwards.  A layer not bound yet (fresh from its
    constructor) is checked at a seeded start: its own ``init_params`` when it has one, else standard
    normal values times 0.5, in arrays bound for the check only.
    """
    with streams_kept([layer]):  # building the subject runs the layer's forward once
        subject = LayerSubject(layer, x, check_seed(seed))
    return run_check(subject, CheckOptions.create(method, step=step, rtol=rtol, atol=atol, top=top, diagnose=diagnose,
                                                  mode=mode, n_directions=n_directions, seed=seed, budget=budget))
