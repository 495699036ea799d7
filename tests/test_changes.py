"""Taylor-series arithmetic of :mod:`layerkit.fast.changes` against closed forms."""

import numpy as np
import pytest
from numpy.polynomial import polynomial as poly

from layerkit.fast.changes import compose_series, loss_series, sigmoid_series

Z = np.array([-40.0, -3.0, -0.4, 0.0, 0.7, 2.0, 35.0])


def _sig(z):
    return 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(z))


def _derivatives(z):
    """sigma', sigma'', sigma''', sigma'''' in closed form (products with s (1 - s), no cancellation)."""
    s, sc = _sig(z)
    v = s * sc
    return [v, v * (sc - s), v * (1 - 6 * v), v * (sc - s) * (1 - 12 * v)]


def test_sigmoid_series_of_tau_is_the_taylor_expansion():
    s, sc = _sig(Z)
    Y = sigmoid_series(s, sc, None, 4)
    expected = [d / np.prod(np.arange(1, k + 2)) for k, d in enumerate(_derivatives(Z))]
    np.testing.assert_allclose(Y, expected, rtol=1e-13, atol=0)


def test_sigmoid_series_composes_with_a_polynomial_change():
    # delta = a tau + b tau^2 + c tau^3: Y1 = s1 a, Y2 = s1 b + s2 a^2, Y3 = s1 c + 2 s2 a b + s3 a^3
    s, sc = _sig(Z)
    d1, d2, d3, _ = _derivatives(Z)
    s1, s2, s3 = d1, d2 / 2, d3 / 6
    a, b, c = 0.7, -1.3, 0.4
    D = np.array([np.full_like(Z, a), np.full_like(Z, b), np.full_like(Z, c)])
    Y = sigmoid_series(s, sc, D)
    np.testing.assert_allclose(Y[0], s1 * a, rtol=1e-14)
    np.testing.assert_allclose(Y[1], s1 * b + s2 * a**2, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(Y[2], s1 * c + 2 * s2 * a * b + s3 * a**3, rtol=1e-12, atol=1e-300)


def test_series_keep_relative_accuracy_when_saturated():
    s, sc = _sig(np.array([-40.0, 40.0]))
    Y = sigmoid_series(s, sc, None, 3)
    assert np.all(Y[0] > 0) and np.all(np.abs(Y[0] - np.exp(-40.0)) <= 1e-15 * np.exp(-40.0))


@pytest.mark.parametrize("y", [0.0, 1.0, 0.3])
def test_loss_series_is_the_expansion_of_the_cross_entropy(y):
    s, sc = _sig(Z)
    d1, d2, d3, _ = _derivatives(Z)
    L = loss_series(s, sc, np.full_like(Z, y), None, 4)
    # l' = s - y, l^(n) = sigma^(n-1)
    np.testing.assert_allclose(L[0], s - y, rtol=1e-12, atol=1e-16)
    np.testing.assert_allclose(L[1:], [d1 / 2, d2 / 6, d3 / 24], rtol=1e-12, atol=0)


def test_loss_series_matches_a_direct_change_at_a_small_step():
    s, sc = _sig(Z)
    y = np.array([0, 1, 0, 1, 1, 0, 1.0])
    D = np.array([np.full_like(Z, 0.9), np.full_like(Z, -0.2), np.full_like(Z, 0.1), np.zeros_like(Z)])
    L = loss_series(s, sc, y, D)
    tau = 1e-3
    d = 0.9 * tau - 0.2 * tau**2 + 0.1 * tau**3
    exact = np.log1p(s * np.expm1(d)) - y * d
    series = sum(L[k] * tau ** (k + 1) for k in range(4))
    assert np.all(np.abs(series - exact) <= 1e-15 * np.abs(exact) + 1e-300 + 2 * tau**5)


def test_compose_series_against_polynomial_composition():
    rng = np.random.default_rng(0)
    K = 5
    phi, u = rng.standard_normal(K), rng.standard_normal(K)
    got = compose_series(phi[:, None].copy(), u[:, None].copy())[:, 0]
    upoly = np.concatenate([[0.0], u])  # u(tau) with no constant term
    total = np.zeros(1)
    for n in range(1, K + 1):
        total = poly.polyadd(total, phi[n - 1] * poly.polypow(upoly, n))
    np.testing.assert_allclose(got, total[1:K + 1], rtol=1e-12)


def test_param_inputs_is_ones_then_x_without_building_it():
    from layerkit.fast.changes import ParamInputs

    x = np.arange(12.0).reshape(4, 3) - 5
    F = ParamInputs(x, ones=1)
    full = np.hstack([np.ones((4, 1)), x])
    assert F.shape == full.shape
    for c0, c1 in [(0, 1), (0, 3), (1, 4), (2, 3), (0, 4)]:
        np.testing.assert_array_equal(F.columns(c0, c1), full[:, c0:c1])
    np.testing.assert_array_equal(F.abs_max(), np.max(np.abs(full), axis=0))
    np.testing.assert_array_equal(F.sum_squares(), np.sum(full**2, axis=0))
    assert F.columns(0, 2, np.float32).dtype == np.float32
