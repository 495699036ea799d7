"""The cost is the only truth: a check's reference comes from what the code computes forward, never from what a
user's layer says about its derivatives; no false alarm on correct code; the contract of ``detectable``.

Each test is one of the ways a check could pass a wrong gradient or accuse a right one: a derivative wrong in
the same way in ``backward`` and in the layer's own ``taylor`` or change members, on a few examples among many;
a layer computing in float32 inside a float64 network; kinks near the point; costs that overflow at a perturbed
point; absurd steps; errors of ten times ``detectable``; random streams a check must leave where they were.
"""

import itertools
import random

import numpy as np
import pytest
from helpers import PlainTanh

import layerkit
from layerkit import Dense, Elementwise, InputError, Network, Sigmoid, Tanh, check_function, check_network
from layerkit.fast.changes import ColumnChange, DenseChange


def _state(r):
    return "PASSED" if r.passed else "INCONCLUSIVE" if r.inconclusive else "FAILED"


def d_wrong(x):
    """tanh's derivative, wrong where the unit saturates (|x| > 3): 1 instead of sech^2."""
    with np.errstate(over="ignore"):
        return np.where(np.abs(x) > 3, 1.0, 1 / np.cosh(x) ** 2)


class MyTanh(Elementwise):
    """tanh with ``derivative`` and ``taylor`` from the same wrong helper (and a strip and slope of its own)."""

    strip, slope = np.pi / 4, 2.0

    def fn(self, x):
        return np.tanh(x)

    def derivative(self, x, y):
        return d_wrong(x)

    def taylor(self, x, y, K):
        out = Tanh().taylor(x, y, K)
        out[0] = d_wrong(x)
        return out


def outside_a_sample(m, size=256, spot=16):
    """Examples outside two small random samples of ``range(m)`` (those ``default_rng(0)`` draws first): where a
    check that reads samples of the examples would not look."""
    rng = np.random.default_rng(0)
    rows = rng.choice(m, size=min(m, size), replace=False)
    spots = rng.choice(m, size=min(m, spot), replace=False)
    return np.setdiff1d(np.arange(m), np.union1d(rows, spots))


def saturating(net, m, unit, where, seed):
    """Inputs of ``m`` examples; those at ``where`` drive ``unit`` of the first layer (and no other) past 3."""
    rng = np.random.default_rng(seed)
    X = 0.3 * rng.standard_normal((m, net.layers[0].n_in))
    W, b = net.layers[0].Theta[:, 1:], net.layers[0].Theta[:, 0]
    w = W[unit]
    X[where] = (3.5 - b[unit]) * w / (w @ w)
    z = X @ W.T + b
    if not (np.all(np.abs(z[where, unit]) > 3) and np.all(np.abs(np.delete(z[where], unit, axis=1)) < 3)):
        return None
    return X, rng.integers(0, 3, m)


def _saturated_case(layer, m, seed):
    net = Network([Dense(4, 12), layer, Dense(12, 3), Sigmoid()])
    net.init_random(seed)
    data = saturating(net, m, 5, outside_a_sample(m)[:3], seed)
    return None if data is None else (net, *data)


# ---------------------------------------------------------------------- 1, 2: nothing a layer claims is a reference
@pytest.mark.parametrize("m", [400, 2000])
def test_a_taylor_wrong_like_backward_on_three_examples_is_not_passed(m):
    for seed in range(40):
        case = _saturated_case(MyTanh(), m, seed)
        if case is not None:
            break
    net, X, y = case
    for mode in ("full", "directional"):
        report = check_network(net, X, y, 0.0, mode=mode)
        assert not report.passed and not report.inconclusive, (mode, str(report))
    assert not check_network(net, X, y, 0.0, engine="generic").passed


class SmallChangeTanh(PlainTanh):
    """A plain layer whose backward uses the wrong helper, with a change member that is exact for large changes
    and first order, on the same helper, for the small changes of a finite difference."""

    def backward(self, dy):
        return dy * d_wrong(self._x)

    def forward(self, x):
        self._x = x
        return np.tanh(x)

    def propagate(self, x, y, change):
        if isinstance(change, ColumnChange):
            c, d = change.col, change.delta
            return ColumnChange(c, np.where(np.abs(d) < 2e-5, d * d_wrong(x[:, c])[None],
                                            np.tanh(x[:, c][None] + d) - y[:, c][None]))
        D = change.dense(x.shape)
        return DenseChange(np.where(np.abs(D) < 2e-5, D * d_wrong(x)[None], np.tanh(x[None] + D) - y[None]))


