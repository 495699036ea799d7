"""Directional mode, localization by group testing, the Taylor verdict and executors."""

from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import numpy as np
import pytest
from helpers import CourseCost, rosen_pair

import layerkit
from layerkit import Dense, Network, check_function, check_layer, check_network
from layerkit.check.directional import taylor_remainder
from layerkit.check.probes import CostDirections
from layerkit.check.subjects import function_subject
from layerkit.numerics import Direction
from layerkit.testing import plant_gradient_error


def _data(n_in, n_out, m, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random((m, n_in)), rng.integers(0, n_out, m)


@pytest.mark.parametrize("sizes", [[3, 5, 3], [20, 10, 4], [6, 5, 4, 3]])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_correct_networks_pass_in_directional_mode(sizes, dtype):
    net = Network.from_sizes(sizes, dtype=dtype, seed=1)
    X, y = _data(sizes[0], sizes[-1], 30)
    for lam in (0.0, 2.0):
        report = check_network(net, X, y, lam, mode="directional")
        assert report.passed, str(report)
        assert report.mode == "directional" and report.findings == ()
        # the gradient, the engine's check against the network's own cost, then 2 evaluations per default
        # direction (the engine's rules are layerkit's own: exact identities, whose rounding needs no noise
        # table and whose truncation at sqrt(eps) steps no second step)
        assert report.directional.evaluations == {"analytic": 1, "verify": 1, "directions": 4}
        assert report.n_evals == 1 + 1 + 2 * 2


def test_one_wrong_entry_in_a_10k_network_is_found():
    net = Network.from_sizes([400, 25, 10], seed=1)
    X, y = _data(400, 10, 300)
    g = net.cost_and_gradient(X, y, 1.0)[1][:10025]
    entry = int(np.argsort(np.abs(g))[len(g) // 2])  # a typical entry, not the largest
    bad = plant_gradient_error(net, entry, 1e-4)
    report = check_network(bad, X, y, 1.0, mode="directional")
    assert not report.passed
    assert report.failed_blocks == ["Theta1"] and report.passed_blocks == ["Theta2"]
    assert [e.flat_index for e in report.worst] == [entry]
    assert report.worst[0].analytical == bad.cost_and_gradient(X, y, 1.0)[1][entry]
    assert abs(report.worst[0].analytical / g[entry] - 1) == pytest.approx(1e-4, rel=0.1)
    assert report.worst[0].numerical == pytest.approx(g[entry], rel=1e-9)
    assert "localized" in report.codes()
    assert report.context["taylor"]["slope"] < 1.3 and "wrong" in report.step_verdict


def test_evaluations_grow_with_log_p():
    counts = {}
    for hidden in (4, 64):
        net = Network.from_sizes([40, hidden, 3], seed=2)
        X, y = _data(40, 3, 50)
        bad = plant_gradient_error(net, 7)
        report = check_network(bad, X, y, 0.0, mode="directional", diagnose=False)
        assert [e.flat_index for e in report.worst] == [7]
        counts[net.size] = report.context["evaluations"]["localize"]
    (p1, c1), (p2, c2) = sorted(counts.items())
    assert p2 > 12 * p1
    # bisection: two half-ranges per halving, each at two steps of central differences with the engine (the
    # second step measures the truncation): ~8 evaluations per halving, so 16x the parameters costs ~32 more
    assert c2 - c1 <= 8 * (np.log2(p2 / p1) + 2) and c2 < 2 * c1


def test_wrongly_regularized_bias_column_in_a_function():
    sizes = (30, 12, 6)
    rng = np.random.default_rng(0)
    X = rng.random((200, 30))
    Y = np.eye(6)[rng.integers(0, 6, 200)]
    net = Network.from_sizes(list(sizes), seed=3)
    blocks = {b.name: b.shape for b in net.blocks}
    fun = CourseCost(X, Y, 2.0, sizes, bug="bias2")
    report = check_function(fun, net.params, blocks=blocks, mode="directional", lambda_=2.0, m=200)
    assert not report.passed and report.failed_blocks == ["Theta2"]
    assert sorted(e.index for e in report.worst) == sorted((r, 0) for r in range(5))[:5]
    assert len(report.context["localized"]) == 6  # the whole bias column of Theta2
    f = [f for f in report.findings if f.code == "regularization-mismatch"][0]
    assert f.blocks == ("Theta2",) and f.evidence["factor_name"] == "-lambda/m"
    assert check_function(CourseCost(X, Y, 2.0, sizes), net.params, blocks=blocks, mode="directional").passed


def test_a_whole_wrong_block_stops_bisecting_and_is_diagnosed():
    sizes = (30, 12, 6)
    rng = np.random.default_rng(1)
    X, Y = rng.random((100, 30)), np.eye(6)[rng.integers(0, 6, 100)]
    net = Network.from_sizes(list(sizes), seed=4)
    blocks = {b.name: b.shape for b in net.blocks}
    report = check_function(CourseCost(X, Y, 0.0, sizes, bug="scale1"), net.params, blocks=blocks,
                            mode="directional")
    assert report.context["spread_blocks"] == ["Theta1"]
    f = [f for f in report.findings if f.code == "scale-mismatch"][0]
    assert f.blocks == ("Theta1",) and f.evidence["factor"] == pytest.approx(2.0, rel=1e-6)
    assert "spread" in str(report)


def _taylor(fun, x0, d):
    subject = function_subject(fun, x0)
    f0, a = subject.evaluate()
    return taylor_remainder(CostDirections(subject.value, subject.x0, f0), subject.x0, a, d)


def test_taylor_slope_is_two_for_a_right_gradient_and_one_for_a_wrong_one():
    x0 = np.random.default_rng(0).uniform(-1, 1, 12)
    u = np.random.default_rng(1).standard_normal(12)
    d = Direction(0, 12, u / np.linalg.norm(u))
    assert _taylor(rosen_pair, x0, d)["slope"] > 1.8

    def wrong(x):
        c, g = rosen_pair(x)
        return c, g * (1 + 1e-3)

    assert _taylor(wrong, x0, d)["slope"] < 1.2
    report = check_function(wrong, x0, mode="directional")  # the check's own fit, through its report
    assert not report.passed and report.context["taylor"]["slope"] < 1.2


@pytest.mark.parametrize("mode", ["full", "directional"])
def test_process_pool_results_are_identical_to_serial(mode):
    x0 = np.random.default_rng(3).uniform(-1, 1, 8)
    serial = check_function(rosen_pair, x0, mode=mode, diagnose=False)
    with ProcessPoolExecutor(2) as pool:
        parallel = check_function(rosen_pair, x0, mode=mode, diagnose=False, executor=pool)
    np.testing.assert_array_equal(serial.numerical, parallel.numerical)
    assert serial.passed == parallel.passed and serial.n_evals == parallel.n_evals
    if mode == "directional":
        assert serial.context["directional"] == parallel.context["directional"]


def test_any_executor_works_and_a_raising_function_still_leaves_x0_alone():
    x0 = np.linspace(-1, 1, 6)
    before = x0.copy()
    with ThreadPoolExecutor(3) as pool:
        assert check_function(rosen_pair, x0, "richardson", executor=pool).passed

        calls = []

        def flaky(x):
            calls.append(1)
            if len(calls) == 7:
                raise RuntimeError("failed on call 7")
            return rosen_pair(x)

        with pytest.raises(RuntimeError, match="call 7"):
            check_function(flaky, x0, executor=pool)
    assert x0.tobytes() == before.tobytes()


def test_directional_check_layer_and_errors():
    layer = Dense(5, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 5))
    assert check_layer(layer, x, mode="directional").passed
    with pytest.raises(layerkit.InputError, match="mode"):
        check_layer(layer, x, mode="sideways")
    with pytest.raises(layerkit.InputError, match="directional"):
        check_function(rosen_pair, np.ones(4), "complex-step", mode="directional")
    with pytest.raises(layerkit.InputError, match="rtol"):
        check_function(rosen_pair, np.ones(4), mode="directional", rtol=1e-3)


from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=20, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=2, max_size=4), m=st.integers(1, 10),
       lam=st.sampled_from([0.0, 1.5]), seed=st.integers(0, 2**16))
