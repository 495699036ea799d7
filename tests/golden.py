"""The golden corpus: a fixed set of checks whose reports are recorded, so that a change of structure can be
shown to change no behaviour (``tests/test_golden.py`` compares them).

Each case is a function returning a :class:`layerkit.Report` (or raising: the exception's type and message
are the record).  The record is ``Report.to_dict(include_arrays=True)`` without its timing, with the
per-entry arrays a report derives its verdicts from (tolerance, detectable, model tolerance, first reach,
refined, error estimate) and the rendered text without its timing line.  Arrays of more than
:data:`MAX_ARRAY` entries are recorded by a few order statistics and their sum, to keep the file small.

Auto mode runs with an evaluation ``budget`` (never a time budget), so the corpus does not depend on the
machine's speed.  Regenerate the records only for a change of behaviour that is meant, and say so in the
commit::

    python tests/golden.py --write
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent
for folder in (ROOT, ROOT.parent / "examples"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from adversaries import (  # noqa: E402
    Accumulating,
    BatchBlind,
    CancellingTanh,
    Elastic,
    OneEverywhere,
    ScaledSigmoid,
    SlyTanh,
    Steep,
    TiedDecoder,
    TinyChangeShortcut,
    WrongTanh,
    noisy_logistic,
    quantized,
    saturated_logistic,
)

import layerkit  # noqa: E402
from layerkit import (  # noqa: E402
    Dense,
    Identity,
    LeakyReLU,
    MeanSquaredError,
    Network,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    check_function,
    check_layer,
    check_network,
)
from layerkit.testing import plant_gradient_error  # noqa: E402

RECORDS = ROOT / "golden" / "reports.json"
#: The arithmetic of the machine that recorded them (:func:`fingerprint`).
MACHINE = ROOT / "golden" / "machine.json"
#: Arrays longer than this are recorded by summaries.
MAX_ARRAY = 1500

CASES: dict[str, Callable[[], Any]] = {}


def case(fn: Callable[[], Any]) -> Callable[[], Any]:
    CASES[fn.__name__] = fn
    return fn


RNG = np.random.default_rng(2024)
XS, YS = RNG.standard_normal((30, 4)), RNG.integers(0, 3, 30)


# ---------------------------------------------------------------------- plain functions
def _quadratic(P=6, seed=42):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((P, P))
    Q, b = A @ A.T + np.eye(P), rng.standard_normal(P)
    return (lambda x: (0.5 * x @ Q @ x - b @ x, Q @ x - b)), rng.standard_normal(P)


def _wrong(fun, j, factor=1.01):
    def wrong(x):
        J, g = fun(x)
        g = np.array(g, dtype=float)
        g[j] *= factor
        return J, g
    return wrong


@case
def function_central():
    fun, x0 = _quadratic()
    return check_function(fun, x0)


@case
def function_forward():
    fun, x0 = _quadratic()
    return check_function(fun, x0, "forward")


@case
def function_richardson():
    fun, x0 = _quadratic()
    return check_function(fun, x0, "richardson")


@case
def function_complex_step():
    fun, x0 = _quadratic()
    return check_function(fun, x0, "complex-step")


@case
def function_directional_pass():
    fun, x0 = _quadratic(40)
    return check_function(fun, x0, mode="directional")


@case
def function_wrong_entry_full():
    fun, x0 = _quadratic(12)
    return check_function(_wrong(fun, 5), x0)


@case
def function_wrong_entry_directional():
    fun, x0 = _quadratic(40)
    return check_function(_wrong(fun, 17), x0, mode="directional")


@case
def function_wrong_entry_forward_directional():
    fun, x0 = _quadratic(40)
    return check_function(_wrong(fun, 3, 1.1), x0, "forward", mode="directional")


@case
def function_wrong_entry_richardson_directional():
    fun, x0 = _quadratic(40)
    return check_function(_wrong(fun, 30, 1.05), x0, "richardson", mode="directional", seed=3)


@case
def rosenbrock_wrong_entry_directional():
    from helpers import rosen_pair

    x0 = np.random.default_rng(1).uniform(-1, 1, 300)
    return check_function(_wrong(rosen_pair, 123, 1.02), x0, mode="directional")


@case
def course_cost_blocks_directional():
    from helpers import CourseCost

    rng = np.random.default_rng(0)
    sizes = (5, 4, 3)
    X, Y = rng.standard_normal((20, 5)), np.eye(3)[rng.integers(0, 3, 20)]
    theta = rng.uniform(-0.5, 0.5, 4 * 6 + 3 * 5)
    return check_function(CourseCost(X, Y, 1.0, sizes, bug="bias2"), theta, mode="directional",
                          blocks={"Theta1": (4, 6), "Theta2": (3, 5)}, lambda_=1.0, m=20)


@case
def course_cost_scale_full():
    from helpers import CourseCost

    rng = np.random.default_rng(0)
    sizes = (5, 4, 3)
    X, Y = rng.standard_normal((20, 5)), np.eye(3)[rng.integers(0, 3, 20)]
    theta = rng.uniform(-0.5, 0.5, 4 * 6 + 3 * 5)
    return check_function(CourseCost(X, Y, 1.0, sizes, bug="scale1"), theta,
                          blocks={"Theta1": (4, 6), "Theta2": (3, 5)}, lambda_=1.0, m=20)


@case
def staircase_right_full():
    return check_function(*quantized(1.0))


@case
def staircase_zero_directional():
    return check_function(*quantized(0.0), mode="directional")


@case
def saturated_logistic_full():
    return check_function(*saturated_logistic())


@case
def saturated_logistic_directional():
    return check_function(*saturated_logistic(), mode="directional")


@case
def saturated_logistic_wrong_full():
    cost, t0 = saturated_logistic()
    return check_function(lambda t: cost(t, 1.1), t0)


@case
def noisy_logistic_central():
    cost, theta = noisy_logistic()
    return check_function(cost, theta, lambda_=10.0, m=118)


@case
def noisy_logistic_richardson_directional():
    cost, theta = noisy_logistic()
    return check_function(cost, theta, "richardson", mode="directional", lambda_=10.0, m=118)


@case
def cubic_fixed_coarse_step():
    return check_function(lambda x: (float(np.sum(1000.0 * x**3 + x)), 3000.0 * x**2 + 1), np.zeros(3), step=1e-2)


@case
def cubic_fixed_step_directional():
    return check_function(lambda x: (float(np.sum(1000.0 * x**3 + x)), 3000.0 * x**2 + 1), np.zeros(3),
                          step=1e-4, mode="directional")


@case
def complex_step_resolution():
    rng = np.random.default_rng(0)
    P, c = 2000, 1e-6
    w, x0 = rng.uniform(0.5, 2.0, P), rng.standard_normal(P)
    x0[0] = 0.7
    return check_function(lambda x: (0.5 * np.sum(w * x * x) + c * np.abs(x[0]), (w * x).real.copy()), x0,
                          "complex-step")


@case
def complex_step_through_abs():
    return check_function(lambda x: (float(np.sum(np.abs(x) ** 3)), 3 * x * np.abs(x)), np.linspace(-1, 1, 5),
                          "complex-step")


@case
def non_finite_gradient_entry():
    def fun(t):
        g = 2 * t
        g[1] = np.nan
        return float(t @ t), g
    return check_function(fun, np.linspace(-1, 1, 6))


@case
def nondeterministic_cost():
    rng = np.random.default_rng(5)
    return check_function(lambda x: (float(x @ x + 1e-6 * rng.standard_normal()), 2 * x), np.linspace(-1, 1, 4))


@case
def stateful_gradient_function():
    acc = np.zeros(5)

    def fun(x):
        acc[...] += 2 * x
        return float(x @ x), acc.copy()
    return check_function(fun, np.linspace(-1, 1, 5))


@case
def abs_kink_near_the_point():
    x0 = np.array([1e-6, 0.5, -0.3])
    return check_function(lambda x: (float(np.sum(np.abs(x) + x**2)), np.sign(x) + 2 * x), x0)


@case
def float32_gradient_of_a_float64_cost():
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((50, 20)), rng.standard_normal(50)

    def fun(x):
        r = A @ x - b
        return 0.5 * float(r @ r), A.astype(np.float32).T @ r.astype(np.float32) * np.float32(1.001)
    return check_function(fun, rng.standard_normal(20))


@case
def float32_function():
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2, 30).astype(np.float32)
    return check_function(lambda x: (np.sum(w * x * x) / 2, w * x), rng.standard_normal(30).astype(np.float32))


@case
def auto_budget_full():
    fun, x0 = _quadratic(30)
    return check_function(fun, x0, budget=1000)


@case
def auto_budget_directional():
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2.0, 2000)

    def fun(x):
        g = w * x
        g[777] *= 1.05
        return 0.5 * float(np.sum(w * x * x)), g
    return check_function(fun, rng.standard_normal(2000), budget=300)


@case
def tolerance_overrides():
    fun, x0 = _quadratic()
    return check_function(_wrong(fun, 2, 1.0 + 1e-7), x0, rtol=1e-6, atol=1e-9)


@case
def raw_inputs_through_a_function():
    rng = np.random.default_rng(0)
    X, y = rng.random((50, 8)) * 255, rng.integers(0, 3, 50)
    net = Network.from_sizes([8, 6, 3], seed=0)
    return check_function(net.objective(X, y, 1.0), net.get_params())


# ---------------------------------------------------------------------- course ports (tests/zoo.py)
def _zoo(bug, variant=0):
    from zoo import make

    sizes, m, lam, order, shape = [((3, 5, 3), 7, 1.0, "C", "scalar"), ((4, 6, 2), 12, 3.0, "F", "(1, 1)")][variant]
    fun, theta, blocks, lam, m, order = make(bug, sizes, m, lam, order, cost_shape=shape)
    return check_function(fun, theta, blocks=blocks, lambda_=lam, m=m, order=order)


for _bug in ("none", "bias-regularized-in-gradient", "bias-regularized-in-cost", "penalty-on-wrong-columns",
             "penalty-starts-late", "bias-offset", "no-1-over-m", "data-times-2", "gradient-times-2",
             "penalty-halved", "penalty-over-2m-twice", "data-missing", "dropped-example", "sign-flip"):
    CASES[f"zoo_{_bug}"] = (lambda bug: lambda: _zoo(bug))(_bug)
for _bug in ("none", "no-1-over-m", "penalty-on-wrong-columns", "dropped-example"):
    CASES[f"zoo_f_order_{_bug}"] = (lambda bug: lambda: _zoo(bug, 1))(_bug)


@case
def zoo_c_blocks_for_an_f_port():
    from zoo import gradient_in_c_order, make

    fun, theta, blocks, lam, m, order = make("none", (3, 5, 3), 7, 1.0, "F")
    return check_function(gradient_in_c_order(fun, blocks), theta, blocks=blocks, order="F")


@case
def zoo_bug_without_hints():
    from zoo import make

    fun, theta, blocks, lam, m, order = make("no-1-over-m", (3, 5, 3), 7, 1.0, "C")
    return check_function(fun, theta, blocks=blocks)


# ---------------------------------------------------------------------- networks
def _debug(lam=0.0):
    net = Network.from_sizes([3, 5, 3], init="debug")
    X, y = layerkit.debug_data(5, 3)
    return net, X, y, lam


@case
def debug_network():
    return check_network(*_debug())


@case
def debug_network_lambda_3():
    return check_network(*_debug(3.0))


@case
def debug_network_forward():
    return check_network(*_debug(1.0), "forward")


@case
def debug_network_richardson():
    return check_network(*_debug(1.0), "richardson")


@case
def debug_network_complex_step():
    return check_network(*_debug(1.0), "complex-step")


@case
def debug_network_generic():
    return check_network(*_debug(1.0), engine="generic")


@case
def debug_network_directional():
    return check_network(*_debug(1.0), mode="directional")


@case
def debug_network_fixed_step():
    return check_network(*_debug(1.0), step=1e-4)


def _random(sizes, m, seed=0, dtype=np.float64, lam=1.0, scale=1.0):
    net = Network.from_sizes(sizes, seed=seed, dtype=dtype)
    rng = np.random.default_rng(seed)
    X = (scale * rng.standard_normal((m, sizes[0]))).astype(dtype)
    return net, X, rng.integers(0, sizes[-1], m), lam


@case
def float32_network():
    return check_network(*_random([20, 15, 5], 5, dtype=np.float32))


@case
def float32_network_planted():
    net, X, y, lam = _random([20, 15, 5], 5, dtype=np.float32)
    return check_network(plant_gradient_error(net, 40, 0.05), X, y, lam)


@case
def float32_network_directional():
    return check_network(*_random([20, 15, 5], 8, seed=2, dtype=np.float32), mode="directional")


@case
def planted_error_full():
    net, X, y, lam = _random([30, 20, 10], 100, seed=1)
    return check_network(plant_gradient_error(net, 333, 1e-3), X, y, lam)


@case
def planted_error_directional():
    net, X, y, lam = _random([30, 20, 10], 100, seed=1)
    return check_network(plant_gradient_error(net, 333, 1e-3), X, y, lam, mode="directional")


@case
def planted_error_generic_directional():
    net, X, y, lam = _random([8, 6, 3], 20, seed=4)
    return check_network(plant_gradient_error(net, 20, 1e-2), X, y, lam, mode="directional", engine="generic")


@case
def planted_error_richardson():
    net, X, y, lam = _random([8, 6, 3], 20, seed=4)
    return check_network(plant_gradient_error(net, 7, 1e-3), X, y, lam, "richardson")


@case
def saturated_network():
    net, X, y, lam = _random([4, 6, 6, 3], 40, seed=3, lam=0.0)
    net.set_params(net.params * 50)
    return check_network(net, X, y, lam)


@case
def raw_inputs_network():
    net, X, y, lam = _random([8, 6, 3], 30, seed=0, scale=255.0)
    return check_network(net, np.abs(X), y, lam)


@case
def huge_lambda_bias_error():
    net, X, y, _ = _random([10, 8, 3], 5, seed=0)

    class Biased(Network):
        def cost(self, X, y, lambda_=0.0):
            return super().cost(X, y, lambda_) + lambda_ / 10 * float(np.sum(self.layers[2].Theta[:, 0] ** 2))

    twin = Biased(net.layers)
    return check_network(twin, X, y, 1e6)


@case
def float32_feature_near_a_million():
    net = Network.from_sizes([5, 4, 3], seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5)).astype(np.float32)
    X[:, 2] = 1e6 + rng.standard_normal(30)
    return check_network(net, X, rng.integers(0, 3, 30), 0.0)


def _kinked(act=ReLU, on_kink=True, offset=0.0):
    rng = np.random.default_rng(0)
    X, Y = rng.standard_normal((6, 3)), rng.integers(0, 3, 6)
    net = Network([Dense(3, 4), act(), Dense(4, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    T = net.layers[0].Theta
    if on_kink:
        T[1, 0] = -(X[0] @ T[1, 1:]) + offset
    return net, X, Y, 0.0


@case
def relu_on_a_kink_full():
    return check_network(*_kinked())


@case
def relu_on_a_kink_directional():
    return check_network(*_kinked(), mode="directional")


@case
def relu_near_a_kink_richardson():
    return check_network(*_kinked(offset=1e-9), "richardson")


@case
def relu_wrong_derivative():
    return check_network(*_kinked(OneEverywhere, on_kink=False))


@case
def relu_wrong_derivative_directional():
    return check_network(*_kinked(OneEverywhere), mode="directional")


@case
def relu_units_on_kinks_moved_apart():
    net, X, Y, lam = _kinked(on_kink=False)
    net.layers[0].Theta[0] = 0.0
    return check_network(net, X, Y, lam)


@case
def relu_leaky_softmax_random():
    rng = np.random.default_rng(0)
    net = Network([Dense(5, 6), ReLU(), Dense(6, 4), LeakyReLU(0.1), Dense(4, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    return check_network(net, rng.standard_normal((20, 5)) * 3, rng.integers(0, 3, 20), 1.0)


@case
def relu_leaky_softmax_random_directional():
    rng = np.random.default_rng(1)
    net = Network([Dense(5, 6), ReLU(), Dense(6, 4), LeakyReLU(0.1), Dense(4, 3)], loss=SoftmaxCrossEntropy(),
                  dtype=np.float32)
    net.init_random(1)
    return check_network(net, rng.standard_normal((20, 5)) * 3, rng.integers(0, 3, 20), 1.0, mode="directional")


@case
def tanh_mse():
    rng = np.random.default_rng(2)
    net = Network([Dense(4, 6), Tanh(), Dense(6, 2), Identity()], loss=MeanSquaredError())
    net.init_random(2)
    return check_network(net, rng.standard_normal((15, 4)), rng.standard_normal((15, 2)), 0.5)


@case
def tanh_mse_planted_directional():
    rng = np.random.default_rng(2)
    net = Network([Dense(4, 6), Tanh(), Dense(6, 2), Identity()], loss=MeanSquaredError())
    net.init_random(2)
    return check_network(plant_gradient_error(net, 12, 1e-2), rng.standard_normal((15, 4)),
                         rng.standard_normal((15, 2)), 0.5, mode="directional")


@case
def user_softsign_network():
    from custom_layer import Softsign

    net = Network([Dense(4, 8), Softsign(), Dense(8, 3), Sigmoid()])
    net.init_random(3)
    return check_network(net, XS, YS, 1.0)


@case
def user_softplus_network_directional():
    from custom_layer import Softplus

    net = Network([Dense(4, 8), Softplus(), Dense(8, 3), Sigmoid()])
    net.init_random(3)
    return check_network(net, XS, YS, 1.0, mode="directional")


@case
def plain_tanh_network():
    from helpers import PlainTanh

    net = Network([Dense(4, 8), PlainTanh(), Dense(8, 3), Sigmoid()])
    net.init_random(4)
    return check_network(net, XS, YS, 1.0)


@case
def plain_tanh_network_directional():
    from helpers import PlainTanh

    net = Network([Dense(4, 8), PlainTanh(), Dense(8, 3), Sigmoid()])
    net.init_random(4)
    return check_network(net, XS, YS, 1.0, mode="directional")


@case
def rules_wrong_like_backward():
    net = Network([Dense(4, 5), ScaledSigmoid(), Dense(5, 3), Sigmoid()])
    net.init_random(5)
    return check_network(net, XS, YS, 0.0)


@case
def rule_wrong_for_small_changes_full():
    net = Network([Dense(4, 6), TinyChangeShortcut(), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, XS, YS, 1.0)


@case
def rule_wrong_for_small_changes_directional():
    net = Network([Dense(4, 6), TinyChangeShortcut(), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, XS, YS, 1.0, mode="directional")


@case
def rule_wrong_for_batches_full():
    net = Network([Dense(4, 6), BatchBlind(), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, XS, YS, 1.0)


@case
def rule_wrong_for_batches_directional():
    net = Network([Dense(4, 6), BatchBlind(), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, XS, YS, 1.0, mode="directional")


@case
def sly_rule_batches_full():
    rng = np.random.default_rng(0)
    net = Network([Dense(5, 12), SlyTanh(batch=3), Dense(12, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, rng.standard_normal((30, 5)), rng.integers(0, 3, 30), 1.0)


@case
def sly_rule_unit_directional():
    rng = np.random.default_rng(0)
    net = Network([Dense(5, 12), SlyTanh(unit=7), Dense(12, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, rng.standard_normal((30, 5)), rng.integers(0, 3, 30), 1.0, mode="directional")


@case
def cancelling_rule_directional():
    rng = np.random.default_rng(0)
    net = Network([Dense(6, 8), CancellingTanh(), Dense(8, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, rng.standard_normal((50, 6)), rng.integers(0, 3, 50), 1.0, mode="directional")


@case
def network_subclass():
    net = Elastic([Dense(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    net.init_random(1)
    return check_network(net, XS, YS, 0.5)


@case
def tied_decoder():
    enc = Dense(4, 3)
    net = Network([enc, Sigmoid(), TiedDecoder(enc), Dense(4, 2), Sigmoid()])
    net.init_random(2)
    rng = np.random.default_rng(7)
    return check_network(net, rng.standard_normal((10, 4)), rng.integers(0, 2, 10), 0.0)


@case
def accumulating_backward():
    net = Network([Accumulating(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    return check_network(net, XS, YS, 0.0)


@case
def steep_last_layer_lambda():
    net = Network([Dense(4, 5), Sigmoid(), Dense(5, 3), Steep()])
    net.init_random(3)
    return check_network(net, XS, YS, 1.0)


@case
def wrong_hidden_layer_lambda_directional():
    net = Network([Dense(4, 6), WrongTanh(), Dense(6, 3), Sigmoid()])
    net.init_random(3)
    return check_network(net, XS, YS, 2.0, mode="directional")


@case
def wrong_hidden_layer_full():
    net = Network([Dense(4, 6), WrongTanh(), Dense(6, 3), Sigmoid()])
    net.init_random(3)
    return check_network(net, XS, YS, 2.0)


@case
def structured_engine_refused():
    net = Elastic([Dense(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    return check_network(net, XS, YS, 0.5, engine="structured")


# ---------------------------------------------------------------------- layers
@case
def layer_dense():
    return check_layer(Dense(4, 3, seed=0), np.random.default_rng(0).standard_normal((5, 4)))


@case
def layer_softsign_directional():
    from custom_layer import Softsign

    return check_layer(Softsign(), np.random.default_rng(1).standard_normal((6, 5)), mode="directional")


@case
def layer_relu_on_kinks():
    return check_layer(ReLU(), np.array([[0.0, 1.0, -2.0], [3e-9, -1e-9, 0.5]]), "richardson")


@case
def layer_relu_on_kinks_directional():
    zeros = np.zeros((8, 3))
    zeros[:, 1] = np.random.default_rng(1).standard_normal(8)
    return check_layer(ReLU(), zeros, mode="directional")


@case
def layer_transposed_weight_gradient():
    class Square:
        def __init__(self, n):
            self.param_shapes = {"W": (n, n)}
            W = np.random.default_rng(1).standard_normal((n, n))
            self.params, self.grads = {"W": W}, {"W": np.zeros_like(W)}

        def bind(self, params, grads):
            self.params, self.grads = {"W": params["W"]}, {"W": grads["W"]}

        def forward(self, x):
            self._x = x
            return x @ self.params["W"].T

        def backward(self, dy):
            self.grads["W"][...] = self._x.T @ dy
            return dy @ self.params["W"]

    return check_layer(Square(4), np.random.default_rng(0).standard_normal((5, 4)))


@case
def layer_accumulating():
    return check_layer(Accumulating(4, 3, seed=0), XS[:5])


@case
def layer_float32_complex_step():
    return check_layer(Tanh(), np.random.default_rng(2).standard_normal((4, 3)).astype(np.float32), "complex-step")


# ---------------------------------------------------------------------- the examples' problems
@case
def example_forum_bug():
    import forum_bug

    return forum_bug.problem().check()


@case
def example_course_port():
    import course_port

    return course_port.problem(1.0).check(budget=2000)


@case
def example_diabetes():
    import diabetes_regression

    return diabetes_regression.problem().check()


@case
def example_relu_softmax_digits():
    import relu_softmax_digits

    return relu_softmax_digits.problem().check()


# ---------------------------------------------------------------------- records
def _array(a: Any) -> Any:
    if a is None:
        return None
    a = np.asarray(a)
    if a.dtype == bool:
        return [bool(v) for v in a] if a.size <= MAX_ARRAY else {"count": int(a.sum()), "size": int(a.size)}
    a = a.astype(np.float64)
    if a.size <= MAX_ARRAY:
        return [_number(v) for v in a]
    finite = a[np.isfinite(a)]
    return {"size": int(a.size), "non_finite": int(a.size - finite.size), "sum": _number(float(np.sum(finite))),
            "quantiles": [_number(v) for v in np.quantile(finite, [0, 0.1, 0.5, 0.9, 1])] if finite.size else []}


def _number(v: float) -> Any:
    v = float(v)
    return v if np.isfinite(v) else str(v)


def _summarized(d: dict) -> dict:
    for key in ("numerical", "analytical", "measured"):
        if key in d and isinstance(d[key], list) and len(d[key]) > MAX_ARRAY:
            values = np.array([float(v) if not isinstance(v, str) else np.nan for v in d[key]])
            d[key] = _array(values if key != "measured" else values.astype(bool))
    return d


def record(result: Any) -> dict:
    """What the corpus keeps of a case's result (module docstring)."""
    if isinstance(result, BaseException):
        return {"raised": type(result).__name__, "message": str(result)}
    report = result
    d = _summarized(report.to_dict(include_arrays=True))
    d.pop("seconds")
    d["arrays"] = {"tolerance": _array(report.tolerance), "detectable": _array(report.detectable),
                   "model_tolerance": _array(report.model_tolerance), "first_reach": _array(report.first_reach),
                   "refined": _array(report.refined), "error_estimate": _array(report.error_estimate)}
    d["text"] = re.sub(r"\n  \d+ evaluations( \([^)]*\))? in [\d.]+ ms$", "", report.render())
    return d