class _AsRule:
    """The layer's own change members offered as a rule for its class."""

    def __init__(self, layer):
        self.layer = layer

    def __getattr__(self, name):
        if name in ("propagate", "param_inputs", "param_change"):
            return getattr(self.layer, name)
        raise AttributeError(name)


def _offer_rule(cls, reads=("forward",)):
    """Offer the layer class's members as a registered rule; whether the registry took it."""
    from layerkit.fast import rules

    try:
        rules.register_rule(cls, _AsRule, reads=reads)
    except InputError:
        return False
    return True


def test_a_change_member_wrong_for_small_changes_is_never_read():
    from layerkit.fast import rules

    registered = _offer_rule(SmallChangeTanh)
    try:
        found = 0
        for seed in range(40):
            case = _saturated_case(SmallChangeTanh(), 400, seed)
            if case is None:
                continue
            net, X, y = case
            assert not check_network(net, X, y, 0.0).passed, seed
            found += 1
            if found == 4:
                break
        assert found == 4
    finally:
        if registered:
            rules.unregister_rule(SmallChangeTanh)


def test_a_rule_for_a_users_class_is_refused():
    from layerkit.fast.layer_rules import DenseRule
    from layerkit.fast.rules import register_rule

    class MyDense(Dense):
        pass

    with pytest.raises(InputError, match="layerkit's own"):
        register_rule(MyDense, DenseRule)


class OffByOnePercent(Dense):
    """A right Dense whose own change members are 1% off for row 2 on three examples: not a reference, so no
    alarm."""

    def param_inputs(self, name, x):
        from layerkit.fast.layer_rules import DenseRule
        return DenseRule(self).param_inputs(name, x)

    def param_change(self, name, row, cols, steps, x):
        from layerkit.fast.layer_rules import DenseRule
        change = DenseRule(self).param_change(name, row, cols, steps, x)
        if row != 2:
            return change
        d = change.delta.copy()
        d[:, outside_a_sample(x.shape[0])[:3]] *= 1.01
        return ColumnChange(change.col, d)


def test_a_right_layer_with_wrong_change_members_passes():
    from layerkit.fast import rules

    registered = _offer_rule(OffByOnePercent)
    try:
        for seed in range(6):
            rng = np.random.default_rng(seed)
            net = Network([OffByOnePercent(4, 6), PlainTanh(), Dense(6, 3), Sigmoid()])
            net.init_random(seed)
            report = check_network(net, rng.standard_normal((400, 4)), rng.integers(0, 3, 400), 0.0)
            assert report.passed, (seed, str(report))
            assert not any("confined" in f.message for f in report.findings)
    finally:
        if registered:
            rules.unregister_rule(OffByOnePercent)


# ---------------------------------------------------------------------- 4: packing only where every row is verified
class ClipTanh(PlainTanh):
    """tanh with column 0 clipped at 2 first (elementwise on every row but those past the clip), right backward."""

    def forward(self, x):
        self._x = np.array(x, copy=True)
        x = self._x.copy()
        x[:, 0] = np.minimum(x[:, 0], 2.0)
        return np.tanh(x)

    def backward(self, dy):
        x = self._x.copy()
        clip = x[:, 0] > 2.0
        x[:, 0] = np.minimum(x[:, 0], 2.0)
        d = 1 / np.cosh(x) ** 2
        d[clip, 0] = 0.0
        return dy * d