def test_directional_mode_raises_no_false_alarm_on_random_architectures(sizes, m, lam, seed):
    rng = np.random.default_rng(seed)
    net = Network.from_sizes(sizes, seed=seed)
    X, y = rng.standard_normal((m, sizes[0])), rng.integers(0, sizes[-1], m)
    report = check_network(net, X, y, lam, mode="directional", seed=seed)
    assert report.passed, str(report)


def test_an_evaluation_budget_makes_auto_mode_the_same_on_every_machine():
    rng = np.random.default_rng(3)
    w = rng.uniform(0.5, 2.0, 3000)

    def fun(x):
        return 0.5 * float(np.sum(w * x * x)), w * x

    x0 = rng.standard_normal(3000)
    small = check_function(fun, x0, budget=10_000)  # 2 x 3000 + 32 evaluations fit: every entry
    assert small.mode == "full" and small.passed
    tight = check_function(fun, x0, budget=200)
    assert tight.mode == "directional" and tight.passed
    assert any("more than the budget of 200" in n for n in tight.notes)
    with pytest.raises(layerkit.InputError, match="budget"):
        check_function(fun, x0, budget=0)


def _float32_port(scale, n_in, n_hidden, n_labels, m, lam=1.0, seed=0, dtype=np.float32):
    """A course port computing in float32 inside a float64 interface (its cost's noise is ~1e-7 relative):
    Theta1's gradient times ``scale``.  Theta1's gradient is about 30 times smaller than Theta2's."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((m, n_in)).astype(dtype)
    Y = np.eye(n_labels, dtype=dtype)[np.arange(m) % n_labels]
    split = n_hidden * (n_in + 1)

    def fun(p):
        p = np.asarray(p, dtype)
        T1, T2 = p[:split].reshape(n_hidden, n_in + 1), p[split:].reshape(n_labels, n_hidden + 1)
        a1 = np.hstack([np.ones((m, 1), dtype), X])
        s = 1 / (1 + np.exp(-(a1 @ T1.T)))
        a2 = np.hstack([np.ones((m, 1), dtype), s])
        h = 1 / (1 + np.exp(-(a2 @ T2.T)))
        J = np.sum(-Y * np.log(h) - (1 - Y) * np.log(1 - h)) / m \
            + lam / (2 * m) * (np.sum(T1[:, 1:] ** 2) + np.sum(T2[:, 1:] ** 2))
        d3 = h - Y
        G1, G2 = ((d3 @ T2[:, 1:]) * s * (1 - s)).T @ a1 / m, d3.T @ a2 / m
        G1[:, 1:] += lam / m * T1[:, 1:]
        G2[:, 1:] += lam / m * T2[:, 1:]
        return float(J), np.concatenate([scale * G1.ravel(), G2.ravel()]).astype(np.float64)

    x0 = np.random.default_rng(seed + 1).uniform(-0.12, 0.12, split + n_labels * (n_hidden + 1))
    return fun, x0, {"Theta1": (n_hidden, n_in + 1), "Theta2": (n_labels, n_hidden + 1)}


@pytest.mark.parametrize("sizes", [(100, 25, 10, 2000), pytest.param((400, 25, 10, 5000), marks=pytest.mark.slow)])
def test_a_block_the_random_directions_barely_see_is_measured_along_its_own_gradient(sizes):
    # On a float32-internal port, two random directions resolve Theta1 (whose gradient is small against the
    # cost's noise) to no better than its whole size: a 10% error there used to pass.  Measured along its
    # own gradient, it fails in Theta1 with its factor named, and the right port still passes.
    fun, x0, blocks = _float32_port(1.1, *sizes)
    r = check_function(fun, x0, blocks=blocks, mode="directional")
    assert not r.passed and not r.inconclusive and tuple(r.failed_blocks) == ("Theta1",)
    scale = [f for f in r.findings if f.code == "scale-mismatch"]
    assert scale and abs(scale[0].evidence["factor"] - 1.1) < 0.01
    assert "2.7e-02 times" not in str(r) and "in no block" not in str(r)
    right = check_function(_float32_port(1.0, *sizes)[0], x0, blocks=blocks, mode="directional")
    assert right.passed, str(right)
    assert "Theta1" in right.directional.block_tests  # measured on its own
    noisy = next(f for f in right.findings if f.code == "precision-limited")
    assert noisy.evidence["cause"] == "float32-inside" and "computed in float32" in noisy.message


def test_a_float64_check_spends_nothing_on_blocks_the_directions_resolve():
    fun, x0, blocks = _float32_port(1.0, 100, 25, 10, 2000, dtype=np.float64)
    r = check_function(fun, x0, blocks=blocks, mode="directional")
    assert r.passed and not r.directional.block_tests and "blocks" not in r.directional.evaluations


def _float32_two_blocks(scale, c, seed=0):
    """A float32 cost at float64 points: block A large, block B (``c``: a few percent of the gradient) with
    its analytic gradient times ``scale``."""
    x0 = np.random.default_rng(seed).uniform(-1, 1, 40)

    def fun(p):
        p32 = np.asarray(p, np.float32)
        A, B = p32[:20], p32[20:]
        J = np.float32(1000.0) + np.sum(np.float32(0.5) * (A - 1) ** 2) + np.float32(c) * np.sum(np.sin(B))
        return float(J), np.concatenate([(A - 1).astype(np.float64), scale * c * np.cos(B.astype(np.float64))])
    return fun, x0, {"A": (20,), "B": (20,)}


@pytest.mark.parametrize("c", [0.1, 0.03])
@pytest.mark.parametrize("scale", [0.0, 1.2, 1.5])
def test_a_coarsely_resolved_block_never_passes_wrong(c, scale):
    # B is resolved along its own gradient to only ~60% of itself: a pass there would hide a 50% error.  The
    # resolution is judged by the smaller of the two derivatives, so a wrong factor cannot make B look resolved
    fun, x0, blocks = _float32_two_blocks(scale, c)
    r = check_function(fun, x0, blocks=blocks, mode="directional")
    assert not r.passed, str(r)


def test_a_non_finite_analytic_entry_never_passes_a_direction():
    def fun(p):
        g = p.copy()
        g[-1] = np.inf
        return 0.5 * float(p @ p), g
    r = check_function(fun, np.linspace(-1, 1, 6), mode="directional")
    assert not r.passed and "non-finite" in r.codes(), str(r)


def test_a_doubled_gradient_with_its_penalty_is_a_plain_factor_not_a_data_term():
    # no hints: a whole block times 2 fits a = c n, so no lambda/m is read off it (it used to be "inferred"
    # at ~1e-9 from noise, and the factor put on the data term alone)
    import zoo

    for lam in (1.0, 0.0):
        fun, theta, blocks, lam, m, order = zoo.make("gradient-times-2", (60, 25, 10), 30, lam, "C")
        r = check_function(fun, theta, blocks=blocks, mode="directional")
        scale = next(f for f in r.findings if f.code == "scale-mismatch")
        assert "data term" not in scale.message and abs(scale.evidence["factor"] - 2) < 1e-6, scale.message


def test_an_entry_next_to_a_kink_the_cost_does_not_declare_is_not_accused():
    # a correct max(x, 0) term on entries within a step of their kink, and one wrong entry elsewhere: the
    # whole-vector directions cross no kink, but the entries' own stencils do; only the wrong entry is named
    P = 300
    rng = np.random.default_rng(1)
    d, x0 = rng.uniform(0.5, 2, P), rng.standard_normal(P)
    x0[17:22] = 1e-7 * np.arange(1, 6)

    def fun(x):
        z = x[17:22]
        g = d * x + 1.0
        g[17:22] += 3 * (z > 0)
        g[200] += 0.5
        return 0.5 * float(np.sum(d * x * x)) + float(np.sum(x)) + 3 * float(np.sum(np.maximum(z, 0))), g

    report = check_function(fun, x0, mode="directional")
    assert not report.passed
    assert [e.flat_index for e in report.worst] == [200]
    assert report.context["localized"] == ["x[200]"] and "nonsmooth" in report.codes()


def test_a_failing_black_box_evaluates_each_point_once_and_counts_every_call():
    rng = np.random.default_rng(0)
    a, x0 = rng.standard_normal(2000), rng.standard_normal(2000)
    points = []

    def fun(x):
        points.append(x.tobytes())
        g = np.cos(x) * a + x
        g[777] *= 1.01
        return float(np.sum(np.sin(x) * a) + 0.5 * x @ x), g

    report = check_function(fun, x0, mode="directional", diagnose=False)
    assert [e.flat_index for e in report.worst] == [777]
    assert len(points) == report.n_evals
    # x0 is evaluated twice (a cost that differs the second time is nondeterministic); every other point once
    assert len(set(points)) == len(points) - 1



@pytest.mark.parametrize("method", ["central", "forward", "richardson"])
@pytest.mark.parametrize("scale", [50.0, 200.0])
def test_a_well_fit_softmax_is_judged_by_the_rounding_of_its_backprop(method, scale):
    """A softmax sure of every label: its backprop's ``P - Y`` cancels to ``eps`` of 1, so entries of 1e-13 are
    off by 0.4% in the analytic gradient (against a 60-digit reference), which the exact engine resolves;
    the full check adds the backprop's rounding, and so does the directional check, to every direction."""
    from layerkit import ReLU, SoftmaxCrossEntropy

    rng = np.random.default_rng(0)
    net = Network([Dense(4, 6), ReLU(), Dense(6, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(1)
    X = rng.standard_normal((20, 4))
    net.layers[2].Theta[...] *= scale
    H = np.maximum(np.c_[np.ones(len(X)), X] @ net.layers[0].Theta.T, 0)
    y = (np.c_[np.ones(len(X)), H] @ net.layers[2].Theta.T).argmax(1)
    report = check_network(net, X, y, 0.0, method, mode="directional")
    assert report.passed, report
    g = net.cost_and_gradient(X, y, 0.0)[1]
    entry = int(np.argmax(np.abs(g)))
    rel = 10 * float(report.tolerance[entry]) / abs(float(g[entry]))  # ten times the error it says it cannot see
    bad = check_network(plant_gradient_error(net, entry, rel), X, y, 0.0, method, mode="directional")
    # found in its block; the search may not pin the entry itself, when the backprop's rounding along a part
    # of the block is as large as the planted error's share of it
    assert not bad.passed and not bad.inconclusive and net.layout.block_of(entry).name in bad.failed_blocks
