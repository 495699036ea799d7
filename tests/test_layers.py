"""One generic gradient test over layer factories x dtypes x shapes, plus layer-specific behaviour."""

import warnings

import numpy as np
import pytest

import layerkit
from layerkit import Dense, NotForwardedError, Sigmoid
from layerkit.fast.rules import rule_for
from layerkit.testing import assert_layer_gradients

LAYERS = {
    "dense-3-5": lambda dt: Dense(3, 5, seed=1, dtype=dt),
    "dense-1-1": lambda dt: Dense(1, 1, seed=2, dtype=dt),
    "dense-7-2": lambda dt: Dense(7, 2, seed=3, dtype=dt),
    "sigmoid": lambda dt: Sigmoid(),
}
N_IN = {"dense-3-5": 3, "dense-1-1": 1, "dense-7-2": 7, "sigmoid": 4}


@pytest.mark.parametrize("name", sorted(LAYERS))
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("m", [1, 6])
def test_layer_gradients_match_central_differences(name, dtype, m):
    layer = LAYERS[name](dtype)
    x = np.random.default_rng(m).standard_normal((m, N_IN[name])).astype(dtype)
    report = assert_layer_gradients(layer, x, "central")
    assert report.dtype == np.dtype(dtype).name
    assert report.layout.names == ["x"] + list(layer.param_shapes)
    # input and parameter gradients are both compared, as separate blocks
    assert all(b.passed for b in report.blocks)


def test_check_layer_catches_a_wrong_backward():
    class BadSigmoid(Sigmoid):
        def backward(self, dy):
            return super().backward(dy) * 1.01

    report = layerkit.check_layer(BadSigmoid(), np.random.default_rng(0).standard_normal((3, 4)))
    assert not report.passed and report.failed_blocks == ["x"]


@pytest.mark.parametrize("layer", [Dense(3, 2), Sigmoid()])
def test_backward_before_forward_raises_a_clear_error(layer):
    with pytest.raises(NotForwardedError, match="before"):
        layer.backward(np.ones((2, 2)))


def test_dense_theta_layout_bias_in_column_zero():
    layer = Dense(3, 2, seed=0)
    assert layer.Theta.shape == (2, 4)
    x = np.random.default_rng(0).standard_normal((5, 3))
    b, W = layer.Theta[:, 0], layer.Theta[:, 1:]
    np.testing.assert_allclose(layer.forward(x), x @ W.T + b)


def test_dense_refuses_wrong_input_width():
    with pytest.raises(layerkit.InputError, match=r"shape \(m, 3\)"):
        Dense(3, 2).forward(np.ones((4, 2)))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_sigmoid_is_stable_and_keeps_dtype(dtype):
    z = np.array([[-1000.0, -50.0, 0.0, 50.0, 1000.0]], dtype=dtype)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        y = Sigmoid().forward(z)
    assert y.dtype == dtype
    assert np.all(np.isfinite(y))
    assert y[0, 0] == 0.0 and y[0, 2] == 0.5 and y[0, 4] == 1.0


def test_sigmoid_complex_input_for_the_complex_step():
    h = 1e-30
    for z in (-30.0, -1.0, 0.3, 25.0):
        y = Sigmoid().forward(np.array([[z + 1j * h]]))
        e = np.exp(-abs(z))
        np.testing.assert_allclose(y.imag[0, 0] / h, e / (1 + e) ** 2, rtol=1e-14)  # sigmoid', no cancellation


def test_custom_layer_follows_the_protocol():
    from custom_layer import Tanh

    assert isinstance(Tanh(), layerkit.Layer)
    assert_layer_gradients(Tanh(), np.random.default_rng(0).standard_normal((4, 3)))


def test_sigmoid_series_of_a_rank_one_change_equals_the_dense_recurrence():
    from layerkit.fast.changes import SeriesChange, sigmoid_series

    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal((7, 4))
    layer = Sigmoid()
    y = layer.forward(x)
    K, B = 4, 3
    c, v = rng.standard_normal((K, B, 7)), rng.standard_normal((B, 4))
    got = rule_for(layer).series(x, y, SeriesChange(c, v=v)).coeffs
    dense = c[..., None] * v[None, :, None, :]
    want = sigmoid_series(y, 1 / (1 + np.exp(x)), dense)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    assert got.shape == (K, B, 7, 4)