@pytest.mark.parametrize("m", [90, 110, 130, 150])
def test_a_layer_elementwise_on_most_rows_is_not_packed(m):
    rng = np.random.default_rng(m)
    net = Network([Dense(4, 5), ClipTanh(), Dense(5, 3), Sigmoid()])
    net.init_random(1)
    X = 0.3 * rng.standard_normal((m, 4))
    W, b = net.layers[0].Theta[:, 1:], net.layers[0].Theta[:, 0]
    sampled = np.random.default_rng(0x756E69).choice(m, size=min(m, 64), replace=False)
    j = np.setdiff1d(np.arange(m), sampled)[0]  # one example past the clip, outside a sample of 64 rows
    X[j] = (3.0 - b[0]) * W[0] / (W[0] @ W[0])
    report = check_network(net, X, rng.integers(0, 3, m), 0.0)
    assert report.passed, str(report)


# ---------------------------------------------------------------------- 5: the rounding of the actual outputs
class Tanh32(PlainTanh):
    """Computes in float32 inside a float64 network, with a consistent backward."""

    def forward(self, x):
        self._y = np.tanh(x.astype(np.float32))
        return self._y

    def backward(self, dy):
        return dy * (1 - self._y.astype(np.float64) ** 2)


@pytest.mark.parametrize("method", ["richardson", "central", "forward"])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_float32_layer_in_a_float64_network_is_no_false_alarm(method, mode):
    for seed in range(8):
        rng = np.random.default_rng(seed)
        net = Network([Dense(4, 6), Tanh32(), Dense(6, 3), Sigmoid()])
        net.init_random(seed)
        X, y = rng.standard_normal((30, 4)), rng.integers(0, 3, 30)
        report = check_network(net, X, y, 0.0, method, mode=mode)
        assert report.passed, (seed, str(report))
    from layerkit.testing import plant_gradient_error

    j = int(np.argmax(np.abs(report.analytical)))
    error = 10 * float(report.detectable[j])
    if mode == "full":
        assert error < 0.05 * abs(float(report.analytical[j]))  # the float32 layer still resolves 5%
    assert not check_network(plant_gradient_error(net, j, error), X, y, 0.0, method, mode=mode).passed


# ---------------------------------------------------------------------- 6: kinks near the point
def two_layer_net(X, y, kink_at=1e-5):
    """A course-style two-layer ReLU net as one function of a flat vector, with example 0's pre-activation of
    unit 2 at ``kink_at`` from 0 and inputs large enough that the automatic step crosses it."""
    N, D = X.shape
    H, C = 10, 3
    rng = np.random.default_rng(1)
    W1, b1 = 0.5 * rng.standard_normal((D, H)), np.zeros(H)
    W2, b2 = 0.5 * rng.standard_normal((H, C)), np.zeros(C)
    b1[2] = -(X[0] @ W1[:, 2]) + kink_at
    shapes = [(D, H), (H,), (H, C), (C,)]

    def loss(th):
        parts, k = [], 0
        for s in shapes:
            n = int(np.prod(s))
            parts.append(th[k:k + n].reshape(s))
            k += n
        W1, b1, W2, b2 = parts
        z = X @ W1 + b1
        h = np.maximum(z, 0)
        s = h @ W2 + b2
        s = s - s.max(1, keepdims=True)
        p = np.exp(s)
        p /= p.sum(1, keepdims=True)
        L = -np.mean(np.log(p[np.arange(N), y]))
        ds = p.copy()
        ds[np.arange(N), y] -= 1
        ds /= N
        dh = ds @ W2.T
        dz = dh * (z > 0)
        grads = (X.T @ dz, dz.sum(0), h.T @ ds, ds.sum(0))
        return L, np.concatenate([g.ravel() for g in grads])

    return loss, np.concatenate([a.ravel() for a in (W1, b1, W2, b2)])


@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_step_across_a_kink_near_the_point_is_shrunk_before_blaming(method, mode):
    rng = np.random.default_rng(0)
    X, y = 10 * rng.standard_normal((5, 4)), rng.integers(0, 3, 5)
    X[0] = [40, -40, 30, 50]
    loss, th0 = two_layer_net(X, y)
    report = check_function(loss, th0, method, mode=mode)
    assert report.passed, str(report)
    kink = [f for f in report.findings if f.code == "nonsmooth"]
    assert kink and "smooth at the point itself" in kink[0].message


