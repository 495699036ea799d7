"""layerkit.testing: one-line assertions and planted errors."""

import numpy as np
import pytest

import layerkit
from layerkit.testing import (
    LayerContract,
    assert_function_gradients,
    assert_layer_gradients,
    assert_network_gradients,
    plant_gradient_error,
)


def test_assertions_pass_and_return_the_report(debug_problem):
    net, X, y = debug_problem
    assert assert_network_gradients(net, X, y, 3.0).passed
    assert assert_layer_gradients(layerkit.Dense(3, 2), np.ones((2, 3))).passed
    assert assert_function_gradients(lambda x: (float(x @ x), 2 * x), np.arange(3.0)).passed


def test_a_failed_assertion_shows_the_report(debug_problem):
    net, X, y = debug_problem
    bad = plant_gradient_error(net, 25, rel=1e-3)
    with pytest.raises(AssertionError) as info:
        assert_network_gradients(bad, X, y, 3.0)
    text = str(info.value)
    assert "FAILED" in text and "Theta2[0, 5]" in text and "localized [Theta2]" in text


def test_planted_error_touches_exactly_one_entry(debug_problem):
    net, X, y = debug_problem
    before = net.params.copy()
    bad = plant_gradient_error(net, 7, rel=1e-2)
    g, gb = net.cost_and_gradient(X, y, 1.0)[1], bad.cost_and_gradient(X, y, 1.0)[1]
    diff = np.flatnonzero(g != gb)
    assert diff.tolist() == [7]
    assert net.params.tobytes() == before.tobytes()
    with pytest.raises(layerkit.InputError, match="index"):
        plant_gradient_error(net, 38)


class _FreshScale:
    """A user layer as its constructor leaves it: parameters declared, nothing bound yet."""

    param_shapes = {"s": (4,)}

    def __init__(self, wrong=1.0):
        self.params, self.grads, self.wrong = {}, {}, wrong

    def bind(self, params, grads):
        self.params, self.grads = params, grads

    def forward(self, x):
        self._x = x
        return x * self.params["s"]

    def backward(self, dy):
        if not hasattr(self, "_x"):
            raise RuntimeError("backward before forward")
        self.grads["s"][...] = (dy * self._x).sum(0) * self.wrong
        return dy * self.params["s"]


def test_planted_error_reaches_layers_whose_backward_writes_their_gradients_itself():
    from layerkit import BatchNorm, Conv2D, Dense, Flatten, Network, SoftmaxCrossEntropy, Tanh

    net = Network([Conv2D(1, 2, 3, padding=1), BatchNorm(2), Tanh(), Conv2D(2, 2, 3), Flatten(), Dense(72, 3)],
                  loss=SoftmaxCrossEntropy())
    net.init_random(0)
    X, y = np.random.default_rng(0).standard_normal((6, 1, 8, 8)), np.arange(6) % 3
    g = net.cost_and_gradient(X, y, 0.0)[1]
    for block in net.layout.blocks:  # the first layer's blocks go through backward_params, the others backward
        j = block.start + int(np.argmax(np.abs(g[block.slice])))
        planted = plant_gradient_error(net, j, 0.5).cost_and_gradient(X, y, 0.0)[1]
        assert np.flatnonzero(planted != g).tolist() == [j], block.name
        assert np.isclose(planted[j], 1.5 * g[j])


def test_check_layer_binds_a_fresh_layer_for_the_check_and_leaves_it_unbound():
    x = np.random.default_rng(0).standard_normal((5, 4))
    good, bad = _FreshScale(), _FreshScale(wrong=1.01)
    assert layerkit.check_layer(good, x).passed
    report = layerkit.check_layer(bad, x)
    assert not report.passed and report.failed_blocks == ["s"]
    assert bad.params == {} and bad.grads == {} and "_x" not in vars(bad)


class TestFreshLayerContract(LayerContract):
    def make_layer(self, dtype):
        return _FreshScale()

    def make_input(self, dtype):
        return np.random.default_rng(1).standard_normal((5, 4)).astype(dtype)
