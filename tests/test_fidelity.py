"""A check evaluates the caller's own objects, never passes a wrong gradient it could have seen, raises no
false alarm on a correct one, and leaves everything as it found it.  One test per way this went wrong."""

import collections
import subprocess
import sys

import numpy as np
import pytest
from adversaries import (
    Accumulating,
    BatchBlind,
    CancellingTanh,
    Elastic,
    ScaledSigmoid,
    SlyTanh,
    Steep,
    TiedDecoder,
    TinyChangeShortcut,
    noisy_logistic,
    quantized,
    saturated_logistic,
)
from helpers import PlainTanh

import layerkit
from layerkit import (
    ComplexEvaluationError,
    Dense,
    InputError,
    Network,
    ReLU,
    Sigmoid,
    SoftmaxCrossEntropy,
    Tanh,
    check_function,
    check_layer,
    check_network,
)
from layerkit.fast.layer_rules import SigmoidRule
from layerkit.testing import plant_gradient_error

RNG = np.random.default_rng(0)
XS, YS = RNG.standard_normal((20, 4)), RNG.integers(0, 3, 20)


def _state(net):
    """Everything a check must leave alone: values of the buffers, and each layer's attributes and bindings
    by identity."""
    layers = {id(layer): layer for layer in net.layers}.values()
    return (net.params.copy(), net.grads.copy(), net.params, net.grads,
            [(layer, dict(vars(layer)), {k: v for k, v in (layer.params or {}).items()},
              {k: v for k, v in (layer.grads or {}).items()}) for layer in layers])


def _unchanged(net, before):
    p, g, pbuf, gbuf, layers = before
    assert net.params is pbuf and net.grads is gbuf
    assert np.array_equal(net.params, p) and np.array_equal(net.grads, g)
    for layer, attrs, params, grads in layers:
        assert vars(layer).keys() == attrs.keys() and all(vars(layer)[k] is v for k, v in attrs.items())
        assert all((layer.params or {})[k] is v for k, v in params.items())
        assert all((layer.grads or {})[k] is v for k, v in grads.items())


