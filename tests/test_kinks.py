"""Layers with kinks (ReLU): a stencil that crosses one is measured again, never a failure by itself."""

import numpy as np
import pytest
from adversaries import AtZero, HalfAtZero, OneEverywhere, WrongSide

import layerkit
from layerkit import Dense, LeakyReLU, Network, ReLU, SoftmaxCrossEntropy, check_layer, check_network

RNG = np.random.default_rng(0)
X, Y = RNG.standard_normal((6, 3)), RNG.integers(0, 3, 6)
METHODS = ("central", "richardson", "forward")


def _net(act=ReLU, on_kink=True, offset=0.0):
    net = Network([Dense(3, 4), act(), Dense(4, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    T = net.layers[0].Theta
    if on_kink:  # example 0's pre-activation of unit 1 exactly at the kink (or offset from it)
        T[1, 0] = -(X[0] @ T[1, 1:]) + offset
    return net


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("offset", [0.0, 1e-9])
def test_a_stencil_across_a_kink_is_nonsmooth_not_a_failure(method, mode, offset):
    report = check_network(_net(offset=offset), X, Y, 0.0, method, mode=mode)
    assert report.passed, report
    if offset == 0.0:
        assert any(f.code == "nonsmooth" for f in report.findings)


@pytest.mark.parametrize("act", [ReLU, LeakyReLU])
def test_a_layer_checked_on_its_kink(act):
    x = np.array([[0.0, 1.0, -2.0], [3e-9, -1e-9, 0.5]])
    for method in METHODS:
        report = check_layer(act(), x, method)
        assert report.passed and report.findings[0].code == "nonsmooth", report
        assert "x[0, 0]" in report.findings[0].message


@pytest.mark.parametrize("wrong", [OneEverywhere, WrongSide])
@pytest.mark.parametrize("mode", ["full", "directional"])
def test_a_wrong_relu_derivative_is_detected(wrong, mode):
    for method in METHODS:
        assert not check_network(_net(wrong, on_kink=True), X, Y, 0.0, method, mode=mode).passed
        assert not check_network(_net(wrong, on_kink=False), X, Y, 0.0, method, mode=mode).passed


def test_another_subgradient_at_the_kink_is_accepted():
    for method in METHODS:
        assert check_network(_net(AtZero), X, Y, 0.0, method).passed


def test_the_complex_step_is_refused_for_a_network_with_kinks():
    with pytest.raises(layerkit.ComplexEvaluationError, match="kinks"):
        check_network(_net(), X, Y, 0.0, "complex-step")


def test_random_relu_networks_pass():
    """A sample of the random ReLU networks of benchmarks/ (200 there): every method, both modes."""
    for seed in range(6):
        rng = np.random.default_rng(seed)
        dtype = np.float32 if seed % 3 == 0 else np.float64
        net = Network([Dense(5, 6), ReLU(), Dense(6, 4), LeakyReLU(0.1), Dense(4, 3)],
                      loss=SoftmaxCrossEntropy(), dtype=dtype)
        net.init_random(seed)
        Xr, yr = rng.standard_normal((20, 5)) * 3, rng.integers(0, 3, 20)
        for method in METHODS:
            for mode in ("full", "directional"):
                assert check_network(net, Xr, yr, 1.0, method, mode=mode).passed, (seed, method, mode)


def test_several_units_on_kinks_moved_apart_are_inconclusive_not_failed():
    net = Network([Dense(3, 4), ReLU(), Dense(4, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    net.layers[0].Theta[0] = 0.0  # unit 0 sits on its kink for every example
    report = check_network(net, X, Y, 0.0)
    assert not report.passed and report.inconclusive
    zeros = np.zeros((8, 3))
    zeros[:, 1] = np.random.default_rng(1).standard_normal(8)
    layer = check_layer(ReLU(), zeros, mode="directional")
    assert not layer.passed and layer.inconclusive


def test_an_instance_patched_loss_is_not_read_by_the_engine():
    from layerkit import MeanSquaredError

    net = Network([Dense(3, 3)], loss=MeanSquaredError())
    net.init_random(0)
    w = np.array([3.0, 1.0, 1.0])

    def value_and_grad(out, Yt, fused=False):
        r = out - Yt
        return 0.5 * np.sum(w * r * r), r  # the gradient forgets the weight

    net.loss.value_and_grad = value_and_grad
    Yt = RNG.standard_normal((6, 3))
    report = check_network(net, X, Yt, 0.0)
    assert not report.passed and report.evaluator == "cost"


@pytest.mark.parametrize("engine", ["auto", "generic"])
def test_a_unit_on_a_kink_with_another_kink_within_the_step_is_not_a_false_alarm(engine):
    # a zero-bias convolution with padding: its border outputs sit exactly on ReLU's kink, and one inner unit is
    # 0.002 away, inside a float32 step: a one-sided difference beyond it mixes in that unit's slope (an error
    # d / t that no extrapolation removes); the settling must measure on the piece beside the point only
    from layerkit import Conv2D, Flatten

    net = Network([Conv2D(1, 1, 1, padding=1, dtype=np.float32), ReLU(), Flatten(),
                   Dense(25, 2, seed=1, dtype=np.float32)], loss=SoftmaxCrossEntropy(), dtype=np.float32)
    net.init_random(3)
    net.layers[0].params["W"][...] = 1
    net.layers[0].params["b"][...] = 0
    rng = np.random.default_rng(0)
    X = rng.choice([-1.0, 1.0], (4, 1, 3, 3)) * rng.uniform(0.5, 1.5, (4, 1, 3, 3))
    X[1, 0, 1, 1] = 0.002
    X, y = X.astype(np.float32), np.array([0, 1, 1, 0])
    report = check_network(net, X, y, 0.0, mode="full", engine=engine)
    assert report.passed and "nonsmooth" in report.codes(), str(report)
    from layerkit.testing import plant_gradient_error

    # b1's derivative is 0.016 and the float32 cost resolves it to about 1e-2 here (a 10 % error is below what
    # it can see); a 100 % error is not
    planted = plant_gradient_error(net, net.layout["b1"].start, 1.0)
    assert not check_network(planted, X, y, 0.0, mode="full", engine=engine).passed


def _padded_conv(act, dtype):
    # a zero-bias convolution with padding on inputs with a zero corner: the outputs there sit exactly on the
    # kink, and the bias moves them all off it at once
    from layerkit import Conv2D, Flatten

    net = Network([Conv2D(1, 2, 3, padding=1, dtype=dtype), act(), Flatten(), Dense(72, 3, seed=1, dtype=dtype)],
                  loss=SoftmaxCrossEntropy(), dtype=dtype)
    net.init_random(0)
    net.layers[0].params["b"][...] = 0
    rng = np.random.default_rng(0)
    X = rng.standard_normal((6, 1, 6, 6))
    X[:, :, :3, :3] = 0
    return net, X.astype(dtype), rng.integers(0, 3, 6)


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("engine", ["auto", "generic"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_derivative_that_is_the_mean_of_the_slopes_on_a_kink_does_not_pass(engine, dtype, method):
    # at a point on a kink a central difference is the mean of the one-sided slopes at every step (so is the
    # second look's ladder, after a forward difference): a derivative of 1/2 at ReLU's 0 agrees with it, and
    # is neither slope; the right derivative passes (in float32, Richardson's and the forward difference's
    # one-sided re-measurement on the re-evaluated cost is coarser than their first tolerance: inconclusive)
    net, X, y = _padded_conv(ReLU, dtype)
    right = check_network(net, X, y, 0.0, method, mode="full", engine=engine)
    if dtype == np.float32 and (method == "richardson" or method == "forward" and engine == "generic"):
        assert right.passed or right.inconclusive, str(right)
    else:
        assert right.passed and "nonsmooth" in right.codes(), str(right)
    half, X, y = _padded_conv(HalfAtZero, dtype)
    report = check_network(half, X, y, 0.0, method, mode="full", engine=engine)
    assert not report.passed and "precision-limited" in report.codes(), str(report)
    # the first estimate of the bias is the mean of the slopes, and the analytic value agreed with it
    b = half.layout["b1"]
    ga = half.cost_and_gradient(X, y, 0.0)[1][b.slice]
    up, down = [], []
    for j in range(b.start, b.stop):
        theta, h = half.params.astype(np.float64), 1e-7 if dtype == np.float64 else 1e-3
        twin = half.clone(np.float64)
        cost = twin.objective(X.astype(np.float64), y, 0.0).cost
        e = np.zeros(theta.size)
        e[j] = h
        c0 = float(cost(theta))
        up.append((float(cost(theta + e)) - c0) / h)
        down.append((c0 - float(cost(theta - e))) / h)
    mean = (np.array(up) + np.array(down)) / 2
    assert np.allclose(ga, mean, rtol=1e-2) and not np.allclose(ga, up, rtol=1e-2)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_mean_of_the_slopes_on_a_kink_does_not_pass_in_directional_mode(dtype):
    # a random direction moves every bias, so it moves the units sitting on the kink: the directional
    # difference is the mean of its one-sided slopes, and so is the analytic value of a derivative of 1/2
    half, X, y = _padded_conv(HalfAtZero, dtype)
    report = check_network(half, X, y, 0.0, mode="directional")
    assert not report.passed, str(report)
    right, X, y = _padded_conv(ReLU, dtype)
    # the right derivative is never failed: the directions move many units on the kink, each on its own side
    right_report = check_network(right, X, y, 0.0, mode="directional")
    assert right_report.passed or right_report.inconclusive, str(right_report)


class HalfNearZero(ReLU):
    """A ReLU whose derivative is 1/2 within 1e-6 of its kink (wrong everywhere but on the kink itself)."""

    def derivative(self, x, y):
        return np.where(np.abs(x) < 1e-6, 0.5, (x > 0).astype(x.dtype))


@pytest.mark.parametrize("method", ["central", "richardson", "forward"])
def test_an_automatic_step_near_a_kink_stays_on_the_pieces(method):
    """A unit 1e-9 from its kink on one example: the engine shortens the automatic step of the entries whose
    stencil would cross it to below that distance, so the difference is a derivative at the point (error at
    the rounding, no second look), and a note names them."""
    net = _net(offset=1e-9)
    report = check_network(net, X, Y, 0.0, method)
    assert report.passed, report
    assert report.evaluator == "engine"
    row = net.layout["Theta1"].start + 4 * 1 + np.arange(4)  # Theta1[1, :]: the bias, then the 3 inputs
    err = np.abs(np.asarray(report.numerical) - np.asarray(report.analytical))[row]
    bound = 1e-6 if method == "forward" else 1e-12  # a forward difference's own truncation, h |J''| / 2
    assert np.all(err <= bound * np.maximum(1.0, np.abs(np.asarray(report.analytical)[row])))
    assert any("would carry an example across a kink" in n and "Theta1[1, 0]" in n for n in report.notes)
    assert not any("measured again" in n for n in report.notes)
    probe = _probe(net, X, Y)
    strategy = layerkit.get_method(method)
    reach = max(abs(c) for c in getattr(strategy, "base", strategy).offsets)
    auto = layerkit.check.methods.auto_steps(probe, strategy.base_step(np.float64))
    tables = layerkit.check.methods.table_steps(probe, auto, reach)  # where two Taylor tables certify
    h = strategy.steps(probe)
    F = np.concatenate([[1.0], np.abs(X[0])])
    assert np.all(h[row] * F < 1e-9) and np.all(h[row] > 0)
    others = np.setdiff1d(np.arange(net.size), row)
    assert np.array_equal(h[others], tables[others]) and np.all(tables <= auto)


def _probe(net, X, y):
    from layerkit.fast.probe import NetworkProbe
    from layerkit.fast.state import NetworkState

    obj = net.objective(X, y, 0.0)
    state = NetworkState.at(net, obj.inputs(net.params.dtype), obj.Y, 0.0, None)
    return NetworkProbe(state, net.params, obj.cost(net.params))


class BackwardHalfNearZero(ReLU):
    """The same error written in ``backward``: the layer keeps ReLU's math, so the engine keeps ReLU's rule
    (and its kinks, which shorten the steps)."""

    def backward(self, dy):
        x = self._x
        return dy * np.where(np.abs(x) < 1e-6, 0.5, (x > 0)).astype(x.dtype)


@pytest.mark.parametrize("method", ["central", "richardson", "forward"])
def test_a_derivative_wrong_only_next_to_a_kink_fails_with_a_shortened_step(method):
    """The shortened step measures the slope of the point's own piece: a derivative of 1/2 given 1e-9 from the
    kink (where the slope is 1) FAILS on exactly the entries that example moves.  The second look's ladder and
    the across-scales test start below the kink too: across it they would measure the mean of the slopes and
    make the mismatch look undecided."""
    report = check_network(_net(BackwardHalfNearZero, offset=1e-9), X, Y, 0.0, method)
    assert not report.passed and not report.inconclusive, report
    assert report.evaluator == "engine"
    assert any("would carry an example across a kink" in n for n in report.notes)
    assert set(np.flatnonzero(report.mismatch)) <= set(range(4, 8))  # Theta1[1, :] only


def test_a_forward_difference_next_to_a_kink_with_a_large_penalty_passes():
    """A forward difference at a shortened step, its tolerance from the truncation model (no curvature term)
    and a large penalty: the entries that fail at the first step are measured again on a ladder that stays on
    the point's pieces, and agree."""
    net = Network([Dense(3, 4), ReLU(), Dense(4, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    T = net.layers[0].Theta
    T[1, 1:] *= 0.01
    T[1, 0] = -(X[0] @ T[1, 1:]) + 1e-9
    report = check_network(net, X, Y, 100.0, "forward")
    assert report.passed, report


def test_a_step_is_not_shortened_below_the_normal_numbers():
    """A unit 1e-310 from its kink (a subnormal bias on an all-zero example): halving the step below the kink's
    reach would leave the cost's changes subnormal; the step is kept and the kink safeguards settle it."""
    X0 = X.copy()
    X0[0] = 0.0
    net = Network([Dense(3, 4), ReLU(), Dense(4, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    net.layers[0].Theta[1, 0] = 1e-310
    for method in METHODS:
        report = check_network(net, X0, Y, 0.0, method)
        assert report.passed, report
        assert not any("would carry an example across a kink" in n for n in report.notes)


def test_the_piece_radius_is_the_distance_to_the_nearest_kink():
    """``SeriesBlock.piece_radius`` against brute force: for a Dense block right before a ReLU, the step of
    entry (r, c) that brings some example to its kink is ``min_i |z_ir| / |F_ic|``; entries whose widest step
    stays short of it get ``inf``."""
    rng = np.random.default_rng(3)
    net = Network([Dense(5, 4, seed=1), ReLU(), Dense(4, 3, seed=2)], loss=SoftmaxCrossEntropy())
    Xr, yr = rng.standard_normal((30, 5)), rng.integers(0, 3, 30)
    probe = _probe(net, Xr, yr)
    block = net.layout["Theta1"]
    series = probe._series_block(0, "Theta", block)
    Fm = np.hstack([np.ones((30, 1)), Xr])
    z = Fm @ net.layers[0].Theta.T
    with np.errstate(divide="ignore"):
        brute = np.min(np.abs(z)[:, :, None] / np.abs(Fm)[:, None, :], axis=0).ravel()  # (4 * 6,)
    for t in (1e-3, 1e-2, 1e-1, 1.0):
        tmax = np.full(block.size, t)
        got = series.piece_radius(tmax)
        assert np.allclose(got, np.where(brute <= t, brute, np.inf), rtol=1e-12)
    assert np.array_equal(probe.smooth_reach(np.full(net.size, 1e-1))[block.slice],
                          np.minimum(1e-1, series.piece_radius(np.full(block.size, 1e-1))))


@pytest.mark.parametrize("method", ["central", "richardson", "forward"])
@pytest.mark.parametrize("mode", ["full", "directional"])
@pytest.mark.parametrize("offset", [1e-9, 3e-8, 3e-7, 9e-7])
def test_a_derivative_of_the_mean_of_the_slopes_next_to_a_kink_does_not_pass(method, mode, offset):
    """A derivative of 1/2 within 1e-6 of ReLU's kink, on a unit 1e-9 from it, through the exact path (a user
    ``derivative``: the engine's tables do not apply): every step of the second look's ladder crosses the kink,
    and each central difference is the mean of the slopes (1/2) but for ``K d / 2h``.  The entries are
    measured on the point's own side of the kink and fail there.  In directional mode the exact evaluator's
    noise is calibrated on a difference table that crosses no kink (across one, the kink reads as noise and
    every tolerance grows to hide the error)."""
    report = check_network(_net(HalfNearZero, offset=offset), X, Y, 0.0, method, mode=mode)
    assert not report.passed, report
    if mode == "full":
        assert not report.inconclusive, report


def test_a_re_evaluated_cost_without_units_near_a_kink_spends_nothing_on_kinks():
    """The safeguard for kinks near the point costs forward passes only where they can matter: a re-evaluated
    ReLU network whose first estimates pass spends no evaluation on kinks (two per entry and the baseline)."""
    rng = np.random.default_rng(0)
    net = Network([Dense(20, 30), ReLU(), Dense(30, 10)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    Xr, yr = rng.standard_normal((300, 20)), rng.integers(0, 10, 300)
    report = check_network(net, Xr, yr, 0.1, "central", engine="generic", mode="full")
    assert report.passed, report
    assert report.n_evals < 2 * net.size + 32, report.n_evals