def test_abs_near_zero_is_smooth_at_the_point():
    x0 = np.array([1e-6, 0.5, -0.3])
    f = lambda x: (float(np.sum(np.abs(x) + x**2)), np.sign(x) + 2 * x)  # noqa: E731
    for mode in ("full", "directional"):
        report = check_function(f, x0, mode=mode)
        assert report.passed, (mode, str(report))
    wrong = lambda x: (f(x)[0], f(x)[1] + np.array([1e-3, 0, 0]))  # noqa: E731
    report = check_function(wrong, x0)
    assert _state(report) == "FAILED" and "localized" in report.codes()
    assert not any("do not shrink" in f.message for f in report.findings)


# ---------------------------------------------------------------------- 7, 8: the step or the cost, never the backprop
def test_a_perturbed_cost_that_overflows_is_not_blamed_on_the_backprop():
    net = Network.from_sizes([6, 5, 3], seed=4, dtype=np.float32)
    rng = np.random.default_rng(4)
    X = rng.standard_normal((20, 6)).astype(np.float32)
    X[:, 2] *= 1e6
    report = check_network(net, X, rng.integers(0, 3, 20), 1.0)
    assert report.inconclusive, str(report)
    assert not any("data term" in n for n in report.notes)


@pytest.mark.parametrize("engine", ["auto", "generic"])
def test_absurd_steps_are_refused_or_inconclusive_naming_the_step(engine):
    net = Network.from_sizes([3, 5, 3], init="debug")
    X, y = layerkit.debug_data(5, 3)
    before = net.params.copy()
    with pytest.raises(InputError, match="step"):
        check_network(net, X, y % 3, 1.0, step=1e300, engine=engine)
    assert np.array_equal(net.params, before)
    for mode in ("full", "directional"):
        report = check_network(net, X, y % 3, 1.0, step=10.0, engine=engine, mode=mode)
        assert report.inconclusive, (mode, str(report))
        assert any("step" in f.message for f in report.findings if f.code == "precision-limited")


# ---------------------------------------------------------------------- 9, 10: the contract of detectable
A = np.random.default_rng(9).uniform(0.5, 2, 8)
TH0 = np.random.default_rng(10).standard_normal(8)


def _sines(t):
    return np.sum(np.sin(t) * A), np.cos(t) * A


@pytest.mark.parametrize("method, mode", [
    ("forward", "full"), ("central", "full"), ("richardson", "full"), ("complex-step", "full"),
    ("forward", "directional"), ("central", "directional"), ("richardson", "directional"),
])
def test_an_error_of_ten_times_detectable_fails(method, mode):
    det = check_function(_sines, TH0, method, mode=mode, diagnose=False).detectable
    for j in range(TH0.size):
        for k in (10.0, -10.0):
            def planted(t, j=j, k=k):
                c, g = _sines(t)
                g = g.copy()
                g[j] += k * det[j]
                return c, g

            report = check_function(planted, TH0, method, mode=mode, diagnose=False)
            assert _state(report) == "FAILED", (j, k, str(report))


def test_float32_forward_tolerances_are_within_20_times_the_true_error():
    from layerkit.testing import plant_gradient_error

    for seed in range(4):
        net = Network.from_sizes([20, 15, 5], seed=seed, dtype=np.float32)
        rng = np.random.default_rng(seed)
        X, y = rng.standard_normal((5, 20)).astype(np.float32), rng.integers(0, 5, 5)
        report = check_network(net, X, y, 1.0, "forward", mode="full")
        exact = Network.from_sizes([20, 15, 5], seed=seed)
        exact.params[...] = net.params.astype(np.float64)
        g = exact.cost_and_gradient(X.astype(np.float64), y, 1.0)[1]
        assert report.passed
        assert np.max(report.tolerance) <= 20 * np.max(np.abs(report.numerical - g))
        j = int(np.argmax(np.abs(g)))
        assert not check_network(plant_gradient_error(net, j, 2e-3 * abs(g[j])), X, y, 1.0, "forward").passed


# ---------------------------------------------------------------------- 11, 12: robustness
def test_a_taylor_of_few_terms_is_never_called():
    class Taylor4(Tanh):
        def taylor(self, x, y, K):
            raise AssertionError("the check read the layer's own taylor")

    rng = np.random.default_rng(1)
    net = Network([Dense(4, 6), Taylor4(), Dense(6, 3), Sigmoid()])
    net.init_random(1)
    X, y = rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    for method in ("richardson", "central", "forward"):
        assert check_network(net, X, y, 1.0, method).passed