# ---------------------------------------------------------------------- false passes
@pytest.mark.parametrize("engine", ["auto", "generic"])
def test_float32_sign_flip_on_a_mid_sized_entry_is_not_passed(engine):
    net = Network.from_sizes([20, 15, 5], seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    X, y = rng.uniform(0, 255, (100, 20)).astype(np.float32), rng.integers(0, 5, 100)
    g = net.cost_and_gradient(X, y, 0.0)[1][:15 * 21]
    entry = int(np.argsort(np.abs(g))[len(g) // 2])
    report = check_network(plant_gradient_error(net, entry, rel=-2.0), X, y, 0.0, engine=engine)
    assert not report.passed
    if engine == "auto":  # the engine resolves float32 gradients: the entry itself is named
        assert report.worst[0].flat_index == entry
    else:  # the whole-cost loop cannot resolve this gradient in float32, and says so instead of passing
        assert report.inconclusive and "precision-limited" in report.codes()


def test_float32_tolerances_are_within_100x_of_the_estimates_true_error():
    net = Network.from_sizes([20, 15, 5], seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    X, y = rng.uniform(0, 255, (100, 20)).astype(np.float32), rng.integers(0, 5, 100)
    report = check_network(net, X, y, 0.0)
    exact = Network.from_sizes([20, 15, 5], seed=0)
    exact.set_params(net.params.astype(np.float64))
    g = exact.cost_and_gradient(X.astype(np.float64), y, 0.0)[1]
    err = np.abs(report.numerical - g)
    assert report.passed and np.all(err <= report.tolerance)
    # Entries of saturated units are below float32's resolution relative to the largest entry: their
    # tolerance is the floor 32 eps max|a|, which the analytic gradient's own rounding reaches there (up to
    # 1.4 times it at raw inputs).  Everywhere else the tolerance comes from the estimate's error.  (The
    # engine's steps are those its two Taylor tables certify, where the difference has no truncation left:
    # about 60 of the 395 entries are then above twice the floor, against 100 when a third-order term
    # remained.)
    from layerkit.check.tolerance import floor

    above = report.tolerance > 2 * floor(report.analytical, np.float32)
    assert above.sum() >= 50
    assert np.median(report.tolerance[above] / err[above]) <= 100


def test_a_network_subclass_is_checked_as_itself():
    net = Elastic([Dense(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    net.init_random(1)
    report = check_network(net, XS, YS, 0.5)
    assert not report.passed and report.evaluator == "cost"
    assert report.cost == net.cost(XS, YS, 0.5)


def test_a_layer_with_parameters_cannot_be_used_twice():
    d = Dense(3, 3)
    with pytest.raises(InputError, match=r"layers\[2\].*same object as layers\[0\]"):
        Network([d, Sigmoid(), d, Sigmoid()])
    s = Sigmoid()
    assert Network([Dense(3, 3), s, Dense(3, 3), s]).size == 24  # a layer without parameters may be


def test_a_layer_put_twice_into_the_list_later_fails_and_grads_are_left_alone():
    d = Dense(3, 3)
    net = Network([d, Sigmoid(), Dense(3, 3), Sigmoid()])
    net.layers[2] = d  # after construction: Theta2 is no longer used, Theta1 twice
    net.init_random(0)
    net.grads[...] = 7.0
    before = _state(net)
    X, y = RNG.standard_normal((10, 3)), RNG.integers(0, 3, 10)
    report = check_network(net, X, y, 0.0)
    assert not report.passed  # each use overwrites the other's gradient: the tied gradient is wrong
    _unchanged(net, before)


def test_tied_weights_are_checked_through_the_tie():
    enc = Dense(4, 3)
    net = Network([enc, Sigmoid(), TiedDecoder(enc), Dense(4, 2), Sigmoid()])
    net.init_random(2)
    before = _state(net)
    X, y = RNG.standard_normal((10, 4)), RNG.integers(0, 2, 10)
    assert not check_network(net, X, y, 0.0).passed
    _unchanged(net, before)


class _DictDense(Dense):
    """A user layer whose bind updates its own dicts in place."""

    def bind(self, params, grads):
        self.params.update(params)
        self.grads.update(grads)


def test_a_layer_binding_in_place_stays_bound_to_the_callers_buffer():
    layer = _DictDense(4, 3)
    net = Network([layer, Sigmoid()])
    net.init_random(0)
    view = layer.params["Theta"]
    y = RNG.integers(0, 3, 20)
    net.objective(XS, y, 0.0)(net.params + 0.1)
    assert layer.params["Theta"] is view and np.shares_memory(view, net.params)
    before = _state(net)
    assert check_network(net, XS, y, 0.0).passed
    _unchanged(net, before)
    assert layer.params["Theta"] is view


def test_a_forward_replaced_on_the_instance_is_what_is_checked():
    net = Network.from_sizes([4, 5, 3], seed=3)
    layer = net.layers[2]
    original = layer.forward
    layer.forward = lambda x: original(x) * 1.5
    report = check_network(net, XS, YS, 0.0)
    assert not report.passed
    assert any("set on the instance" in n for n in report.notes)


class _PickDense(Dense):
    def penalized(self, name, array):
        return array[:, [1, 3]]  # a copy (fancy indexing), not a view


def test_a_penalized_selection_that_is_a_copy_is_regularized_right():
    net = Network([_PickDense(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    net.init_random(4)
    J0, g0 = net.cost_and_gradient(XS, YS, 0.0)
    J, g = net.cost_and_gradient(XS, YS, 2.0)
    T1 = net.layers[0].Theta
    pen = np.zeros_like(g)
    pen[:T1.size].reshape(T1.shape)[:, [1, 3]] = 2.0 / 20 * T1[:, [1, 3]]
    pen[T1.size:] = (2.0 / 20 * np.pad(net.layers[2].Theta[:, 1:], ((0, 0), (1, 0)))).ravel()
    np.testing.assert_allclose(g - g0, pen, rtol=1e-12, atol=1e-15)
    assert J - J0 == pytest.approx(1.0 / 20 * (np.sum(T1[:, [1, 3]] ** 2) + np.sum(net.layers[2].Theta[:, 1:] ** 2)))
    assert check_network(net, XS, YS, 2.0).passed


def test_a_layers_own_rule_members_are_never_a_reference():
    net = Network([Dense(4, 5), ScaledSigmoid(), Dense(5, 3), Sigmoid()])
    net.init_random(5)
    report = check_network(net, XS, YS, 0.0)
    assert not report.passed and report.evaluator == "engine"
    truth = check_network(net, XS, YS, 0.0, engine="generic")
    assert np.all(np.abs(report.numerical - truth.numerical) <= truth.tolerance)


class _HalfPatched(Sigmoid):
    """forward gained a gain on unit 0; backward and the rules, defined in the same class, were not updated:
    only unit 0 differs, so a check of one random row would likely miss it."""

    def forward(self, x):
        y = super().forward(x).copy()
        y[:, 0] *= 1.5
        return y

    def propagate(self, x, y, change):
        return SigmoidRule(self).propagate(x, y, change)

    def series(self, x, y, change):
        return SigmoidRule(self).series(x, y, change)

    def series_bound(self, b):
        return SigmoidRule(self).series_bound(b)


def test_a_rule_that_differs_from_forward_on_one_unit_only_is_refused():
    net = Network([Dense(6, 8), _HalfPatched(), Dense(8, 3), Sigmoid()])
    net.init_random(7)
    rng = np.random.default_rng(7)
    X, y = rng.standard_normal((30, 6)), rng.integers(0, 3, 30)
    for method in ("central", "richardson", "forward"):
        report = check_network(net, X, y, 0.0, method)
        assert not report.passed, method
    assert not check_network(net, X, y, 0.0, mode="directional").passed


def test_a_last_layer_with_its_own_forward_is_what_the_cost_differentiates():
    net = Network([Dense(4, 5), Sigmoid(), Dense(5, 3), Steep()])  # backward inherited: wrong by a factor 2
    net.init_random(3)
    assert not net.fused_sigmoid
    z = net.activations(net.prepare(XS, YS)[0])[-2]  # the last layer's input
    assert np.array_equal(net.predict_proba(XS), Steep().forward(z))
    assert not check_network(net, XS, YS, 1.0).passed
    plain = Network([Dense(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    assert plain.fused_sigmoid
    plain.layers[-1].forward = lambda x: Sigmoid.forward(plain.layers[-1], 2 * x)
    assert not plain.fused_sigmoid


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_rule_member_wrong_for_small_changes_is_not_read(mode):
    net = Network([Dense(4, 6), TinyChangeShortcut(), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    report = check_network(net, XS, YS, 1.0, mode=mode)
    assert not report.passed, str(report)
    assert not any("rule" in n for n in report.notes)


def test_a_rule_member_wrong_for_batches_is_not_read():
    net = Network([Dense(4, 6), BatchBlind(), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    report = check_network(net, XS, YS, 1.0)
    truth = check_network(net, XS, YS, 1.0, engine="generic")
    assert report.passed and truth.passed  # forward and backward are right
    # the full check reads its changes off the layer's (right) Taylor tables: its estimate is the truth's
    assert np.all(np.abs(report.numerical - truth.numerical) <= truth.tolerance)
    # the layer's own propagate is never read: the direction engine batches through the fn-derived rule
    directional = check_network(net, XS, YS, 1.0, mode="directional")
    assert directional.passed and directional.evaluator == "engine"


@pytest.mark.parametrize("scale", [1.0, -1.0, 0.0])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_cost_that_cannot_resolve_its_gradient_is_never_passed(scale, mode):
    fun, x0 = quantized(scale)
    report = check_function(fun, x0, mode=mode)
    assert not report.passed, str(report)
    if scale:  # a zero gradient does not even look like the derivative of a flat staircase
        assert report.inconclusive and "precision-limited" in report.codes()


def test_a_zero_gradient_of_a_clean_cost_passes():
    report = check_function(lambda x: (float(np.sum(np.cos(x))), -np.sin(x)), np.zeros(6))
    assert report.passed and not report.findings


@pytest.mark.parametrize("sizes, m", [([20, 15, 5], 5), ([10, 8, 3], 5), ([4, 5, 3], 20)])
def test_huge_lambda_cannot_hide_a_bias_error(sizes, m):
    """A tolerance that grew with |J| let a 1% error in a bias gradient pass at lambda = 1e6 (the first two)."""
    net = Network.from_sizes(sizes, seed=0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((m, sizes[0])), rng.integers(0, sizes[-1], m)
    bias = net.layout["Theta2"].start  # Theta2[0, 0], not penalized
    report = check_network(plant_gradient_error(net, bias, rel=0.01), X, y, 1e6)
    assert not report.passed and report.worst[0].flat_index == bias
    assert check_network(net, X, y, 1e6).passed


def test_astronomical_lambda_reports_finite_numbers():
    net = Network.from_sizes([4, 5, 3], seed=6)
    report = check_network(net, XS, YS, 1e300)
    assert np.isfinite(report.relative_difference) and np.isfinite(report.max_abs_error)
    assert report.passed == (report.relative_difference < 1e-6)


def _softsign_cost(t):
    """A softsign layer with the classic slip: the derivative 1 / (1 + |z|) instead of its square."""
    X = np.linspace(-1, 1, 12).reshape(6, 2)
    z = X @ t.reshape(2, 2)
    s = z / (1 + np.abs(z))
    return np.sum(s ** 2), (X.T @ (2 * s / (1 + np.abs(z)))).ravel()


def test_complex_step_through_abs_is_not_applicable_and_sweep_falls_back():
    x0 = np.array([0.3, -0.2, 0.5, 0.1])
    with pytest.raises(ComplexEvaluationError, match="not applicable"):
        check_function(_softsign_cost, x0, "complex-step")
    from layerkit.diagnosis.sweep import sweep_steps

    result = sweep_steps(layerkit.Problem.from_function(_softsign_cost, x0))
    assert result.reference == "richardson" and not result.step_is_the_problem


def test_a_backward_that_accumulates_fails_as_stateful():
    net = Network([Accumulating(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    report = check_network(net, XS, YS, 0.0)
    assert not report.passed and "stateful-gradient" in report.codes()
    report = check_layer(Accumulating(4, 3, seed=0), XS[:5])
    assert not report.passed and "stateful-gradient" in report.codes()
    assert "accumulates" in [f for f in report.findings if f.code == "stateful-gradient"][0].message


def test_the_cli_turns_a_target_that_exits_into_a_usage_error(tmp_path):
    (tmp_path / "exiter.py").write_text(
        "import sys, numpy as np, layerkit\n"
        "calls = [0]\n"
        "def f(t):\n"
        "    calls[0] += 1\n"
        "    if calls[0] > 3:\n"
        "        sys.exit(0)\n"
        "    return float(t @ t), 2 * t\n"
        "problem = layerkit.Problem.from_function(f, np.ones(3))\n")
    out = subprocess.run([sys.executable, "-m", "layerkit.cli.app", "check", "exiter.py:problem"],
                         cwd=tmp_path, capture_output=True, text=True)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.strip() == "error: the target called sys.exit(0) during the check"


# ---------------------------------------------------------------------- false alarms
@pytest.mark.parametrize("method", ["forward", "central", "richardson", "complex-step"])
def test_saturated_networks_raise_no_false_alarm(method):
    for seed in range(10):
        net = Network.from_sizes([4, 6, 6, 3], seed=seed)
        net.set_params(net.params * 50)
        rng = np.random.default_rng(seed)
        X, y = rng.standard_normal((40, 4)), rng.integers(0, 3, 40)
        for engine in ("auto", "generic"):
            assert check_network(net, X, y, 0.0, method, engine=engine, diagnose=False).passed, (seed, engine)
        if method != "complex-step":
            assert check_network(net, X, y, 0.0, method, mode="directional", diagnose=False).passed, seed


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_float32_with_a_feature_near_a_million(mode):
    net = Network.from_sizes([5, 4, 3], seed=0, dtype=np.float32)
    rng = np.random.default_rng(0)
    X = rng.standard_normal((30, 5)).astype(np.float32)
    X[:, 2] = 1e6 + rng.standard_normal(30)
    report = check_network(net, X, rng.integers(0, 3, 30), 0.0, mode=mode)
    assert report.passed
    assert not np.isnan(report.numerical[report.measured if report.measured is not None else slice(None)]).any()


@pytest.mark.parametrize("lam", [0.0, 1.0])
def test_a_correct_rule_that_cancels_raises_no_alarm_in_directional_mode(lam):
    net = Network([Dense(6, 8), CancellingTanh(), Dense(8, 3), Sigmoid()])
    net.init_random(0)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((50, 6)), rng.integers(0, 3, 50)
    assert check_network(net, X, y, lam, mode="directional").passed
    assert check_network(net, X, y, lam).passed


@pytest.mark.parametrize("method", ["forward", "central", "richardson"])
def test_a_noisy_but_correct_cost_is_not_failed_and_the_cancellation_is_named(method):
    cost, theta = noisy_logistic()
    report = check_function(cost, theta, method, lambda_=10.0, m=118)
    assert report.passed
    f = [f for f in report.findings if f.code == "precision-limited"][0]
    assert "cancellation" in f.message and "logaddexp" in f.message
    assert report.noise.excess > 100


# ---------------------------------------------------------------------- nothing is lost
class _Interrupting(Sigmoid):
    def __init__(self, after):
        super().__init__()
        self.calls, self.after = 0, after

    def forward(self, x):
        self.calls += 1
        if self.calls > self.after:
            raise KeyboardInterrupt
        return super().forward(x)


@pytest.mark.parametrize("after", [0, 1, 3, 40])
def test_an_interrupt_inside_the_network_leaves_it_exactly_as_it_was(after):
    stop = _Interrupting(after)
    net = Network([Dense(4, 5), stop, Dense(5, 3), Sigmoid()])
    net.init_random(0)
    net.grads[...] = 3.0
    before = _state(net)
    stop.calls = 0
    with pytest.raises(KeyboardInterrupt):
        check_network(net, XS, YS, 1.0, engine="generic")
    stop.calls = 0  # the one attribute the interrupting layer changes on purpose
    _unchanged(net, before)


def test_a_function_that_writes_into_its_argument_cannot_change_x0_or_the_estimate():
    calls = []

    def vandal(t):
        calls.append(1)
        J, g = float(t @ t), 2 * t
        t *= 10  # the caller's array, if it were handed over
        return J, g

    x0 = np.linspace(-1, 1, 5)
    keep = x0.copy()
    report = check_function(vandal, x0)
    assert report.passed and np.array_equal(x0, keep) and len(calls) > 10


# ---------------------------------------------------------------------- costs finite differences cannot read
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_right_gradient_of_a_staircase_cost_is_inconclusive_not_failed(mode):
    cost, t0 = saturated_logistic()
    report = check_function(cost, t0, mode=mode)
    assert report.inconclusive, str(report)
    assert "precision-limited" in report.codes()
    assert not {"regularization-mismatch", "nonsmooth", "localized"} & set(report.codes())  # nothing blamed


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_wrong_gradient_of_a_staircase_cost_is_never_passed(mode):
    cost, t0 = saturated_logistic()
    for wrong in (-1.0, 0.0, 1.1):
        assert not check_function(lambda t: cost(t, wrong), t0, mode=mode).passed, wrong


def test_raw_inputs_through_a_function_raise_no_false_alarm():
    """Inputs of 0..255 make the cost bend within the first step of most entries: more of them fail at first
    than the second look's budget covers, and the rest must be measured again rather than reported."""
    rng = np.random.default_rng(0)
    X, y = rng.random((50, 8)) * 255, rng.integers(0, 3, 50)
    net = Network.from_sizes([8, 6, 3], seed=0)
    report = check_function(net.objective(X, y, 1.0), net.get_params())
    assert report.passed, str(report)
    assert any("measured again" in n for n in report.notes)
    assert report.n_evals > 400  # the second look's evaluations are counted


def test_a_float32_gradient_of_a_float64_cost_is_judged_by_its_own_rounding():
    rng = np.random.default_rng(0)
    A, b = rng.standard_normal((50, 20)), rng.standard_normal(50)

    def fun(x):
        r = A @ x - b
        return 0.5 * float(r @ r), A.astype(np.float32).T @ r.astype(np.float32)
    x0 = rng.standard_normal(20)
    assert check_function(fun, x0).passed
    assert not check_function(lambda x: (fun(x)[0], fun(x)[1] * np.float32(1.001)), x0).passed


def test_a_fixed_step_has_its_truncation_measured():
    """At x = 0, f = 1000 x^3 + x has f' = 1 and a central difference off by 1000 h^2, which a model built on
    the gradient's size cannot see."""
    def fun(x):
        return float(np.sum(1000.0 * x**3 + x)), 3000.0 * x**2 + 1
    coarse = check_function(fun, np.zeros(3), step=1e-2)
    assert not coarse.passed and coarse.inconclusive and "truncation" in str(coarse)
    assert check_function(fun, np.zeros(3), step=1e-4).passed


def test_the_complex_step_claims_no_more_than_its_confirmation_resolved():
    """A |x_0| term hidden in a long vector: the confirmation along random directions cannot see it, so the
    tolerance of x_0 must cover it."""
    rng = np.random.default_rng(0)
    P, c = 2000, 1e-6
    w, x0 = rng.uniform(0.5, 2.0, P), rng.standard_normal(P)
    x0[0] = 0.7

    def fun(x):
        return 0.5 * np.sum(w * x * x) + c * np.abs(x[0]), (w * x).real.copy()  # the gradient misses c
    report = check_function(fun, x0, "complex-step")
    assert report.passed and report.tolerance[0] >= c  # honest: an error of c is within what it resolves


def test_a_non_finite_gradient_entry_is_reported_without_a_second_look():
    def fun(t):
        g = 2 * t
        g[1] = np.nan
        return float(t @ t), g
    report = check_function(fun, np.array([1.0, 2.0, 3.0]))
    assert not report.passed and "non-finite" in report.codes()
    assert "non-finite value" in report.step_verdict and np.isnan(report.blocks[0].max_abs_error)
    assert not any("measured again" in n for n in report.notes)


# ---------------------------------------------------------------------- what a layer keeps
class _Center:
    """Keeps a running mean, updated in place by forward (as batch normalization does)."""

    param_shapes, params, grads = {}, {}, {}

    def __init__(self, n):
        self.running_mean = np.zeros(n)

    def bind(self, params, grads):
        pass

    def forward(self, x):
        mu = x.mean(axis=0)
        self.running_mean *= 0.9
        self.running_mean += 0.1 * mu
        return x - mu

    def backward(self, dy):
        return dy - dy.mean(axis=0)


def test_a_running_statistic_is_put_back_after_a_check_but_evolves_in_training():
    net = Network([Dense(4, 5), _Center(5), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    stats = net.layers[1].running_mean
    assert check_network(net, XS, YS, 0.0).passed
    assert net.layers[1].running_mean is stats and not stats.any()
    net.objective(XS, YS, 0.0)(net.get_params())  # an objective's evaluation is a training step's
    assert stats.any()


class _ListBound:
    """y = x * w per column, its bound arrays kept in a list that bind updates in place."""

    def __init__(self, n):
        self.param_shapes = {"w": (n,)}
        self._bound = [np.ones(n), np.zeros(n)]

    @property
    def params(self):
        return {"w": self._bound[0]}

    @property
    def grads(self):
        return {"w": self._bound[1]}

    def bind(self, params, grads):
        self._bound[0], self._bound[1] = params["w"], grads["w"]

    def forward(self, x):
        self._x = x
        return x * self._bound[0]

    def backward(self, dy):
        self._bound[1][...] = np.sum(dy * self._x, axis=0)
        return dy * self._bound[0]


def test_bindings_kept_in_a_list_survive_a_complex_step_check_and_a_layer_check():
    net = Network([Dense(4, 3), _ListBound(3), Dense(3, 3), Sigmoid()])
    net.init_random(0)
    w = net.layers[1].params["w"]
    assert check_network(net, XS, YS, 0.0, "complex-step").passed
    assert net.layers[1].params["w"] is w and np.shares_memory(w, net.params)
    check_layer(net.layers[1], RNG.standard_normal((4, 3)).astype(np.float32))
    assert net.layers[1].params["w"] is w


class _InPlaceLeaky:
    param_shapes, params, grads = {}, {}, {}

    def bind(self, params, grads):
        pass

    def forward(self, x):
        self._neg = x < 0
        x[self._neg] *= 0.1
        return x

    def backward(self, dy):
        return np.where(self._neg, 0.1 * dy, dy)


def test_a_layer_that_works_in_place_on_its_input_is_checked_on_a_copy():
    x = RNG.standard_normal((5, 4))
    keep = x.copy()
    report = check_layer(_InPlaceLeaky(), x)
    assert report.passed and np.array_equal(x, keep), str(report)


class _LoudMagnitude(PlainTanh):
    """A right forward, a backward 1% off, and a magnitude 1e13 times too large: trusted, it would size
    tolerances that let the 1% pass."""

    def backward(self, dy):
        return super().backward(dy) * 1.01

    def magnitude(self, x, y, A):
        return A * (1 - y ** 2) * 1e13


@pytest.mark.parametrize("engine", ["auto", "generic"])
def test_a_layers_magnitude_is_confirmed_before_it_sizes_tolerances(engine):
    net = Network([Dense(4, 6), _LoudMagnitude(), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    assert not check_network(net, XS, YS, 0.0, engine=engine).passed


# ---------------------------------------------------------------------- rules wrong where they are not looked at
@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("sly", [{"batch": 3}, {"unit": 7}])
def test_a_rule_wrong_only_for_some_batches_or_one_unit_is_caught_where_it_errs(sly, mode):
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((30, 5)), rng.integers(0, 3, 30)
    net = Network([Dense(5, 12), SlyTanh(**sly), Dense(12, 3), Sigmoid()])
    net.init_random(0)
    assert not check_network(net, X, y, 1.0, engine="generic", mode=mode).passed  # the truth
    report = check_network(net, X, y, 1.0, mode=mode)
    assert not report.passed, str(report)


def test_check_layer_upstream_gradient_is_not_the_callers_input():
    """x drawn from default_rng(0), as one would: an upstream gradient from the same stream equals x, and a
    square layer's dW = r^T x is then symmetric, hiding a transposed weight gradient."""

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
            self.grads["W"][...] = self._x.T @ dy  # transposed: dy.T @ x is right
            return dy @ self.params["W"]

    x = np.random.default_rng(0).standard_normal((5, 4))
    assert not check_layer(Square(4), x).passed


def test_gross_bugs_in_a_course_cost_that_is_somewhat_noisy_are_failed():
    """A course cost at moderately saturated weights carries noise 19 times its rounding: its gross bugs must
    still be FAILED, not excused as noise."""
    rng = np.random.default_rng(1)
    m = 20
    X, y = rng.standard_normal((m, 3)), rng.integers(0, 3, m)
    theta = rng.standard_normal(38) * 5

    def cost(t, bug):
        T1, T2 = t[:20].reshape(5, 4), t[20:].reshape(3, 6)
        Y = np.eye(3)[y]
        a1 = np.hstack([np.ones((m, 1)), X])
        s2 = 1 / (1 + np.exp(-(a1 @ T1.T)))
        a2 = np.hstack([np.ones((m, 1)), s2])
        h = 1 / (1 + np.exp(-(a2 @ T2.T)))
        J = np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h)) / m
        d3 = h - Y
        G1 = ((d3 @ T2[:, 1:]) * s2 * (1 - s2)).T @ a1 / m
        G2 = d3.T @ a2 / m
        g = np.concatenate([G1.ravel(), G2.ravel()])
        return J, {"m": g * m, "sign": -g, "fortran": np.concatenate([G1.ravel("F"), G2.ravel("F")])}.get(bug, g)

    assert check_function(lambda t: cost(t, None), theta).passed
    for bug in ("m", "sign", "fortran"):
        for mode in ("full", "directional"):
            report = check_function(lambda t: cost(t, bug), theta, mode=mode)
            assert not report.passed and not report.inconclusive, (bug, mode, str(report))


class _TupleState:
    """Keeps a running count in a tuple of arrays, and its bound arrays in a deque."""

    def __init__(self, n):
        self.param_shapes = {"w": (n,)}
        self.stats = (np.zeros(1), np.zeros(n))
        self._bound = collections.deque([np.ones(n), np.zeros(n)])

    @property
    def params(self):
        return {"w": self._bound[0]}

    @property
    def grads(self):
        return {"w": self._bound[1]}

    def bind(self, params, grads):
        self._bound.clear()
        self._bound.extend([params["w"], grads["w"]])

    def forward(self, x):
        self.stats[0][0] += 1
        self._x = x
        return x * self._bound[0]

    def backward(self, dy):
        self._bound[1][...] = np.sum(dy * self._x, axis=0)
        return dy * self._bound[0]


def test_state_in_tuples_and_bindings_in_deques_are_put_back():
    net = Network([Dense(4, 3), _TupleState(3), Dense(3, 3), Sigmoid()])
    net.init_random(0)
    w = net.layers[1].params["w"]
    for method in ("central", "complex-step"):
        assert check_network(net, XS, YS, 0.0, method).passed
    assert net.layers[1].stats[0][0] == 0 and net.layers[1].params["w"] is w and np.shares_memory(w, net.params)


def test_a_subclass_s_inherited_rules_are_not_refused_for_their_rounding():
    """Spot checks of a (right) inherited rule must allow the rounding of forward's sums, which an output
    near zero does not show: else the engine is dropped mid-check and the check loses its precision."""

    class Plain(Dense):
        pass

    rng = np.random.default_rng(2)
    X, y = rng.uniform(0, 1, (25, 6)), rng.integers(0, 3, 25)
    net = Network([Plain(6, 5), Sigmoid(), Plain(5, 4), Sigmoid(), Plain(4, 3), Sigmoid()])
    net.init_random(1)
    for mode in ("full", "directional"):
        report = check_network(net, X, y, 0.0, mode=mode)
        assert report.passed and report.evaluator == "engine", (mode, report.notes)
        assert not any("disagreed" in n for n in report.notes)
        rel = 10 * report.detectable[12] / abs(report.analytical[12])  # ten times what it claims to see
        bad = plant_gradient_error(net, 12, rel=rel)
        assert not check_network(bad, X, y, 0.0, mode=mode).passed, (mode, rel)


def test_the_checks_own_steps_are_verified_on_the_blocks_whose_change_meets_a_users_layer(monkeypatch):
    """Every block is compared with the real cost along a random direction; the check's own small steps only
    for blocks before the last layer that is not layerkit's own, whose changes pass through it.  A later
    block changes the cost through layerkit's layers and rules alone."""
    from layerkit.check.engine import Evaluators

    seen = []
    verified = Evaluators.verified

    def spy(self, predictions, what):
        seen.extend((p.block, p.what) for p in predictions)
        return verified(self, predictions, what)

    monkeypatch.setattr(Evaluators, "verified", spy)
    net = Network([Dense(4, 6), Sigmoid(), Dense(6, 5), PlainTanh(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    report = check_network(net, XS, YS, 1.0)
    assert report.passed and report.evaluator == "engine", str(report)
    along = collections.Counter(b for b, what in seen if what == "along a random direction")
    stepped = collections.Counter(b for b, what in seen if "own step" in what)
    assert along == {"Theta1": 1, "Theta2": 1, "Theta3": 1}
    assert stepped == {"Theta1": 2, "Theta2": 2}
    # the gradient twice (a user's layer may keep state), and one real cost per prediction
    assert report.target_evals == 2 + 3 + 4
    seen.clear()
    check_network(Network([Dense(4, 6), PlainTanh(), Dense(6, 3), Sigmoid()]), XS, YS, 1.0)
    assert collections.Counter(b for b, what in seen if "own step" in what) == {"Theta1": 2}


@pytest.mark.parametrize("where", ["hidden", "last"])
def test_a_layerkit_class_patched_under_its_rules_never_stands_behind_the_reference(monkeypatch, where):
    """A layerkit class whose math was replaced on the class itself (which the identity tests of "an instance
    of exactly its class" cannot see) loses its rule: the rule is confirmed against the patched ``forward``
    (and refused) or the layer is re-run, and the estimate is the re-evaluated cost's.  Once, a ``Tanh.fn``
    clipped at 4 passed a gradient wrong by 2e-3 on the saturated examples."""
    from layerkit.nn.layers import Dense as DenseClass

    if where == "hidden":
        monkeypatch.setattr(Tanh, "fn", lambda self, x: np.tanh(np.clip(x, -4, 4)))
    else:
        forward = DenseClass.forward
        monkeypatch.setattr(DenseClass, "forward",
                            lambda self, x: forward(self, x) * (1 + 1e-3 * (self.n_out == 3)))
    net = Network([Dense(4, 6), ReLU(), Dense(6, 5), Tanh(), Dense(5, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    net.set_params(net.params * 6)
    report = check_network(net, XS, YS, 1.0, diagnose=False)
    truth = check_network(net, XS, YS, 1.0, engine="generic", diagnose=False)
    assert report.passed == truth.passed
    assert np.all(np.abs(report.numerical - truth.numerical) <= truth.tolerance + report.tolerance)
