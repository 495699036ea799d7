import pickle
import warnings

import numpy as np
import pytest
import scipy.optimize
from helpers import reference_cost
from hypothesis import example, given, settings
from hypothesis import strategies as st

import layerkit
from layerkit import Dense, InputError, Network, Sigmoid


def test_cost_of_a_tiny_case_by_hand():
    # 1 input, 1 output, 2 examples: h_i = sigmoid(b + w x_i)
    net = Network([Dense(1, 1), Sigmoid()])
    net.params = np.array([0.5, -1.0])  # b = 0.5, w = -1
    X = np.array([[1.0], [2.0]])
    y = np.array([[1.0], [0.0]])
    h = 1 / (1 + np.exp(-np.array([0.5 - 1.0, 0.5 - 2.0])))
    by_hand = (-np.log(h[0]) - np.log(1 - h[1])) / 2
    assert net.cost(X, y, 0.0) == pytest.approx(by_hand, rel=1e-14)
    # lambda/(2m) * w^2 only: the bias is never regularized
    assert net.cost(X, y, 4.0) == pytest.approx(by_hand + 4.0 / 4 * 1.0, rel=1e-14)


@pytest.mark.parametrize("lam", [0.0, 3.0])
def test_cost_matches_an_independent_implementation(debug_problem, lam):
    net, X, y = debug_problem
    thetas = [net.layers[0].Theta, net.layers[2].Theta]
    assert net.cost(X, y, lam) == pytest.approx(reference_cost(thetas, X, np.eye(3)[y], lam), rel=1e-13)


def test_gradient_regularizes_weights_but_not_bias(debug_problem):
    net, X, y = debug_problem
    _, g0 = net.cost_and_gradient(X, y, 0.0)
    _, g3 = net.cost_and_gradient(X, y, 3.0)
    diff = (g3 - g0).reshape(-1)
    views = net.layout.views(diff)
    for layer, name in ((net.layers[0], "Theta1"), (net.layers[2], "Theta2")):
        np.testing.assert_allclose(views[name][:, 0], 0.0)
        np.testing.assert_allclose(views[name][:, 1:], 3.0 / 5 * layer.Theta[:, 1:], rtol=1e-12)


def test_debug_initialization_is_the_course_one(debug_problem):
    net, X, y = debug_problem
    # debugInitializeWeights(5, 3): reshape(sin(1:20), 5, 4) / 10, filled column by column
    np.testing.assert_allclose(net.layers[0].Theta, np.sin(np.arange(1, 21)).reshape(5, 4, order="F") / 10)
    np.testing.assert_allclose(X, np.sin(np.arange(1, 16)).reshape(5, 3, order="F") / 10)
    np.testing.assert_array_equal(y, [1, 2, 0, 1, 2])  # 1 + mod(1:5, 3), minus one


def test_random_initialization_is_seeded_and_bounded():
    a = Network.from_sizes([400, 25, 10], seed=3)
    b = Network.from_sizes([400, 25, 10], seed=3)
    np.testing.assert_array_equal(a.params, b.params)
    eps1 = np.sqrt(6) / np.sqrt(400 + 25)
    assert np.max(np.abs(a.layers[0].Theta)) <= eps1
    assert np.max(np.abs(a.layers[0].Theta)) > 0.9 * eps1