class Streams(PlainTanh):
    """A layer that draws from every kind of stream a user may hold, at every forward."""

    def __init__(self):
        self.gen = np.random.default_rng(0)
        self.rs = np.random.RandomState(0)
        self.py = random.Random(0)
        self.count = itertools.count()
        self.pool = {"gen": np.random.default_rng(1), "count": itertools.count(5)}

    def forward(self, x):
        self.gen.random()
        self.rs.rand()
        self.py.random()
        next(self.count)
        self.pool["gen"].random()
        next(self.pool["count"])
        np.random.rand()
        random.random()
        return super().forward(x)


def _streams(layer):
    return (layer.gen.bit_generator.state, repr(layer.rs.get_state()), layer.py.getstate(), repr(layer.count),
            layer.pool["gen"].bit_generator.state, repr(layer.pool["count"]), repr(np.random.get_state()),
            random.getstate())


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_check_leaves_every_random_stream_where_it_was(mode):
    layer = Streams()
    net = Network([Dense(3, 4), layer, Dense(4, 2), Sigmoid()])
    net.init_random(0)
    before = _streams(layer)
    check_network(net, np.ones((5, 3)), np.array([0, 1, 0, 1, 1]), 0.0, mode=mode)
    assert _streams(layer) == before


# ---------------------------------------------------------------------- 13: the CLI
def test_the_cli_refuses_what_it_cannot_run():
    from typer.testing import CliRunner

    from layerkit.cli.app import app

    runner = CliRunner()
    for args, fragment in ((["check", "--layers", ""], "--layers"), (["check", "--step", "1e300"], "step")):
        result = runner.invoke(app, args)
        assert result.exit_code == 2 and fragment in result.stderr, (args, result.stderr)


# ---------------------------------------------------------------------- a hostile user's second round
def _abs_square(x):
    return float(np.sum(np.abs(x)) + np.sum(x ** 2)), np.sign(x) + 2 * x


def _abs_square_wrong(x):
    J, g = _abs_square(x)
    g = g.copy()
    g[0] += 0.3  # entry 0 sits at 0.3, far from its kink
    return J, g


KINKED_POINTS = [np.array([0.3, 7.468e-02, -1.322e-05]),
                 np.array([0.3, -2.361e-06, 4.569e-05, -3.263e-07, -5.069e-08, -1.863e-08]),
                 # entries within 1e-6 of their kinks: the truncation model's length scale is as short, and a
                 # directional pass rested on the model's bound (a fifth of the derivative) until measured
                 np.array([0.3, 9.163e-06, 8.970e-04, 1.324e-03, -9.107e-07]),
                 np.array([0.3, -7.966e-06, -8.515e-07, 2.198e-05, 5.929e-03, 2.325e-05, 7.870e-02])]


@pytest.mark.parametrize("method", ["forward", "central", "richardson"])
def test_a_kink_near_the_point_is_not_measured_as_noise(method):
    """The noise tables cross kinks 1e-5 from the point: read as noise, they inflated steps and tolerances
    (a false FAIL in full mode, a PASS of a gradient wrong by 19% in directional mode)."""
    x0 = KINKED_POINTS[0]
    assert check_function(_abs_square, x0, method, mode="full").passed
    assert check_function(_abs_square, x0, method, mode="full").context["noise"]["level"] < 1e-15
    for x in KINKED_POINTS:
        assert not check_function(_abs_square_wrong, x, method, mode="directional").passed, (method, x)


def test_a_user_relu_closer_to_its_kink_than_the_rounding_resolves_is_not_accused():
    class MaxUnit(Elementwise):  # no declared kinks
        def fn(self, x):
            return np.maximum(x, 0)

        def derivative(self, x, y):
            return (x > 0).astype(x.dtype)

    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((500, 4)), rng.integers(0, 3, 500)
    net = Network([Dense(4, 12), MaxUnit(), Dense(12, 3), Sigmoid()])
    net.init_random(seed=1)
    T = net.layers[0].Theta
    for unit, example in [(0, 5), (3, 9)]:  # pre-activations 1e-9 above the kink
        w = T[unit, 1:]
        X[example] = w / (w @ w) * (1e-9 - T[unit, 0])
    report = check_network(net, X, y, 0.0, "richardson", mode="full")
    assert report.passed, str(report)