def run(name: str) -> dict:
    try:
        return record(CASES[name]())
    except Exception as exc:  # noqa: BLE001 - a case that raises records what it raised
        return record(exc)


def differences(expected: Any, actual: Any, path: str = "", rtol: float = 0.0) -> list[str]:
    """Where ``actual`` differs from ``expected``: numbers within ``rtol`` relative, everything else exactly."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        out = [f"{path}: keys {sorted(set(expected) ^ set(actual))} on one side only"] \
            if set(expected) != set(actual) else []
        for k in expected:
            if k in actual:
                out += differences(expected[k], actual[k], f"{path}.{k}", rtol)
        return out
    if isinstance(expected, list) and isinstance(actual, list):
        if len(expected) != len(actual):
            return [f"{path}: length {len(expected)} != {len(actual)}"]
        out = []
        for i, (e, a) in enumerate(zip(expected, actual)):
            out += differences(e, a, f"{path}[{i}]", rtol)
        return out
    if isinstance(expected, float) and isinstance(actual, (int, float)) and not isinstance(actual, bool):
        if expected == actual or abs(expected - actual) <= rtol * max(abs(expected), abs(actual)):
            return []
        return [f"{path}: {expected!r} != {actual!r}"]
    return [] if expected == actual and type(expected) is type(actual) else [f"{path}: {expected!r} != {actual!r}"]


def fingerprint() -> dict:
    """Results that a CPU's vector units and BLAS kernels round differently (a matrix product, a long sum, the
    vectorized transcendentals): machines that agree on them reproduce the records to the last bits; on
    others, a noise measurement or a pre-activation placed exactly on a kink moves, and with it tolerances,
    evaluation counts and the digits of the text."""
    rng = np.random.default_rng(11)
    A, B, v = rng.standard_normal((37, 53)), rng.standard_normal((53, 29)), rng.standard_normal(10007)
    values = {"matmul": float((A @ B).sum()), "dot": float(A[0] @ B[:, 0]), "sum": float(v.sum()),
              "exp": float(np.exp(v).sum()), "log": float(np.log1p(np.abs(v)).sum()),
              "tanh": float(np.tanh(v).sum())}
    return {k: float(x).hex() for k, x in values.items()}


def verdicts(rec: dict) -> dict:
    """What a record says on any machine: its verdict, the blocks it names, and its findings' codes."""
    if "raised" in rec:
        return {"raised": rec["raised"]}
    return {"passed": rec["passed"], "inconclusive": rec["inconclusive"], "wrong": rec["wrong_blocks"],
            "correct": rec["correct_blocks"],
            "findings": sorted((f["code"], tuple(f["blocks"])) for f in rec["findings"])}


def main() -> None:
    if "--write" not in sys.argv:
        raise SystemExit("usage: python tests/golden.py --write   (records every case; see the module docstring)")
    records = {}
    for name in CASES:
        records[name] = run(name)
        print(name, "raised" if "raised" in records[name] else records[name]["passed"])
    RECORDS.parent.mkdir(exist_ok=True)
    RECORDS.write_text(json.dumps(records, indent=1, sort_keys=True) + "\n")
    MACHINE.write_text(json.dumps(fingerprint(), indent=1, sort_keys=True) + "\n")
    print(f"{len(records)} records written to {RECORDS}")


if __name__ == "__main__":
    main()
