"""The engine's rules (layerkit.fast.rules): layerkit's own for its own layers, fn-derived for an Elementwise
layer, the batched forward path for any other layer without parameters."""

import ast
from pathlib import Path

import numpy as np
import pytest
from helpers import PlainTanh

from layerkit import Dense, Elementwise, Network, Sigmoid, Tanh, check_network, rule_for
from layerkit.fast.fn_rule import FnRule
from layerkit.fast.layer_rules import DenseRule, SigmoidRule

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(5)
X, Y = RNG.standard_normal((30, 6)), RNG.integers(0, 3, 30)


UserTanh = PlainTanh  # a layer written without layerkit's help: no rule, no base class


def test_layers_import_nothing_from_the_engine():
    for name in ("layers.py", "elementwise.py", "network.py", "losses.py"):
        tree = ast.parse((ROOT / "layerkit" / "nn" / name).read_text())
        modules = [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
        assert not any("fast" in m or "check" in m for m in modules), (name, modules)


def test_rules_come_from_the_registry_and_follow_subclasses_only_as_far_as_their_math():
    assert isinstance(rule_for(Dense(2, 3)).propagate.__self__, DenseRule) and rule_for(Dense(2, 3)).trusted
    assert isinstance(rule_for(Sigmoid()).series.__self__, SigmoidRule)
    assert rule_for(Tanh()).has("propagate", "series", "series_bound") and rule_for(Tanh()).trusted

    class Steeper(Sigmoid):  # new math: Sigmoid's rule must not describe it
        def fn(self, x):
            return super().fn(2 * x)

        def derivative(self, x, y):
            return 2 * super().derivative(2 * x, y)

    class Plain(Sigmoid):  # same math, another class: the rule applies but is confirmed, not trusted
        pass

    steep = rule_for(Steeper())  # its own fn is all the engine reads of it
    assert isinstance(steep.propagate.__self__, FnRule) and not steep.trusted
    plain = rule_for(Plain())
    assert isinstance(plain.propagate.__self__, SigmoidRule) and plain.known and not plain.trusted
    patched = Sigmoid()
    patched.forward = lambda x: x
    assert rule_for(patched).source == "forward" and not rule_for(patched).known
    assert rule_for(UserTanh()).source == "forward" and rule_for(UserTanh()).cancels


def test_rules_are_layerkits_own_and_not_a_public_registry():
    import layerkit

    assert not hasattr(layerkit, "register_rule") and not hasattr(layerkit, "unregister_rule")

    class Cube(Elementwise):
        def fn(self, x):
            return x**3

        def derivative(self, x, y):
            return 3 * x**2

        def propagate(self, x, y, change):  # a user's member named like a rule is not a rule
            raise AssertionError("the engine used a member of the user's layer")

    rule = rule_for(Cube())
    assert isinstance(rule.propagate.__self__, FnRule) and rule.known and not rule.trusted
    net = Network([Dense(6, 4), Cube(), Dense(4, 3), Sigmoid()])
    net.init_random(0)
    report = check_network(net, X, Y, 1.0)
    assert report.passed and report.evaluator == "engine"


def test_an_elementwise_helper_layer_in_a_few_lines_is_checked_exactly():
    from custom_layer import Softplus

    assert rule_for(Softplus()).has("series", "series_bound")
    net = Network([Dense(6, 5), Softplus(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    assert check_network(net, X, Y, 1.0).passed
    from layerkit.testing import plant_gradient_error

    assert not check_network(plant_gradient_error(net, 7, 1e-5), X, Y, 1.0).passed


def test_a_layer_without_a_rule_takes_the_batched_forward_path_faithfully():
    net = Network([Dense(6, 5), UserTanh(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    report = check_network(net, X, Y, 1.0)
    assert report.passed and report.evaluator == "engine"
    from layerkit.testing import plant_gradient_error

    for j in (2, 17, 33):
        assert not check_network(plant_gradient_error(net, j, 1e-6), X, Y, 1.0).passed


def test_the_batched_path_does_not_pack_a_layer_that_treats_columns_differently():
    class PerUnit(UserTanh):
        def forward(self, x):
            self._x = x
            self._y = np.tanh(x * np.arange(1, x.shape[1] + 1))
            return self._y

        def backward(self, dy):
            return dy * (1 - self._y**2) * np.arange(1, self._x.shape[1] + 1)

    net = Network([Dense(6, 5), PerUnit(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    assert check_network(net, X, Y, 1.0).passed
    from layerkit.fast.forward_rule import ForwardRule

    x = net.activations(X)[1]
    assert not ForwardRule(PerUnit()).uniform(x, PerUnit().forward(x))


def _series_ok(net, k):
    from layerkit.fast.confirm import Rules

    acts = net.activations(X)
    return Rules(list(net.body), acts, net.bindings, net.params, net.layout).ok(k, "series")


class _TwoFaced(UserTanh):
    """A forward that computes something else for complex input than for real input."""

    def forward(self, x):
        self._y = np.tanh(x) if not np.iscomplexobj(x) else np.tanh(1.05 * x)
        return self._y


class _RealOnly(UserTanh):
    """A forward that drops the imaginary part."""

    def forward(self, x):
        self._y = np.tanh(np.real(x))
        return self._y


def test_a_plain_elementwise_layer_gets_taylor_tables_derived_from_its_own_forward():
    net = Network([Dense(6, 5), UserTanh(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    assert _series_ok(net, 1)  # compared with its forward on every example before use
    saturated = net.clone()
    saturated.params[...] *= 10  # units whose change is far below their value's rounding still get a series
    assert _series_ok(saturated, 1)
    report = check_network(net, X, Y, 1.0, mode="full")
    reference = check_network(net, X, Y, 1.0, mode="full", engine="generic")
    assert report.passed and report.evaluator == "engine"
    np.testing.assert_allclose(report.numerical, reference.numerical, rtol=1e-7, atol=1e-10)
    from layerkit.testing import plant_gradient_error

    for j in (2, 17, 33):
        assert not check_network(plant_gradient_error(net, j, 1e-6), X, Y, 1.0).passed


@pytest.mark.parametrize("layer", [_TwoFaced, _RealOnly])
def test_a_forward_that_is_not_the_same_function_on_complex_input_gets_no_series(layer):
    net = Network([Dense(6, 5), layer(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    assert not _series_ok(net, 1)
    report = check_network(net, X, Y, 1.0, mode="full")
    assert report.passed, str(report)
    from layerkit.testing import plant_gradient_error

    assert not check_network(plant_gradient_error(net, 17, 1e-6), X, Y, 1.0).passed


def test_a_tied_layer_without_parameters_is_re_run_with_every_change():
    class TiedDecoder(UserTanh):
        def __init__(self, other):
            self.other = other

        def forward(self, x):
            return x @ self.other.Theta[:, 1:]

        def backward(self, dy):  # forgets the tie's gradient: the check must see the tie
            return dy @ self.other.Theta[:, 1:].T

    enc = Dense(6, 4)
    net = Network([enc, Sigmoid(), TiedDecoder(enc), Dense(6, 3), Sigmoid()])
    net.init_random(0)
    report = check_network(net, X, Y, 0.0)
    assert not report.passed
    assert any("reads another layer's" in n for n in report.notes)


@pytest.mark.parametrize("fn", [np.tanh, lambda x: np.log1p(np.exp(x)), lambda x: x / (1 + np.abs(x))])
def test_a_circle_a_sample_of_entries_rules_out_is_never_tried_on_every_entry(fn, monkeypatch):
    """``FnRule.coefficients`` skips a circle that fails around a sample of the entries (the smallest, the
    largest, some at random): the coefficients, bound and radius are those of trying every circle on every
    entry (to the rounding of the transform: the sampled path evaluates a mirrored fn on half of each circle),
    and the full evaluation runs at most once."""
    import layerkit.fast.fn_rule as fn_rule

    class Layer(Elementwise):
        def fn(self, x):
            return fn(x)

    x = np.concatenate([np.linspace(-6, 6, 403), [0.0, 1e-9, -30.0]]).reshape(-1, 7)
    y = fn(x)

    def coefficients(sampled):
        rule = FnRule(Layer())
        full = []
        orig = rule._on_circle

        def on_circle(a, b, r, mirrored=False, points=fn_rule.POINTS[-1]):
            if a.shape == x.shape:
                full.append((points, r))
            return orig(a, b, r, mirrored, points)

        monkeypatch.setattr(rule, "_on_circle", on_circle)
        if not sampled:
            monkeypatch.setattr(rule, "_sample_clear", lambda *a: (True, False))
        try:
            return rule.coefficients(x, y), full
        except fn_rule.Unavailable:
            return None, full

    fast, tried = coefficients(True)
    slow, tried_all = coefficients(False)
    assert len(tried) <= 1 and len(tried_all) >= len(tried)
    if fn is np.tanh:  # on 16 points, only the smallest circle leaves tanh's aliasing below the samples' rounding
        assert tried == [(16, fn_rule.RADII[2])] and tried_all == list(fn_rule.CIRCLES[:3])
    if slow is None:
        assert fast is None and not tried  # not analytic: no circle is tried on every entry
    else:
        _same_coefficients(fast, slow, y)
        assert fast[2] == slow[2]


def _same_coefficients(a, b, y):
    """Two ``(T, L, r)`` of :meth:`FnRule.coefficients` alike but for their DFTs' rounding: ``C_n`` to ``8 eps``
    of the samples (``|f| <= 1 + |y|``), so ``T_n = C_n / r^n`` to that over ``r^n``, and ``L`` relatively."""
    (Ta, La, r), (Tb, Lb, rb) = a, b
    assert r == rb
    eps = np.finfo(np.float64).eps
    scale = 8 * eps * (1 + np.max(np.abs(y))) / r ** np.arange(1, Ta.shape[0] + 1)
    assert np.all(np.abs(Ta - Tb) <= scale.reshape((-1,) + (1,) * (Ta.ndim - 1)))
    np.testing.assert_allclose(La, Lb, rtol=1e-12)


def test_a_mirrored_fn_is_evaluated_on_half_of_each_circle_and_any_other_on_all_of_it(monkeypatch):
    """A ``fn`` with ``fn(conj z) = conj fn(z)`` (every real-analytic numpy function) is evaluated on the upper
    half of each circle, ``N / 2 + 1`` of its ``N`` points, with the coefficients of the whole circle (but for the
    rounding of the transform); one that is not
    mirrored around a sample of the entries gets the whole circle, and the same outcome as before."""
    import layerkit.fast.fn_rule as fn_rule

    monkeypatch.setattr(fn_rule, "CHUNK", 1 << 24)  # one evaluation per circle, to count its points
    points = []

    class Counted(Elementwise):
        def __init__(self, fn):
            super().__init__()
            self.f = fn

        def fn(self, x):
            if np.iscomplexobj(x) and x.size >= 400 * 25:
                points.append(x.size // (400 * 25))
            return self.f(x)

    x = np.random.default_rng(0).standard_normal((400, 25)) * 2
    rule = FnRule(Counted(np.tanh))
    T, L, r = rule.coefficients(x, np.tanh(x))
    assert points == [fn_rule.POINTS[0] // 2 + 1]
    # the same numbers as the whole circle
    full = rule._on_circle(x, np.tanh(x), r, mirrored=False, points=2 * T.shape[0])
    _same_coefficients((T, L, r), full + (r,), np.tanh(x))

    def tilted(z):  # analytic, but on complex input not real on the real axis: not mirrored
        return np.tanh(z) + 1e-6j * z if np.iscomplexobj(z) else np.tanh(z)

    points.clear()
    T2, L2, r2 = FnRule(Counted(tilted)).coefficients(x, np.tanh(x))
    assert points == [fn_rule.POINTS[0]] and r2 == r  # its upper half alone would look like a singularity
    rounding = 16 * np.finfo(np.float64).eps * 2 / r ** np.arange(1, 5)  # the two transforms' (|f| <= 2 here)
    assert np.all(np.abs(T2[:4] - T[:4]) <= rounding[:, None, None])  # the tilt is imaginary: T is the real part

    def lopsided(z):  # tanh, and off the real axis below it something that is not analytic
        out = np.tanh(z)
        return np.where(z.imag < 0, out + 1e-3 * z.imag**2, out) if np.iscomplexobj(z) else out

    points.clear()
    with pytest.raises(fn_rule.Unavailable):
        FnRule(Counted(lopsided)).coefficients(x, np.tanh(x))
    assert all(p in fn_rule.POINTS for p in points)  # whole circles only, if any


def test_a_steep_fn_falls_back_to_a_circle_of_more_points():
    """``tanh(8 x)`` has singularities ``pi / 16`` from the real axis: no circle of 16 points leaves its
    aliasing below the samples' rounding, so its coefficients come from one of 32 points, and they are its
    derivatives."""
    import layerkit.fast.fn_rule as fn_rule

    class Steep(Elementwise):
        def fn(self, x):
            return np.tanh(8 * x)

    x = np.random.default_rng(1).standard_normal((300, 7))
    y = np.tanh(8 * x)
    T, L, r = FnRule(Steep()).coefficients(x, y)
    assert T.shape[0] == fn_rule.POINTS[-1] // 2
    np.testing.assert_allclose(T[0], 8 * (1 - y**2), rtol=0, atol=1e-11)
    np.testing.assert_allclose(T[1], -64 * y * (1 - y**2), rtol=0, atol=1e-8)
