"""Strategies: accuracy against exact gradients, golden weights, steps, registry and user strategies."""

import numpy as np
import pytest
from attrs import frozen
from helpers import RNG, XL, YL, quadratic  # noqa: E402
from scipy.optimize import rosen, rosen_der

import layerkit
from layerkit import Central, FiniteDifference, Forward, Richardson, get_method, method_names
from layerkit.check.probes import CoordinateProbe
from layerkit.nn.activations import sigmoid, softplus


def rosenbrock(x):
    return rosen(x), rosen_der(x)


def logistic(w):
    z = XL @ w
    return np.mean(softplus(z) - YL * z) + 0.05 * w @ w, XL.T @ (sigmoid(z) - YL) / len(YL) + 0.1 * w


def debug_net():
    net = layerkit.Network.from_sizes([3, 5, 3], init="debug")
    X, y = layerkit.debug_data(5, 3)
    return net.objective(X, y, 3.0), net.params.copy()


PROBLEMS = {
    "quadratic": (quadratic, RNG.standard_normal(6)),
    "rosenbrock-10d": (rosenbrock, RNG.uniform(-1.5, 1.5, 10)),
    "logistic": (logistic, RNG.standard_normal(5)),
    "debug-net": debug_net(),
}
BOUNDS = {"forward": 1e-6, "central": 1e-9, "richardson": 1e-11, "complex-step": 1e-14}


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("method", sorted(BOUNDS))
def test_accuracy_against_exact_gradients(problem, method):
    fun, x0 = PROBLEMS[problem]
    exact = fun(x0)[1]
    report = layerkit.check_function(fun, x0, method, diagnose=False)
    rel = np.linalg.norm(report.numerical - exact) / np.linalg.norm(exact)
    assert rel <= BOUNDS[method], f"{method} on {problem}: {rel:.2e}"
    assert report.passed


def test_richardson_golden_weights_on_central():
    # one level on central, ratio 2: R = -1/3 D(h) + 4/3 D(h/2)
    f = np.exp
    x = np.array([0.7])
    probe = CoordinateProbe(lambda t: f(t[0]), x, f(x[0]))
    h = np.array([0.1])
    d_h = Central().estimate(probe, probe.snap(h)).values
    d_h2 = Central().estimate(probe, probe.snap(h / 2)).values
    est = Richardson(step=0.1).estimate(probe)
    np.testing.assert_allclose(est.values, -1 / 3 * d_h + 4 / 3 * d_h2, rtol=1e-15)
    # the error estimate |R - D(h/2)| bounds the true error of R (conservatively: it is D(h/2)'s error)
    true_err = abs(est.values[0] - np.exp(0.7))
    assert true_err < est.error[0] / 100
    assert est.error[0] == pytest.approx(abs(d_h2[0] - np.exp(0.7)), rel=1e-2)


def test_richardson_two_levels_is_more_accurate_at_a_large_step():
    x = np.array([0.3])
    probe = CoordinateProbe(lambda t: np.sin(t[0]), x, np.sin(0.3))
    e1 = abs(Richardson(step=0.2, levels=1).estimate(probe).values[0] - np.cos(0.3))
    e2 = abs(Richardson(step=0.2, levels=2).estimate(probe).values[0] - np.cos(0.3))
    assert e2 < e1 / 100


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_auto_steps_are_scaled_and_snapped(dtype):
    x = np.array([0.0, 0.3, 7.0, -1234.5], dtype=dtype)
    probe = CoordinateProbe(lambda t: 0.0, x, 0.0)
    h = Central().steps(probe)
    eps = np.finfo(dtype).eps
    base = eps ** (1 / 3)
    np.testing.assert_allclose(h, base * np.maximum(1, np.abs(x)), rtol=1e-2)
    assert h.dtype == dtype
    np.testing.assert_array_equal((x + h) - x, h)  # x + h is exact


def test_base_steps_follow_the_error_model():
    eps = np.finfo(np.float64).eps
    assert Forward().base_step(np.float64) == pytest.approx(eps ** 0.5)
    assert Central().base_step(np.float64) == pytest.approx(eps ** (1 / 3))
    assert Richardson().base_step(np.float64) == pytest.approx(eps ** 0.2)
    assert Central().base_step(np.float32) == pytest.approx(np.finfo(np.float32).eps ** (1 / 3))


def test_registry_names_and_unknown_method():
    assert method_names()[:4] == ["forward", "central", "richardson", "complex-step"]
    assert isinstance(get_method("richardson"), Richardson)
    assert get_method("central", step=1e-4).step == 1e-4
    with pytest.raises(layerkit.UnknownMethodError, match=r"method: expected one of 'forward'.*got 'centre'"):
        layerkit.check_function(quadratic, np.ones(6), "centre")


def test_bad_steps_are_refused():
    for bad in (0.0, -1e-4, "small", float("nan")):
        with pytest.raises(layerkit.InputError, match="step"):
            Central(step=bad)


def test_richardson_wraps_any_base():
    r = Richardson(Forward())
    assert r.order == 2
    fun, x0 = PROBLEMS["logistic"]
    report = layerkit.check_function(fun, x0, r, diagnose=False)
    assert report.passed and report.method == "richardson"


def test_user_strategy_in_a_few_lines():
    @frozen
    class FivePoint(FiniteDifference):
        name = "five-point"
        offsets = (-2.0, -1.0, 1.0, 2.0)
        weights = (1 / 12, -2 / 3, 2 / 3, -1 / 12)
        order = 4
        order_step = 2

    fun, x0 = PROBLEMS["rosenbrock-10d"]
    report = layerkit.check_function(fun, x0, FivePoint(), diagnose=False)
    exact = rosen_der(x0)
    assert report.method == "five-point" and report.passed
    assert np.linalg.norm(report.numerical - exact) / np.linalg.norm(exact) < 1e-11
    layerkit.register_method("five-point", FivePoint)
    try:
        assert layerkit.check_function(fun, x0, "five-point", diagnose=False).passed
    finally:
        from layerkit.check import methods

        methods._REGISTRY.pop("five-point")


def test_complex_step_refuses_functions_that_drop_the_imaginary_part():
    def real_only(x):
        x = np.asarray(x, dtype=float)
        return quadratic(x)

    with pytest.raises(layerkit.ComplexEvaluationError, match="complex parameters"):
        layerkit.check_function(real_only, np.ones(6), "complex-step")

    def uses_abs(x):
        return float(np.sum(np.abs(x))), np.sign(x)

    with pytest.raises(layerkit.ComplexEvaluationError, match="complex parameters"):
        layerkit.check_function(uses_abs, np.ones(3), "complex-step")


def test_tolerances_scale_with_the_dtype():
    from layerkit.check.noise import Noise
    from layerkit.check.tolerance import tolerances

    out = {}
    for dt in (np.float64, np.float32):
        x = np.array([0.7], dtype=dt)
        f = lambda t: np.exp(t[0]).astype(dt)  # noqa: E731
        noise = Noise.assumed(float(f(x)), dt)
        probe = CoordinateProbe(f, x, f(x), noise_level=noise.level)
        est = Central().estimate(probe)
        out[dt] = tolerances(est, np.array([np.exp(0.7)]), dt)
        # the tolerance bounds the estimate's true error, and not by much more than the safety factor
        err = abs(est.values[0] - np.exp(0.7))
        assert err <= out[dt][1][0] <= 1e4 * max(err, np.finfo(dt).eps)
    (r64, a64), (r32, a32) = out[np.float64], out[np.float32]
    assert r64 < 1e-13 < r32 < 1e-4
    assert a64[0] < 1e-8 < a32[0]
