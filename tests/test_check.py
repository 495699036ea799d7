"""The entry points: reports, nothing lost, bad input refused, no false alarms."""

import json

import numpy as np
import pytest
from helpers import quadratic

import layerkit
from layerkit import InputError, Network, TargetError, check_function, check_layer, check_network
from layerkit.fast.layer_rules import SigmoidRule


@pytest.mark.parametrize("lam", [0.0, 3.0])
def test_debug_network_meets_the_course_criterion(debug_problem, lam):
    net, X, y = debug_problem
    report = check_network(net, X, y, lam, "central")
    assert report.passed and report.relative_difference < 1e-9
    assert [b.name for b in report.blocks] == ["Theta1", "Theta2"]
    assert report.findings == ()


@pytest.mark.parametrize("method", ["forward", "central", "richardson", "complex-step"])
@pytest.mark.parametrize("engine", ["auto", "generic"])
def test_every_method_passes_correct_networks(debug_problem, method, engine):
    net, X, y = debug_problem
    for lam in (0.0, 3.0):
        report = check_network(net, X, y, lam, method, engine=engine)
        assert report.passed, str(report)


@pytest.mark.parametrize("method", ["forward", "central", "richardson", "complex-step"])
def test_float32_raises_no_false_alarm(method):
    rng = np.random.default_rng(7)
    for seed in range(3):
        net = Network.from_sizes([6, 5, 4], dtype=np.float32, seed=seed)
        X = rng.standard_normal((12, 6))
        y = rng.integers(0, 4, 12)
        for lam in (0.0, 3.0):
            report = check_network(net, X, y, lam, method)
            assert report.passed, str(report)
            assert report.dtype == "float32"


def test_an_engine_change_that_is_not_finite_hands_the_check_over_to_the_cost(monkeypatch):
    """A safeguard: should the engine compute a non-finite change where the analytic gradient is finite, the
    check differences the network's own cost instead of blaming the gradient (and a wrong entry still fails)."""
    from layerkit.fast.probe import NetworkProbe
    from layerkit.testing import plant_gradient_error

    real = NetworkProbe._delta

    def broken(self, steps, axes):
        out = real(self, steps, axes)
        if axes is None:
            out[:, 3] = np.inf
        return out

    monkeypatch.setattr(NetworkProbe, "_delta", broken)
    rng = np.random.default_rng(0)
    net = Network([layerkit.Dense(4, 5), layerkit.Tanh(), layerkit.Dense(5, 3)], loss=layerkit.SoftmaxCrossEntropy(),
                  dtype=np.float32)
    net.init_random(1)
    X, y = rng.standard_normal((12, 4)), rng.integers(0, 3, 12)
    report = check_network(net, X, y, 1.0)
    assert report.passed and report.evaluator == "cost" and np.all(np.isfinite(report.numerical))
    assert any("not finite at 1 entry (Theta1[0, 3])" in n for n in report.notes)
    bad = check_network(plant_gradient_error(net, 3, rel=0.2), X, y, 1.0)
    assert str(bad).startswith("FAILED") and bad.worst[0].flat_index == 3


def test_saturated_network_passes():
    rng = np.random.default_rng(3)
    net = Network.from_sizes([5, 4, 3], seed=1)
    net.params = net.params * 50
    X, y = rng.standard_normal((9, 5)), rng.integers(0, 3, 9)
    for method in ("central", "richardson", "complex-step"):
        assert check_network(net, X, y, 1.0, method).passed


def test_report_fields_and_rendering(debug_problem):
    net, X, y = debug_problem
    report = check_network(net, X, y, 3.0, top=4)
    assert report.method == "central" and report.step_rule == "auto" and report.dtype == "float64"
    assert report.numerical.shape == report.analytical.shape == (38,)
    assert len(report.worst) == 4
    worst = report.worst[0]
    assert worst.block in ("Theta1", "Theta2") and len(worst.index) == 2
    assert worst.error == abs(worst.numerical - worst.analytical)
    # the engine's two stencils (h and h/2, for the truncation), one gradient evaluation (a network of
    # layerkit's own layers is stateless: no second one), one verification (layerkit's own layers: a row of
    # every block moved at once; other rules are also compared per block and at the check's own steps)
    assert report.n_evals == 2 * 2 * 38 + 1 + 1 and report.seconds > 0
    text = str(report)
    assert text.splitlines()[0].startswith("PASSED  central")
    assert "Theta1" in text and "worst entries" in text
    assert len(text.splitlines()) < 20  # compact, not all 38 entries
    d = report.to_dict(include_arrays=True)
    json.dumps(d)
    assert {"method", "step", "dtype", "passed", "relative_difference", "max_abs_error", "max_rel_error", "blocks",
            "worst", "findings", "n_evals", "seconds", "numerical", "analytical"} <= set(d)