def test_streams_held_by_classes_modules_and_closures_are_put_back():
    class Noisy:
        rng, legacy, py = np.random.default_rng(0), np.random.RandomState(0), random.Random(0)
        param_shapes, params, grads = {}, {}, {}

        def bind(self, params, grads):
            pass

        def forward(self, x):
            self.rng.random(), self.legacy.rand(), self.py.random()
            return x

        def backward(self, dy):
            return dy

    local = np.random.default_rng(5)

    def fun(x):
        np.random.rand(), random.random(), local.random()
        return float(x @ x), 2 * x

    def states():
        return (str(Noisy.rng.bit_generator.state), str(Noisy.legacy.get_state()), Noisy.py.getstate(),
                str(np.random.get_state()), random.getstate(), str(local.bit_generator.state))

    before = states()
    check_function(fun, np.ones(3))
    layerkit.check_layer(Noisy(), np.ones((3, 2)))
    net = Network([Dense(2, 3), Noisy(), Dense(3, 2), Sigmoid()])
    check_network(net, np.ones((4, 2)), np.array([0, 1, 0, 1]), 0.0)
    assert states() == before


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_an_absurd_fixed_step_is_refused_in_every_mode(mode):
    net = Network.from_sizes([4, 6, 3], seed=0)
    X, y = np.random.default_rng(0).standard_normal((40, 4)), np.arange(40) % 3
    for method in ("forward", "central", "richardson"):
        with pytest.raises(InputError, match="step"):
            check_network(net, X, y, 1.0, method, mode=mode, step=1e300)
        with pytest.raises(InputError, match="step"):
            check_function(lambda x: (float(x @ x), 2 * x), np.ones(4), method, mode=mode, step=1e300)


def test_a_stateful_layer_fails_and_is_not_said_to_sit_on_a_kink():
    class Running:  # a running mean updated at every forward
        param_shapes, params, grads = {}, {}, {}

        def __init__(self):
            self.mu = np.zeros(12)

        def bind(self, params, grads):
            pass

        def forward(self, x):
            self.mu = 0.9 * self.mu + 0.1 * x.mean(0)
            self._y = np.tanh(x - self.mu)
            return self._y

        def backward(self, dy):
            return dy * (1 - self._y ** 2)

    rng = np.random.default_rng(0)
    net = Network([Dense(4, 12), Running(), Dense(12, 3), Sigmoid()])
    net.init_random(seed=1)
    report = check_network(net, rng.standard_normal((400, 4)), rng.integers(0, 3, 400), 0.0)
    assert _state(report) == "FAILED"
    assert "nondeterministic-cost" in report.codes() and "nonsmooth" not in report.codes()


def test_a_report_on_a_non_function_says_so_and_calls_no_block_correct():
    rng = np.random.default_rng(9)

    def noisy(x):  # an unseeded dropout: not a function of x
        mask = rng.random(x.size) < 0.5
        return float(np.sum((x * mask) ** 2)), 2 * x * mask

    report = check_function(noisy, np.ones(6))
    assert _state(report) == "FAILED"
    assert "mismatch in no block" not in report.verdict and "correct: every block" not in report.blocks_verdict


def test_a_per_column_offset_is_not_a_dropped_example():
    import layer_pairs as lf

    x, g, b = rng_pairs = (np.random.default_rng(5).standard_normal((8, 3)), np.ones(3) * 1.5, np.zeros(3))
    del rng_pairs
    report = layerkit.check_backward(lf.batchnorm_forward, _no_mean_term, {"x": x, "gamma": g, "beta": b})
    assert not report.passed and "dropped-example" not in report.codes(), str(report)