@pytest.mark.parametrize("scale", [50.0, 1000.0])
def test_saturated_outputs_keep_cost_finite_and_gradient_right(scale):
    rng = np.random.default_rng(0)
    net = Network.from_sizes([4, 6, 3], seed=0)
    net.params = net.params * scale
    X = rng.standard_normal((8, 4))
    y = rng.integers(0, 3, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        J, g = net.cost_and_gradient(X, y, 1.0)
        h = net.predict_proba(X)
    assert np.isfinite(J) and np.all(np.isfinite(g))
    assert np.any((h == 0) | (h == 1))  # truly saturated in floating point
    report = layerkit.check_network(net, X, y, 1.0)
    assert report.passed, str(report)


@pytest.mark.parametrize("y, fragment", [
    (np.array([0, 1, 3, 1, 2]), r"labels in 0..2.*3 at position 2"),
    (np.array([0, 1, -1, 1, 2]), r"-1 at position 2"),
    (np.array([0, 1, 2, 1]), r"5 labels"),
    (np.array([0, 1, 1.5, 1, 2]), r"integer class labels"),
    (np.zeros((5, 4)), r"target matrix of shape \(5, 3\)"),
    (np.full((5, 3), 2.0), r"\[0, 1\]"),
])
def test_bad_labels_raise_specific_errors(debug_problem, y, fragment):
    net, X, _ = debug_problem
    with pytest.raises(ValueError, match=fragment) as info:
        net.cost(X, y)
    assert "y:" in str(info.value)


def test_bad_inputs_raise_specific_errors(debug_problem):
    net, X, y = debug_problem
    bad = X.copy()
    bad[2, 1] = np.nan
    with pytest.raises(InputError, match=r"X: expected finite values, got nan at row 2, column 1"):
        net.cost(bad, y)
    with pytest.raises(InputError, match=r"X: expected 3 features"):
        net.cost(X[:, :2], y)
    with pytest.raises(InputError, match=r"lambda_"):
        net.cost(X, y, -1.0)


def test_one_hot_and_integer_labels_agree(debug_problem):
    net, X, y = debug_problem
    assert net.cost(X, y, 1.0) == net.cost(X, np.eye(3)[y], 1.0)


def test_objective_works_with_scipy_and_leaves_the_network_alone(debug_problem):
    net, X, y = debug_problem
    before = net.params.copy()
    fun = net.objective(X, y, 1.0)
    res = scipy.optimize.minimize(fun, net.params.copy(), jac=True, method="L-BFGS-B", options={"maxiter": 50})
    assert res.fun < net.cost(X, y, 1.0)
    np.testing.assert_array_equal(net.params, before)
    cost, grad = fun(before)
    assert cost == net.cost(X, y, 1.0) and grad.shape == (38,)


def test_fit_lowers_the_cost_and_reports_iterations(debug_problem):
    net, X, y = debug_problem
    start = net.cost(X, y, 0.1)
    result = net.fit(X, y, lambda_=0.1, max_iter=30)
    assert result.cost == pytest.approx(net.cost(X, y, 0.1), rel=1e-10)
    assert result.cost < start and 0 < result.n_iter <= 30
    np.testing.assert_array_equal(net.predict(X), np.argmax(net.predict_proba(X), axis=1))


def test_float32_end_to_end():
    rng = np.random.default_rng(1)
    net = Network.from_sizes([5, 4, 3], dtype=np.float32)
    X = rng.standard_normal((10, 5))
    y = rng.integers(0, 3, 10)
    J, g = net.cost_and_gradient(X, y, 1.0)
    assert net.params.dtype == np.float32 and g.dtype == np.float32 and net.grads.dtype == np.float32
    assert isinstance(J, float)
    cost32 = net.objective(X, y, 1.0)(net.params)[0]
    net64 = Network.from_sizes([5, 4, 3])
    net64.params = net.params.astype(np.float64)
    assert cost32 == pytest.approx(net64.cost(X, y, 1.0), rel=1e-5)
    result = net.fit(X, y, 1.0, max_iter=20)
    assert net.params.dtype == np.float32 and result.cost < J


def test_complex_evaluation_for_the_complex_step(debug_problem):
    net, X, y = debug_problem
    fun = net.objective(X, y, 3.0)
    theta = net.params.astype(complex)
    theta[7] += 1e-30j
    cost, _ = fun(theta)
    _, grad = fun(net.params)
    assert isinstance(cost, complex)
    assert cost.imag / 1e-30 == pytest.approx(grad[7], rel=1e-13)


def test_pickled_network_keeps_its_views(debug_problem):
    net, X, y = debug_problem
    twin = pickle.loads(pickle.dumps(net))
    assert np.shares_memory(twin.layers[0].Theta, twin.params)
    assert twin.cost(X, y, 1.0) == net.cost(X, y, 1.0)


def test_network_refuses_non_layers():
    with pytest.raises(InputError, match=r"layers\[1\]"):
        Network([Dense(2, 2), "relu"])
    with pytest.raises(InputError, match="sizes"):
        Network.from_sizes([3])


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=4), m=st.integers(1, 10),
       dtype=st.sampled_from([np.float64, np.float32]), lam=st.sampled_from([0.0, 1.5]),
       seed=st.integers(0, 2**16))
@example(sizes=[1, 1], m=1, dtype=np.float32, lam=0.0, seed=0)
@example(sizes=[8, 8, 8, 8], m=10, dtype=np.float64, lam=1.5, seed=1)
def test_backprop_matches_finite_differences_on_random_architectures(sizes, m, dtype, lam, seed):
    rng = np.random.default_rng(seed)
    net = Network.from_sizes(sizes, dtype=dtype, seed=seed)
    X = rng.standard_normal((m, sizes[0]))
    y = rng.integers(0, sizes[-1], m)
    report = layerkit.check_network(net, X, y, lam, diagnose=False)
    assert report.passed, str(report)


def test_a_subclass_overriding_backward_is_used_in_the_first_layer(debug_problem):
    net, X, y = debug_problem

    class Doubled(Dense):
        def backward(self, dy):
            dx = super().backward(dy)
            self.dTheta[...] *= 2
            return dx

    twin = Network([Doubled(3, 5), Sigmoid(), Dense(5, 3), Sigmoid()])
    twin.params = net.params
    g, g2 = net.cost_and_gradient(X, y)[1], twin.cost_and_gradient(X, y)[1]
    np.testing.assert_allclose(g2[:20], 2 * g[:20])
    np.testing.assert_array_equal(g2[20:], g[20:])


def test_each_layer_initializes_its_own_parameters():
    class Scale:
        """A layer with one parameter vector and its own start."""

        param_shapes = {"s": (3,)}

        def __init__(self):
            self.params, self.grads = {}, {}

        def bind(self, params, grads):
            self.params, self.grads = dict(params), dict(grads)

        def init_params(self, rng):
            self.params["s"][...] = 1.0 + 0.01 * rng.standard_normal(3)

        def forward(self, x):
            self._x = x
            return x * self.params["s"]

        def backward(self, dy):
            self.grads["s"][...] = np.sum(dy * self._x, axis=0)
            return dy * self.params["s"]

    net = layerkit.Network([layerkit.Dense(4, 3), Scale(), layerkit.Dense(3, 2), layerkit.Sigmoid()])
    net.init_random(7)
    s = net.layers[1].params["s"]
    assert np.all(np.abs(s - 1) < 0.05)  # its own start, not a uniform draw around 0
    eps = np.sqrt(6) / np.sqrt(4 + 3)
    assert np.all(np.abs(net.layers[0].Theta) <= eps) and np.std(net.layers[0].Theta) > eps / 4
    again = layerkit.Network([layerkit.Dense(4, 3), Scale(), layerkit.Dense(3, 2), layerkit.Sigmoid()])
    again.init_random(7)
    assert np.array_equal(again.params, net.params)  # one generator, in the order of the layers


def test_labels_may_come_as_a_column():
    rng = np.random.default_rng(1)
    net = Network.from_sizes([3, 4, 2], seed=0)
    X, y = rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    assert net.cost(X, y.reshape(-1, 1)) == net.cost(X, y)