def test_check_function_with_blocks_names_entries():
    def fun(x):
        g = 2 * x
        g[4] += 1.0  # wrong entry: block B, index (0, 1)
        return float(x @ x), g

    report = check_function(fun, np.arange(10.0), blocks={"A": (4,), "B": (2, 3)})
    assert not report.passed
    assert report.failed_blocks == ["B"] and report.passed_blocks == ["A"]
    assert report.worst[0].label == "B[0, 0]"


def test_check_function_accepts_a_column_gradient_and_rejects_wrong_shapes():
    assert check_function(lambda x: (float(x @ x), (2 * x)[:, None]), np.ones(3)).passed
    with pytest.raises(TargetError, match=r"shape \(4,\); expected \(3,\)"):
        check_function(lambda x: (float(x @ x), np.ones(4)), np.ones(3))
    with pytest.raises(TargetError, match=r"\(cost, grad\) pair"):
        check_function(lambda x: float(x @ x), np.ones(3))
    with pytest.raises(TargetError, match="scalar cost"):
        check_function(lambda x: (x, 2 * x), np.ones(3))


def test_bad_arguments_get_specific_errors():
    with pytest.raises(InputError, match=r"blocks: expected block sizes summing to x0.size = 6, got 5"):
        check_function(quadratic, np.ones(6), blocks={"a": (2, 2), "b": (1,)})
    with pytest.raises(InputError, match="x0"):
        check_function(quadratic, np.ones((2, 3)))
    with pytest.raises(InputError, match="x0: expected finite"):
        check_function(quadratic, np.r_[np.ones(5), np.inf])
    with pytest.raises(InputError, match="rtol"):
        check_function(quadratic, np.ones(6), rtol=-1)
    with pytest.raises(InputError, match="fun"):
        check_function("quadratic", np.ones(6))
    with pytest.raises(InputError, match="engine"):
        check_network(Network.from_sizes([2, 2]), np.ones((1, 2)), [0], engine="fast")


class _RaisesOnCall:
    def __init__(self, n):
        self.n, self.calls = n, 0

    def __call__(self, x):
        self.calls += 1
        x[0] += 1000.0  # a careless function that writes into its argument
        if self.calls == self.n:
            raise RuntimeError("boom on call %d" % self.n)
        return quadratic(x - np.r_[1000.0, np.zeros(5)])


@pytest.mark.parametrize("method", ["forward", "central", "richardson"])
def test_x0_is_bit_identical_even_when_the_function_raises(method):
    x0 = np.random.default_rng(0).standard_normal(6)
    before = x0.copy()
    with pytest.raises(RuntimeError, match="boom on call 7"):
        check_function(_RaisesOnCall(7), x0, method)
    assert x0.tobytes() == before.tobytes()


def test_network_params_are_bit_identical_even_when_a_layer_raises(debug_problem):
    net, X, y = debug_problem

    class Flaky(layerkit.Sigmoid):
        calls = 0

        def forward(self, x):
            Flaky.calls += 1
            if Flaky.calls == 7:
                raise RuntimeError("layer failed on call 7")
            return super().forward(x)

        def propagate(self, x, y, change):  # the structured engine's path
            Flaky.calls += 1
            if Flaky.calls == 7:
                raise RuntimeError("layer failed on call 7")
            return SigmoidRule(self).propagate(x, y, change)

    flaky = Network([layerkit.Dense(3, 5), Flaky(), layerkit.Dense(5, 3), layerkit.Sigmoid()])
    flaky.params = net.params
    before, grads_before = flaky.params.copy(), flaky.grads.copy()
    for engine in ("generic", "auto"):
        Flaky.calls = 0
        with pytest.raises(RuntimeError, match="call 7"):
            check_network(flaky, X, y, 3.0, engine=engine)
        assert flaky.params.tobytes() == before.tobytes()
        assert flaky.grads.tobytes() == grads_before.tobytes()


def test_check_leaves_the_network_untouched(debug_problem):
    net, X, y = debug_problem
    before = net.params.copy()
    for method in ("central", "richardson", "complex-step"):
        check_network(net, X, y, 3.0, method)
    assert net.params.tobytes() == before.tobytes()