def _no_mean_term(dout, cache):
    import layer_pairs as lf

    xhat, gamma, var, eps = cache
    grads = lf.batchnorm_backward(dout, cache)
    m = dout.shape[0]
    dxhat = dout * gamma
    grads["x"] = (m * dxhat - xhat * (dxhat * xhat).sum(0)) / (m * np.sqrt(var + eps))  # "- dxhat.sum(0)" missing
    return grads


@pytest.mark.parametrize("where", ["every complex input", "wide complex inputs, upper half plane"])
def test_an_fn_that_is_another_function_on_complex_input_stands_behind_no_reference(where):
    """``fn`` is ``tanh`` on real input, and ``tanh((1 + 1e-8) z)`` on complex input (everywhere, or only
    on arrays of more than one column above the real axis, which a one-column sample sees as mirrored):
    Taylor coefficients read off its complex values are ``1e-8`` off what ``forward`` computes, which the
    comparison at ``tau = 1e-3`` allows and a check of this size resolves.  They are compared with
    ``forward`` at a finite difference's scale too, so a derivative that matches them FAILS and the right one
    PASSES, as on the exact path."""
    lie = 1e-8

    def make(right):
        class Lying(layerkit.Elementwise):
            def fn(self, z):
                if not np.iscomplexobj(z):
                    return np.tanh(z)
                cond = np.ones(z.shape, bool) if where.startswith("every") else \
                    np.full(z.shape, z.shape[1] > 1) & (z.imag >= 0)
                return np.where(cond, np.tanh((1 + lie) * z), np.tanh(z))

            def derivative(self, x, y):
                return 1 - np.tanh(x) ** 2 if right else (1 + lie) * (1 - np.tanh((1 + lie) * x) ** 2)
        return Lying()

    rng = np.random.default_rng(1)
    X, y = rng.standard_normal((400, 3)), rng.integers(0, 2, 400)
    for right in (True, False):
        net = Network([Dense(3, 5), make(right), Dense(5, 2), Sigmoid()])
        net.init_random(np.random.default_rng(2))
        report = check_network(net, X, y, 0.0, "central", mode="full", diagnose=False)
        assert report.passed == right and (right or not report.inconclusive), str(report)


@pytest.mark.parametrize("d", [0.03, 0.005])
def test_a_float32_fn_that_misreads_only_its_saturated_units_on_complex_input_is_not_believed(d):
    """``fn`` is ``tanh`` on real input and ``tanh + d tanh^21 / 21`` on complex input: its derived first
    coefficient is off by a relative ``d tanh^20``, on saturated units alone.  At ``d = 0.03`` a comparison at
    a float32 finite difference's scale sees it on single examples; at ``d = 0.005`` only summed over a unit's
    1000 examples, the way a gradient sums them.  A derivative matching the misreading FAILS, with the series
    refused; the truth is the float64 backprop of honest tanh."""
    class Misread(Elementwise):
        def fn(self, x):
            if np.iscomplexobj(x):
                t = np.tanh(x)
                return t + d * t ** 21 / 21
            return np.tanh(x)

        def derivative(self, x, y):
            t = np.tanh(x.astype(np.float64))
            return ((1 - t ** 2) * (1 + d * t ** 20)).astype(x.dtype)

    net = Network([Dense(20, 16, dtype=np.float32), Misread(), Dense(16, 5, dtype=np.float32), Sigmoid()],
                  dtype=np.float32)
    net.init_random(seed=0)
    net.layers[0].params["Theta"][:4, 0] += 3.0  # four hidden units pushed towards saturation
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((1000, 20)).astype(np.float32), rng.integers(0, 5, 1000)
    report = check_network(net, X, y, 0.0, "central", mode="full", diagnose=False)
    twin = Network([Dense(20, 16), Tanh(), Dense(16, 5), Sigmoid()])
    twin.set_params(net.params.astype(np.float64))
    truth = twin.cost_and_gradient(X.astype(np.float64), y, 0.0)[1]
    wrong = np.abs(net.cost_and_gradient(X, y, 0.0)[1] - truth) > report.tolerance
    assert wrong.any()  # the misreading matters at this check's resolution
    assert not report.passed and not report.inconclusive, str(report)
    assert any("does not agree with its forward" in n for n in report.notes), report.notes
    assert np.all(np.abs(report.numerical - truth) <= report.tolerance)
