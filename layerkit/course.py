"""Zero-code checks of cost functions in a classic course's signatures.

A course exercise's cost function takes its flat parameters, the data and the regularization by name --
``nnCostFunction(nn_params, input_layer_size, hidden_layer_size, num_labels, X, y, lambda_)`` for the
network exercise, ``costFunctionReg(theta, X, y, lambda_)`` or ``linearRegCostFunction(X, y, theta, lam)``
for the regressions -- and returns ``(cost, grad)``.  :func:`course_signature` recognises such a signature
by its parameter names, in any order; :func:`course_problem` builds the course's own debug problem for it:

* **network**: the gradient-check script's 3-5-3 network with m = 5 -- weights and inputs from
  ``debugInitializeWeights`` (:func:`~layerkit.debug_matrix`), labels ``1 + mod(i, 3)`` -- and blocks
  ``Theta1`` (5 x 4) and ``Theta2`` (3 x 6);
* **regression**: 12 seeded examples with an intercept column, two features and labels in {0, 1}, and one
  block ``theta``.

What the signature does not say is inferred from the cost alone, at lambda = 0: the unrolling order (the
course's Fortran order ``[Theta1(:); Theta2(:)]``, or C order) and the label base (1-based as in Octave, or
0-based) are the pair whose cross-entropy, computed here from the same weights, the function's own cost
reproduces.  The report's notes say what was assumed and how it was found.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
from attrs import evolve, frozen
from numpy.typing import NDArray

from ._validate import describe
from .errors import InputError
from .nn.datasets import debug_matrix
from .nn.layout import Order
from .problem import Problem

#: Parameter names by role, as course ports spell them.
NAMES: dict[str, tuple[str, ...]] = {
    "theta": ("nn_params", "params", "theta", "weights", "nn_weights", "parameters", "thetas", "w",
              "initial_nn_params", "initial_theta", "theta_vec", "unrolled_params"),
    "X": ("X", "x", "features", "data", "X_train"),
    "y": ("y", "Y", "labels", "targets", "y_train"),
    "lambda": ("lambda_", "lam", "lmbda", "Lambda", "lambd", "lamda", "_lambda", "reg", "reg_lambda",
               "lambda_reg", "reg_param", "regularization"),
    "input": ("input_layer_size", "input_size", "n_input", "num_inputs"),
    "hidden": ("hidden_layer_size", "hidden_size", "n_hidden", "num_hidden"),
    "labels": ("num_labels", "n_labels", "num_classes", "n_classes", "output_layer_size", "output_size"),
}
#: The gradient-check script's network and example count.
DEBUG_SIZES, DEBUG_M = (3, 5, 3), 5
#: Examples and features of the regression debug problem.
REGRESSION_M, REGRESSION_FEATURES = 12, 2
#: How close the function's cost must come to a hypothesis' cross-entropy to be taken for it (relative).
MATCH = 1e-6


@frozen
class CourseSignature:
    """A recognised course signature.

    Attributes
    ----------
    kind : ``"network"`` or ``"regression"``
    names : dict
        Role (``theta``, ``X``, ``y``, ``lambda``, ``input``, ``hidden``, ``labels``) -> the function's own
        parameter name; ``lambda`` is absent when the function takes none.
    """

    kind: str
    names: dict[str, str]
    #: The roles of the parameters that can only be passed by position, in order.
    positional: tuple[str, ...] = ()

    def call(self, func: Callable[..., Any], values: dict[str, Any]) -> Any:
        """``func`` called with ``values`` (role -> value): positional-only parameters by position, the others
        by their own names."""
        args = [values[role] for role in self.positional]
        return func(*args, **{self.names[role]: v for role, v in values.items()
                              if role in self.names and role not in self.positional})


def course_signature(func: Any) -> CourseSignature | None:
    """The course signature of ``func`` (None when it is not one: a required parameter no role names, or the
    flat parameters, ``X`` or ``y`` missing)."""
    try:
        params = inspect.signature(func).parameters
    except (TypeError, ValueError):
        return None
    names: dict[str, str] = {}
    positional: list[str] = []
    for p in params.values():
        if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        role = next((r for r, spelled in NAMES.items() if p.name in spelled and r not in names), None)
        if role is not None:
            names[role] = p.name
            if p.kind is p.POSITIONAL_ONLY:
                if len(positional) != len([q for q in params.values() if q.kind is q.POSITIONAL_ONLY
                                           and list(params).index(q.name) < list(params).index(p.name)]):
                    return None  # an unknown positional-only parameter before it
                positional.append(role)
        elif p.default is p.empty or p.kind is p.POSITIONAL_ONLY:
            return None
    if not {"theta", "X", "y"} <= set(names):
        return None
    sizes = {"input", "hidden", "labels"} & set(names)
    if sizes and sizes != {"input", "hidden", "labels"}:
        return None
    return CourseSignature("network" if sizes else "regression", names, tuple(positional))


def course_problems(func: Callable[..., Any], lambdas: Iterable[float] = (0.0, 3.0)) -> list[Problem]:
    """The course's debug problem for ``func`` at each of ``lambdas`` (just one, at the function's own
    default, when it takes no lambda); see the module docstring."""
    sig = _signature(func)
    return [course_problem(func, lam) for lam in (lambdas if "lambda" in sig.names else (0.0,))]


def course_problem(func: Callable[..., Any], lambda_: float = 0.0) -> Problem:
    """The course's debug problem for a cost function ``func`` in a course signature, at ``lambda_``.

    Returns a :class:`~layerkit.Problem` over the flat parameters, with the blocks, order, ``lambda_`` and
    ``m`` of the debug problem, whose report notes say what was assumed.  Raises
    :class:`~layerkit.InputError` when ``func``'s signature is not a course one.
    """
    sig = _signature(func)
    if sig.kind == "network":
        return _network_problem(func, sig, float(lambda_))
    return _regression_problem(func, sig, float(lambda_))


def _signature(func: Any) -> CourseSignature:
    sig = course_signature(func)
    if sig is None:
        raise InputError("func", "a cost function with course parameter names: the flat parameters (nn_params, "
                         "theta, ...), X, y, optionally lambda_, and for a network input_layer_size, "
                         "hidden_layer_size, num_labels", _described(func))
    return sig


def _described(func: Any) -> str:
    try:
        return f"{getattr(func, '__name__', describe(func))}{inspect.signature(func)}"
    except (TypeError, ValueError):
        return describe(func)


def _title(func: Any) -> str:
    name = getattr(func, "__name__", "")
    return name if name and name != "<lambda>" else "the cost function"


# ---------------------------------------------------------------------- the network exercise
def _network_problem(func: Callable[..., Any], sig: CourseSignature, lambda_: float) -> Problem:
    n_in, n_hidden, n_labels = DEBUG_SIZES
    T1, T2 = debug_matrix((n_hidden, n_in + 1)), debug_matrix((n_labels, n_hidden + 1))
    X = debug_matrix((DEBUG_M, n_in))  # debugInitializeWeights(m, input_layer_size - 1): m x input_layer_size
    course_labels = 1 + np.arange(1, DEBUG_M + 1) % n_labels
    theta = np.concatenate([T1.ravel(order="F"), T2.ravel(order="F")])
    fixed = {"input": n_in, "hidden": n_hidden, "labels": n_labels, "X": X}
    column = _wants_column(func, sig, theta, fixed, [course_labels, course_labels - 1])
    order, base, how = _infer_layout(func, sig, theta, fixed, course_labels, (T1.shape, T2.shape), column)
    y = _shaped(course_labels - (1 - base), column)
    notes = (f"course problem: the gradient-check script's {'-'.join(map(str, DEBUG_SIZES))} network with its "
             f"debug weights and inputs, m = {DEBUG_M}, labels {base}..{n_labels - 1 + base}; parameters "
             f"unrolled in {'Fortran order ([Theta1(:); Theta2(:)])' if order == 'F' else 'C order'}; {how}"
             + ("; y given as an m x 1 column, as the course's data holds it" if column else ""),)
    return _bound(func, sig, dict(fixed, y=y), lambda_, theta, notes, blocks={"Theta1": T1.shape, "Theta2": T2.shape},
                  order=order, m=DEBUG_M, name=f"{_title(func)} (course debug network, lambda = {lambda_:g})")


def _shaped(y: NDArray, column: bool) -> NDArray:
    return y.reshape(-1, 1) if column else y


def _works(func: Callable[..., Any], sig: CourseSignature, values: dict[str, Any], size: int) -> bool:
    """Whether ``func`` at ``values`` returns a finite cost and a gradient of ``size`` entries."""
    try:
        with np.errstate(all="ignore"):
            out = sig.call(func, values)
        cost = np.asarray(out[0], dtype=np.float64).reshape(-1)
        grad = np.asarray(out[1] if len(out) == 2 else np.concatenate([np.ravel(g) for g in out[1:]]))
        return cost.size == 1 and bool(np.isfinite(cost[0])) and grad.size == size
    except Exception:  # noqa: BLE001 - a shape the function cannot take is not the one
        return False


def _wants_column(func: Callable[..., Any], sig: CourseSignature, theta: NDArray, base: dict[str, Any],
                  labels: list[NDArray]) -> bool:
    """Whether ``func`` takes ``y`` as an ``m x 1`` column (the course's data) rather than a vector: it works
    with a column and not with a vector, for some label base."""
    def works(y: NDArray) -> bool:
        values = dict(base, theta=theta.copy(), y=y)
        if "lambda" in sig.names:
            values["lambda"] = 0.0
        return _works(func, sig, values, theta.size)
    return not any(works(y) for y in labels) and any(works(y.reshape(-1, 1)) for y in labels)


def _infer_layout(func: Callable[..., Any], sig: CourseSignature, theta: NDArray, fixed: dict[str, Any],
                  course_labels: NDArray, shapes: tuple[tuple[int, int], ...],
                  column: bool = False) -> tuple[Order, int, str]:
    """The unrolling order and label base whose cross-entropy the function's own cost (at lambda = 0)
    reproduces, and how they were found."""
    costs: dict[int, float | None] = {}
    errors: dict[int, str] = {}
    for base in (1, 0):
        values = dict(fixed, theta=theta.copy(), y=_shaped(course_labels - (1 - base), column))
        if "lambda" in sig.names:
            values["lambda"] = 0.0
        try:
            with np.errstate(all="ignore"):
                out = sig.call(func, values)
            cost = float(np.asarray(out[0] if isinstance(out, (tuple, list)) else out, dtype=np.float64).reshape(-1)[0])
            costs[base] = cost if np.isfinite(cost) else None
        except Exception as exc:  # noqa: BLE001 - a label base the function cannot take is not the one
            costs[base], errors[base] = None, f"{type(exc).__name__}"
    one_hot = np.eye(DEBUG_SIZES[-1])[course_labels - 1]
    expected = {order: _cross_entropy(theta, order, shapes, fixed["X"], one_hot) for order in ("F", "C")}
    for base in (1, 0):
        for order in ("F", "C"):
            seen = costs[base]
            if seen is not None and abs(seen - expected[order]) <= MATCH * abs(expected[order]):
                other = 1 - base
                why = (f"labels {other}-based raised {errors[other]}" if other in errors else
                       f"with {other}-based labels the cost is {costs[other]:.6g}" if costs[other] is not None else
                       f"{other}-based labels give no finite cost")
                return order, base, (f"order and labels inferred from the cost at lambda = 0 ({seen:.10g}, the "
                                     f"cross-entropy of that layout; {why})")
    base = 1 if costs[1] is not None or costs[0] is None else 0
    tried = ", ".join(f"{b}-based labels: " + ("raised " + errors[b] if b in errors else "no finite cost"
                                                 if costs[b] is None else format(costs[b], ".6g")) for b in (1, 0))
    return "F", base, (f"assumed, not inferred: the cost at lambda = 0 is the cross-entropy of neither order "
                       f"({expected['F']:.6g} in Fortran order, {expected['C']:.6g} in C order; {tried}), so the data "
                       "term of the cost may itself be wrong; give order= and the labels yourself to be sure")


def _cross_entropy(theta: NDArray, order: Order, shapes: tuple[tuple[int, int], ...], X: NDArray,
                   Y: NDArray) -> float:
    """The course network's unregularized cost at ``theta`` unrolled in ``order``."""
    (r1, c1), (r2, c2) = shapes
    T1 = theta[: r1 * c1].reshape((r1, c1), order=order)
    T2 = theta[r1 * c1:].reshape((r2, c2), order=order)
    m = X.shape[0]
    a2 = 1 / (1 + np.exp(-(np.hstack([np.ones((m, 1)), X]) @ T1.T)))
    h = 1 / (1 + np.exp(-(np.hstack([np.ones((m, 1)), a2]) @ T2.T)))
    return float(-np.sum(Y * np.log(h) + (1 - Y) * np.log(1 - h)) / m)


# ---------------------------------------------------------------------- the regression exercises
def _regression_problem(func: Callable[..., Any], sig: CourseSignature, lambda_: float) -> Problem:
    rng = np.random.default_rng(0)
    X = np.hstack([np.ones((REGRESSION_M, 1)), rng.standard_normal((REGRESSION_M, REGRESSION_FEATURES))])
    y = rng.integers(0, 2, REGRESSION_M).astype(np.float64)
    theta = 0.5 * rng.standard_normal(REGRESSION_FEATURES + 1)
    column = _wants_column(func, sig, theta, {"X": X}, [y])
    notes = (f"course problem: {REGRESSION_M} seeded examples with an intercept column and "
             f"{REGRESSION_FEATURES} features, labels in {{0, 1}}, theta of {theta.size}"
             + ("; y given as an m x 1 column, as the course's data holds it" if column else ""),)
    return _bound(func, sig, {"X": X, "y": _shaped(y, column)}, lambda_, theta, notes,
                  blocks={"theta": (theta.size,)}, m=REGRESSION_M,
                  name=f"{_title(func)} (course debug regression, lambda = {lambda_:g})")


def _bound(func: Callable[..., Any], sig: CourseSignature, values: dict[str, Any], lambda_: float, theta: NDArray,
           notes: tuple[str, ...], **problem: Any) -> Problem:
    """The problem of ``func`` at ``values`` (role -> value) and ``lambda_`` (when it takes one), over the
    flat parameters from ``theta``, with ``notes``; ``problem``: the rest of :meth:`Problem.from_function`'s
    keywords."""
    regularized = "lambda" in sig.names
    if regularized:
        values = dict(values, **{"lambda": lambda_})

    def fun(t: NDArray) -> Any:
        return sig.call(func, dict(values, theta=t))

    made = Problem.from_function(fun, theta, lambda_=lambda_ if regularized else None, **problem)
    return evolve(made, notes=made.notes + notes)