def test_non_finite_values_are_reported_not_flooded():
    def fun(x):
        # the cost is NaN when x[2] moves up: log of a negative number
        c = float(x @ x) + (np.log(1.0 - (x[2] - 0.5) * 1e9) if x[2] > 0.5 else 0.0)
        return c, 2 * x

    x0 = np.array([0.1, 0.2, 0.5, 0.3])
    report = check_function(fun, x0)  # pytest turns any RuntimeWarning into an error
    assert not report.passed
    assert report.worst[0].label == "x[2]" and np.isnan(report.worst[0].numerical)
    assert "non-finite" in report.codes()
    with pytest.raises(layerkit.NonFiniteError, match="cost at x0"):
        check_function(lambda x: (np.nan, x), x0)


def test_check_layer_restores_the_layers_own_arrays():
    layer = layerkit.Dense(3, 2, seed=0)
    theta, grad = layer.Theta, layer.dTheta
    values = theta.copy()
    report = check_layer(layer, np.random.default_rng(0).standard_normal((4, 3)))
    assert report.passed and report.layout.names == ["x", "Theta"]
    assert layer.Theta is theta and layer.dTheta is grad
    np.testing.assert_array_equal(layer.Theta, values)


def test_check_layer_inside_a_network_leaves_the_network_alone(debug_problem):
    net, X, y = debug_problem
    before = net.params.copy()
    assert check_layer(net.layers[2], np.random.default_rng(0).standard_normal((4, 5))).passed
    assert net.params.tobytes() == before.tobytes()
    assert np.shares_memory(net.layers[2].Theta, net.params)


def test_rtol_and_atol_overrides(debug_problem):
    net, X, y = debug_problem
    strict = check_network(net, X, y, 0.0, "forward", rtol=0.0, atol=0.0)
    assert not strict.passed and strict.rtol == 0.0
    loose = check_network(net, X, y, 0.0, "forward", rtol=1e-3, atol=1e-6)
    assert loose.passed and np.all(loose.tolerance >= 1e-6)


def test_fixed_step_is_used_as_given(debug_problem):
    net, X, y = debug_problem
    report = check_network(net, X, y, 3.0, "central", step=1e-4)
    assert report.step == 1e-4 and report.step_rule == "fixed" and report.passed


def test_a_step_below_the_dtype_resolution_is_refused():
    x0 = np.ones(4, dtype=np.float32)
    with pytest.raises(InputError, match=r"step: expected a step large enough to change every parameter in float32"):
        check_function(lambda x: (float(x @ x), 2 * x), x0, step=1e-12)
    with pytest.raises(InputError, match="step"):
        check_function(lambda x: (float(x @ x), 2 * x), x0, "richardson", step=1e-12)


@pytest.mark.parametrize("method", ["forward", "central", "richardson"])
@pytest.mark.parametrize("engine", ["structured", "generic"])
def test_raw_inputs_raise_no_false_alarm_and_bugs_are_still_caught(method, engine):
    """Inputs of up to 255 (raw pixel values): along Theta1[r, c] the cost varies on a length scale 1/|x_c|,
    so steps are made relative to the pre-activation they move.  Without that, a correct network failed
    Richardson on the example below (error 7.2e-10 against a tolerance of 1.6e-10)."""
    from layerkit.testing import plant_gradient_error

    rng = np.random.default_rng(1)
    net = Network.from_sizes([3, 1], seed=1)
    X, y = 30 * rng.standard_normal((1, 3)), rng.integers(0, 1, 1)
    assert check_network(net, X, y, 1.0, method, engine=engine).passed
    net = Network.from_sizes([20, 6, 4], seed=0)
    X, y = 255 * rng.random((40, 20)), rng.integers(0, 4, 40)
    assert check_network(net, X, y, 1.0, method, engine=engine).passed
    # the weight of Theta1 on a raw column with the largest data gradient, made wrong by a relative amount
    # a few times above each method's resolution there (forward ~1e-3, central ~2e-6, Richardson ~3e-8)
    g = net.cost_and_gradient(X, y, 0.0)[1][:6 * 21].reshape(6, 21)
    r, c = np.unravel_index(np.argmax(np.abs(g[:, 1:])), (6, 20))
    entry = int(r * 21 + c + 1)
    bad = plant_gradient_error(net, entry, {"forward": 1e-2, "central": 1e-4, "richardson": 1e-5}[method])
    report = check_network(bad, X, y, 1.0, method, engine=engine)
    assert not report.passed and report.worst[0].flat_index == entry


@pytest.mark.parametrize("kwargs, argument", [
    ({"seed": -1}, "seed"), ({"seed": 1.5}, "seed"), ({"executor": object()}, "executor"),
    ({"lambda_": -1.0}, "lambda_"), ({"lambda_": float("nan")}, "lambda_"), ({"step": 1e308}, "step"),
])
def test_bad_arguments_name_themselves(kwargs, argument):
    with pytest.raises(InputError) as err:
        check_function(lambda t: (float(t @ t), 2 * t), np.ones(3), **kwargs)
    assert err.value.argument == argument


def test_bad_network_arguments_name_themselves(debug_problem):
    net, X, y = debug_problem
    for kwargs, argument in (({"seed": "zero"}, "seed"), ({"engine": "fast"}, "engine"), ({"mode": "quick"}, "mode")):
        with pytest.raises(InputError) as err:
            check_network(net, X, y, 0.0, **kwargs)
        assert err.value.argument == argument
    with pytest.raises(InputError) as err:
        check_network(net, X, y, -3.0)
    assert err.value.argument == "lambda_"


def test_a_problem_s_subject_carries_everything_the_problem_says():
    from layerkit.check.subjects import problem_subject

    fun = lambda t: (float(t @ t), 2 * t)  # noqa: E731
    problem = layerkit.Problem.from_function(fun, np.arange(6.0), {"W": (2, 3)}, lambda_=2.0, m=7, order="F")
    subject = problem_subject(problem)
    assert subject.layout["W"].order == "F" and subject.lambda_ == 2.0 and subject.m == 7
    assert subject.layout.label(1) == "W[1, 0]"  # entry 1 of a 2x3 block unrolled in Fortran order


def test_a_single_block_may_return_its_gradient_in_its_own_shape_or_in_a_list():
    W = np.random.default_rng(0).standard_normal((7, 4))
    for grad in (lambda w: 2 * w.reshape(7, 4), lambda w: [2 * w.reshape(7, 4)]):
        report = layerkit.check_function(lambda w, g=grad: (float(np.sum(w ** 2)), g(w)), W.ravel(),
                                         blocks={"W": (7, 4)})
        assert report.passed, str(report)


@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("method", ["central", "forward", "richardson"])
@pytest.mark.parametrize("dtype, scale", [(np.float32, 1e-26), (np.float64, 1e-160), (np.float64, 1e-300)])
def test_a_negated_gradient_of_a_tiny_cost_never_passes(mode, method, dtype, scale):
    """A cost of 1e-26 in float32 has a gradient its differences resolve; a floor of the tolerance at
    sqrt(tiny) (1.1e-19) would pass it negated.  Wholly below the floor (1e-300 in float64), the check says
    INCONCLUSIVE, with the gradient right or wrong."""
    x0 = np.linspace(0.5, 1.5, 6).astype(dtype)
    s = dtype(scale)
    cost = lambda x: s * np.sum(x * x)  # noqa: E731
    wrong = check_function(lambda x: (cost(x), -2 * s * x), x0, method, mode=mode)
    right = check_function(lambda x: (cost(x), 2 * s * x), x0, method, mode=mode)
    forgotten = check_function(lambda x: (cost(x), np.zeros_like(x)), x0, method, mode=mode)
    assert not wrong.passed and not forgotten.passed
    if scale == 1e-300:
        assert wrong.inconclusive and right.inconclusive and "below the floor" in str(right)
    else:
        assert right.passed and not wrong.inconclusive and not forgotten.inconclusive


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_cost_that_rounds_its_changes_away_is_inconclusive_and_one_that_ignores_the_point_fails(mode):
    """A softmax sure of every label has a cost of exactly 0.0 (log(1 + 1e-60)): it never moves, while the
    backprop's entries of 1e-59 are right.  A step at which the cost does not change where the gradient
    predicts less than eps max(|f0|, 1) measured nothing; a cost that ignores the point while its gradient
    predicts a change far above its rounding still fails."""
    from layerkit import Dense, ReLU, SoftmaxCrossEntropy

    net = Network([Dense(4, 6), ReLU(), Dense(6, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(1)
    X = np.random.default_rng(0).standard_normal((20, 4))
    net.layers[2].Theta[...] *= 1000
    H = np.maximum(np.c_[np.ones(20), X] @ net.layers[0].Theta.T, 0)
    y = (np.c_[np.ones(20), H] @ net.layers[2].Theta.T).argmax(1)
    assert net.cost_and_gradient(X, y, 0.0)[0] == 0.0
    report = check_network(net, X, y, 0.0, mode=mode)
    assert report.passed or report.inconclusive, report
    x0 = np.linspace(0.5, 1.5, 6)
    ignores = check_function(lambda x: (5.0 + 0 * x.sum(), np.ones_like(x)), x0, mode=mode)
    assert not ignores.passed and not ignores.inconclusive
    tiny = check_function(lambda x: (5.0 + 0 * x.sum(), 1e-20 * np.ones_like(x)), x0, mode=mode)
    assert tiny.inconclusive
