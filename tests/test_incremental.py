"""The structured network probe must reproduce the naive loop's numerical gradient exactly."""

import numpy as np
import pytest

from layerkit import Dense, Network, Sigmoid, check_network
from layerkit.fast.changes import ColumnChange, RankOneChange, loss_change, sigmoid_change, softplus_change
from layerkit.fast.probe import NetworkProbe
from layerkit.fast.rules import rule_for


def _agreement(net, X, y, lam, method):
    """Both engines, and how far apart they are in units of the naive loop's own tolerance: below 1 means
    that the whole-cost loop, given its error model, cannot tell the engine's estimate from its own."""
    fast = check_network(net, X, y, lam, method, engine="structured", diagnose=False)
    naive = check_network(net, X, y, lam, method, engine="generic", diagnose=False)
    apart = float(np.max(np.abs(fast.numerical - naive.numerical) / naive.tolerance))
    return fast, naive, apart


@pytest.mark.parametrize("sizes", [[3, 5, 3], [7, 6, 4], [6, 5, 4, 3], [5, 4, 6, 3, 2]])
@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_structured_equals_naive_at_any_depth(sizes, method, lam):
    rng = np.random.default_rng(len(sizes))
    net = Network.from_sizes(sizes, seed=3)
    X, y = rng.standard_normal((25, sizes[0])), rng.integers(0, sizes[-1], 25)
    fast, naive, apart = _agreement(net, X, y, lam, method)
    assert apart < 1
    _, g = net.cost_and_gradient(X, y, lam)
    assert np.linalg.norm(fast.numerical - g) / np.linalg.norm(g) < 1e-11  # the engine differences exactly
    assert fast.passed == naive.passed


def test_forward_method_also_agrees():
    rng = np.random.default_rng(0)
    net = Network.from_sizes([6, 5, 4], seed=1)
    X, y = rng.standard_normal((30, 6)), rng.integers(0, 4, 30)
    fast, naive, rel = _agreement(net, X, y, 1.0, "forward")
    # forward differences carry the naive loop's roundoff, eps |J| / h ~ 1e-8 relative: the structured probe
    # is compared with the exact gradient instead, which it matches to the forward method's truncation
    _, g = net.cost_and_gradient(X, y, 1.0)
    assert np.linalg.norm(fast.numerical - g) / np.linalg.norm(g) < 1e-6
    assert rel < 1 and fast.passed and naive.passed


def test_custom_layers_take_the_generic_path():
    from custom_layer import Tanh

    rng = np.random.default_rng(1)
    net = Network([Dense(4, 5), Tanh(), Dense(5, 3), Sigmoid()])
    net.init_random(2)
    X, y = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
    fast, naive, rel = _agreement(net, X, y, 1.0, "central")
    assert rel < 1 and fast.passed


def test_structured_probe_catches_a_wrong_backward():
    class Off(Sigmoid):
        def backward(self, dy):
            return super().backward(dy) * 1.001

    rng = np.random.default_rng(0)
    net = Network([Dense(4, 5), Off(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    X, y = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
    assert not check_network(net, X, y, 0.0, engine="structured", diagnose=False).passed


def test_change_identities_are_exact():
    # small changes (the identities) and large ones of saturated units (differences on the small side)
    z = np.array([-40.0, -3.0, 0.0, 2.0, 35.0, 30.0, 30.0, -30.0, 20.0, -3.0])
    d = np.array([1e-7, -2e-3, 0.5, -1e-9, 3.0, -3.0, -40.0, 25.0, -0.9, 7.0])
    s, sc = 1 / (1 + np.exp(-z)), 1 / (1 + np.exp(z))
    L = np.longdouble

    def sig_ld(t):  # cancellation-free in long double: for t > 0 use 1 - sigmoid(-t)
        return 1 / (1 + np.exp(-t)) if t <= 0 else 1 - 1 / (1 + np.exp(t))

    # reference differences in long double, written so they do not cancel either
    ref = []
    for zi, di in zip(z, d):
        zi, di = L(zi), L(di)
        if zi > 0:  # sigmoid(z + d) - sigmoid(z) = sigmoid(-z) - sigmoid(-z - d)
            ref.append(float(1 / (1 + np.exp(zi)) - 1 / (1 + np.exp(zi + di))))
        else:
            ref.append(float(sig_ld(zi + di) - sig_ld(zi)))
    np.testing.assert_allclose(sigmoid_change(s, s * sc, d, z=z), ref, rtol=1e-9)
    sp = [float(np.log1p(np.exp(L(zi) + L(di))) - np.log1p(np.exp(L(zi)))) for zi, di in zip(z, d)]
    np.testing.assert_allclose(softplus_change(z, s, d), sp, rtol=1e-9)
    # the loss change of a confident right prediction hardly changes: no cancellation against y d
    for y in (0.0, 1.0, 0.25):
        ref_l = [float(y * (np.log1p(np.exp(-L(zi) - L(di))) - np.log1p(np.exp(-L(zi))))
                       + (1 - y) * (np.log1p(np.exp(L(zi) + L(di))) - np.log1p(np.exp(L(zi)))))
                 for zi, di in zip(z, d)]
        np.testing.assert_allclose(loss_change(z, s, sc, np.full(z.shape, y), d), ref_l, rtol=1e-9)


def test_dense_turns_a_column_change_into_rank_one():
    layer = Dense(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 3))
    y = layer.forward(x)
    ch = rule_for(layer).param_change("Theta", 2, np.array([0, 2]), np.array([1e-3, -2e-3]), x)
    assert isinstance(ch, ColumnChange) and ch.col == 2
    theta = layer.Theta.copy()
    for b, (c, s) in enumerate([(0, 1e-3), (2, -2e-3)]):
        t = theta.copy()
        t[2, c] += s
        np.testing.assert_allclose(ch.dense(y.shape)[b], (x @ t[:, 1:].T + t[:, 0]) - y, atol=1e-15)
    nxt = Dense(4, 2, seed=1)
    out = rule_for(nxt).propagate(y, nxt.forward(y), ch)
    assert isinstance(out, RankOneChange)
    np.testing.assert_allclose(out.dense((6, 2)), ch.dense(y.shape) @ nxt.Theta[:, 1:].T, atol=1e-15)


def test_batches_stay_bounded(monkeypatch):
    import layerkit.fast.exact as exact
    import layerkit.fast.series as series

    monkeypatch.setattr(exact, "MAX_BATCH_ELEMENTS", 2000)
    monkeypatch.setattr(series, "MAX_SERIES_TERMS", 0)  # the exact per-perturbation path
    rng = np.random.default_rng(0)
    net = Network.from_sizes([12, 10, 8, 3], seed=0)
    X, y = rng.standard_normal((40, 12)), rng.integers(0, 3, 40)
    largest = []
    orig = exact.ExactPath.loss_change

    def spy(self, change):
        arr = getattr(change, "delta", getattr(change, "u", None))
        largest.append(arr.size * (1 if isinstance(change, RankOneChange) else 1))
        return orig(self, change)

    monkeypatch.setattr(exact.ExactPath, "loss_change", spy)
    fast, naive, rel = _agreement(net, X, y, 1.0, "central")
    assert rel < 1 and max(largest) <= 2000 * 3


def test_series_batches_stay_bounded(monkeypatch):
    import layerkit.fast.series as series

    monkeypatch.setattr(series, "MAX_BATCH_ELEMENTS", 2000)
    monkeypatch.setattr(series, "SERIES_BATCH_ELEMENTS", 2000)
    rng = np.random.default_rng(0)
    net = Network.from_sizes([12, 10, 8, 3], seed=0)
    X, y = rng.standard_normal((40, 12)), rng.integers(0, 3, 40)
    largest = []
    from layerkit.fast.layer_rules import SigmoidRule

    orig = SigmoidRule.series

    def spy(self, x, y_, change):
        out = orig(self, x, y_, change)
        largest.append(out.coeffs[0].size)  # one Taylor coefficient of the batch
        return out

    monkeypatch.setattr(SigmoidRule, "series", spy)
    fast, naive, rel = _agreement(net, X, y, 1.0, "central")
    assert rel < 1 and largest and max(largest) <= 2000


def _state(net, X, y, lam=1.0):
    from layerkit.check.subjects import NetworkSubject
    from layerkit.fast.state import NetworkState

    subject = NetworkSubject(net, X, y, lam)
    return subject, NetworkState.at(net, subject.objective.X, subject.objective.Y, lam)


def _probe(net, X, y, lam=1.0):
    subject, state = _state(net, X, y, lam)
    x0 = net.params.copy()
    return NetworkProbe(state, x0, subject.value(x0))


def _tables(net, X, y, lam=1.0):
    """Each block's Taylor tables (fast.series.SeriesBlock), built on the network's state at its parameters."""
    from layerkit.fast.series import SeriesBlock
    from layerkit.fast.state import ForwardPass

    fp = ForwardPass.of(_state(net, X, y, lam)[1])
    return {bd.block: SeriesBlock(fp, bd.index, bd.param, net.layout[bd.block].shape) for bd in net.bindings}


def _exact_deltas(net, X, y, steps, monkeypatch, lam=1.0):
    import layerkit.fast.series as series

    with monkeypatch.context() as mp:
        mp.setattr(series, "MAX_SERIES_TERMS", 0)
        return _probe(net, X, y, lam).delta(steps)


@pytest.mark.parametrize("sizes", [[3, 5, 3], [6, 5, 4, 3], [5, 4, 6, 3, 2]])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_series_tables_agree_with_the_exact_path_within_the_budget(sizes, dtype, monkeypatch):
    import layerkit.fast.series as series

    rng = np.random.default_rng(1)
    net = Network.from_sizes(sizes, seed=2, dtype=dtype)
    X, y = rng.standard_normal((30, sizes[0])), rng.integers(0, sizes[-1], 30)
    used = []
    orig = series.SeriesBlock.evaluate
    monkeypatch.setattr(series.SeriesBlock, "evaluate", lambda self, *a: used.append(1) or orig(self, *a))
    for h in (6e-6, 7.4e-4, 1e-2):
        steps = np.stack([np.full(net.size, h), np.full(net.size, -h), np.full(net.size, h / 2)]).astype(dtype)
        probe = _probe(net, X, y)
        del used[:]
        fast = probe.delta(steps)
        assert len(used) == len(net.bindings)  # every block read off its tables ...
        exact = _exact_deltas(net, X, y, steps, monkeypatch)
        # both are within the budget of the true change (the exact path up to its own rounding)
        budget = probe.loss.budget() / probe.m
        assert np.max(np.abs(fast - exact)) <= 2 * budget
        assert not probe.notes  # ... and none was dropped for disagreeing with the exact path


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_the_engines_automatic_steps_are_read_off_two_tables(dtype, monkeypatch):
    """The engine shortens the automatic central steps to where the first two Taylor tables certify every
    change (methods.table_steps): no third table is formed, the certified values are within the budget of the
    exact path's, and the difference is the derivative to rounding (against the network's own backprop, a
    truth of its own here: layerkit's layers).  A fixed step is never moved."""
    import layerkit.fast.series as series
    from layerkit import Central
    from layerkit.check.methods import auto_steps

    rng = np.random.default_rng(5)
    net = Network.from_sizes([12, 7, 4], seed=3, dtype=dtype)
    X, y = rng.random((300, 12)), rng.integers(0, 4, 300)
    probe = _probe(net, X, y)
    h = Central().steps(probe)
    auto = auto_steps(probe, Central().base_step(dtype))
    assert np.all(h <= auto) and np.mean(h < auto) > 0.5
    terms = []
    orig = series.SeriesBlock.table
    monkeypatch.setattr(series.SeriesBlock, "table", lambda self, K: terms.append(K) or orig(self, K))
    steps = np.stack([h, -h]).astype(dtype)
    fast = probe.delta(steps)
    assert terms and max(terms) == 2
    assert all(len(t.tables) == 2 for t in probe._series.values() if t is not None)
    exact = _exact_deltas(net, X, y, steps, monkeypatch)
    assert np.max(np.abs(fast - exact)) <= 2 * probe.loss.budget() / probe.m
    report = check_network(net, X, y, 1.0, diagnose=False)
    assert report.passed and report.evaluator == "engine"
    g = np.asarray(report.analytical, dtype=np.float64)
    err = np.abs(np.asarray(report.numerical) - g)
    eps = np.finfo(dtype).eps
    assert np.max(err / np.maximum(np.abs(g), 1e-3 * np.max(np.abs(g)))) <= 1e3 * eps
    fixed = Central(step=1e-3).steps(probe)
    assert np.array_equal(fixed, probe.snap(np.full(net.size, 1e-3, dtype=dtype)))


def test_series_remainder_bound_holds(monkeypatch):
    """What the tables certify at K terms is within the budget of the exact change, for every K up to five and
    budgets from loose (few terms) to tight (many): the certified remainder bound holds."""
    import layerkit.fast.series as series

    rng = np.random.default_rng(3)
    net = Network.from_sizes([4, 6, 5, 3], seed=4)
    X, y = 2 * rng.standard_normal((20, 4)), rng.integers(0, 3, 20)
    h = 0.05  # large enough that low orders are visibly truncated
    probe = _probe(net, X, y, lam=0.0)
    exact = _exact_deltas(net, X, y, np.full((1, net.size), h), monkeypatch, lam=0.0)[0] * probe.m
    certified = 0
    for K in range(1, 6):
        monkeypatch.setattr(series, "MAX_SERIES_TERMS", K)
        for name, tables in _tables(net, X, y, lam=0.0).items():
            b = net.layout[name]
            for budget in (1e-2, 1e-5, 1e-8, 1e-12):
                out = np.zeros((1, b.size))
                ok = tables.evaluate(np.full((1, b.size), h), budget, out)
                assert np.all(np.abs(out[0, ok] - exact[b.start:b.stop][ok]) <= budget + 1e-14), (name, K, budget)
                certified += int(ok.sum())
    assert certified > 0
    # the test exercises real truncation: one term is not enough at the tightest budget
    monkeypatch.setattr(series, "MAX_SERIES_TERMS", 1)
    tables = _tables(net, X, y, lam=0.0)["Theta1"]
    assert not tables.evaluate(np.full((1, 30), h), 1e-12, np.zeros((1, 30))).all()


def test_cauchy_bound_on_the_complex_circle():
    """|l_i(tau) - l_i(0)| <= M_r on |tau| = rho_r, evaluated with complex parameters."""
    rng = np.random.default_rng(5)
    net = Network.from_sizes([3, 4, 5, 2], seed=6)
    X, y = 3 * rng.standard_normal((6, 3)), rng.integers(0, 2, 6)
    theta = net.params.astype(complex)
    blocks = _tables(net, X, y, lam=0.0)
    for bd in net.bindings:
        b = net.layout[bd.block]
        series = blocks[bd.block]
        rows, cols = b.shape
        for r in range(rows):
            j = b.start + r * cols  # the bias column: tau = t for every example
            for ex in range(X.shape[0]):
                obj = net.objective(X[ex:ex + 1], y[ex:ex + 1], 0.0)
                base = obj.cost(theta)
                for angle in np.linspace(0, 2 * np.pi, 12, endpoint=False):
                    t = theta.copy()
                    t[j] += series.rho[r] * np.exp(1j * angle)
                    assert abs(obj.cost(t) - base) <= series.M[r] * (1 + 1e-12)


def test_large_steps_fall_back_to_the_exact_path_for_uncertified_entries(monkeypatch):
    import layerkit.fast.series as inc

    rng = np.random.default_rng(0)
    net = Network.from_sizes([5, 4, 3], seed=1)
    X, y = 300 * rng.random((20, 5)), rng.integers(0, 3, 20)  # unscaled inputs, like raw pixel values
    seen = []
    orig = inc.SeriesBlock.evaluate

    def spy(self, steps, budget, out):
        ok = orig(self, steps, budget, out)
        seen.append(ok.mean())
        return ok

    monkeypatch.setattr(inc.SeriesBlock, "evaluate", spy)
    # a fixed step, as a course's epsilon: relative to the pre-activations it is large on the raw columns
    fast = check_network(net, X, y, 1.0, "richardson", step=1e-3, engine="structured", diagnose=False)
    naive = check_network(net, X, y, 1.0, "richardson", step=1e-3, engine="generic", diagnose=False)
    assert 0 < min(seen) < 1  # some entries were not certified ...
    rel = np.linalg.norm(fast.numerical - naive.numerical) / np.linalg.norm(naive.numerical)
    assert rel < 1e-9 and fast.passed == naive.passed  # ... and were evaluated exactly


def test_subclass_with_its_own_forward_is_not_evaluated_with_the_parents_math():
    class Steeper(Sigmoid):
        def forward(self, x):
            return super().forward(2 * x)

        def backward(self, dy):
            return 2 * super().backward(dy)

    rng = np.random.default_rng(0)
    net = Network([Dense(4, 5), Steeper(), Dense(5, 3), Sigmoid()])
    net.init_random(0)
    X, y = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
    fast, naive, rel = _agreement(net, X, y, 1.0, "central")
    assert rel < 1 and fast.passed and naive.passed


def test_probe_reports_perturbations_as_evaluations(debug_problem):
    net, X, y = debug_problem
    r = check_network(net, X, y, 3.0, "richardson", engine="structured")
    # four perturbations per entry, one gradient evaluation and one verification (a row of every block
    # moved at once)
    assert r.n_evals == 4 * net.size + 1 + 1
    assert isinstance(NetworkProbe, type)


def test_steps_beyond_the_radius_leave_every_entry_to_the_exact_path(monkeypatch):
    import layerkit.fast.series as inc

    rng = np.random.default_rng(2)
    net = Network.from_sizes([4, 5, 3], seed=2)
    X, y = 3 * rng.standard_normal((15, 4)), rng.integers(0, 3, 15)
    seen, tables = [], []
    orig_eval, orig_table = inc.SeriesBlock.evaluate, inc.SeriesBlock.table

    def spy(self, steps, budget, out):
        ok = orig_eval(self, steps, budget, out)
        seen.append(ok.any())
        return ok

    monkeypatch.setattr(inc.SeriesBlock, "evaluate", spy)
    monkeypatch.setattr(inc.SeriesBlock, "table", lambda self, K: tables.append(K) or orig_table(self, K))
    fast = check_network(net, X, y, 1.0, "central", step=5.0, engine="structured", diagnose=False)
    naive = check_network(net, X, y, 1.0, "central", step=5.0, engine="generic", diagnose=False)
    assert seen and not any(seen) and not tables  # no table was built for nothing
    assert np.linalg.norm(fast.numerical - naive.numerical) <= 1e-12 * np.linalg.norm(naive.numerical)


from hypothesis import example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@settings(max_examples=40, deadline=None)
@given(sizes=st.lists(st.integers(1, 6), min_size=2, max_size=5), m=st.integers(1, 8),
       seed=st.integers(0, 2**16), method=st.sampled_from(["forward", "central", "richardson"]),
       scale=st.sampled_from([0.1, 1.0, 30.0]), dtype=st.sampled_from([np.float32, np.float64]))
@example(sizes=[3, 1], m=1, seed=1, method="richardson", scale=30.0, dtype=np.float64)  # was a false alarm before input scaling
def test_series_engine_agrees_with_the_generic_loop_on_random_networks(sizes, m, seed, method, scale, dtype):
    rng = np.random.default_rng(seed)
    net = Network.from_sizes(sizes, seed=seed, dtype=dtype)
    X, y = scale * rng.standard_normal((m, sizes[0])), rng.integers(0, sizes[-1], m)
    fast = check_network(net, X, y, 1.0, method, engine="structured", diagnose=False)
    naive = check_network(net, X, y, 1.0, method, engine="generic", diagnose=False)
    # the whole-cost loop may be unable to resolve a float32 gradient (forward differences at raw inputs):
    # it then says so (inconclusive), never that the gradient is wrong
    assert fast.passed and (naive.passed or naive.inconclusive)
    # both estimate the same differences; the generic loop's roundoff is what separates them
    assert np.all(np.abs(fast.numerical - naive.numerical) <= naive.tolerance)


def _kinked_net(act, seed=0):
    from layerkit import LeakyReLU, ReLU, Sigmoid, SoftmaxCrossEntropy  # noqa: F401

    layers = [Dense(6, 5, seed=seed), act(), Dense(5, 4, seed=seed + 1), act(), Dense(4, 3, seed=seed + 2)]
    return Network(layers, loss=SoftmaxCrossEntropy())


@pytest.mark.parametrize("act", ["ReLU", "LeakyReLU"])
@pytest.mark.parametrize("h", [6e-6, 7.4e-4, 1e-1])
def test_piecewise_linear_tables_agree_with_the_exact_path(act, h, monkeypatch):
    """ReLU and LeakyReLU layers after a block are read off the tables of their linear pieces: every entry
    agrees with the exact path within the budget, at steps small and large (the large ones move many examples
    across a kink: those entries are left to the exact path)."""
    import layerkit
    import layerkit.fast.series as series

    rng = np.random.default_rng(5)
    net = _kinked_net(getattr(layerkit, act))
    X, y = rng.standard_normal((40, 6)), rng.integers(0, 3, 40)
    certified = []
    orig = series.SeriesBlock.evaluate
    monkeypatch.setattr(series.SeriesBlock, "evaluate",
                        lambda self, *a: certified.append((self.i, orig(self, *a))) or certified[-1][1])
    steps = np.stack([np.full(net.size, h), np.full(net.size, -h), np.full(net.size, h / 2)])
    probe = _probe(net, X, y)
    fast = probe.delta(steps)
    assert {i for i, _ in certified} == {0, 2, 4}  # every block, the ones before kinked layers included
    exact = _exact_deltas(net, X, y, steps, monkeypatch)
    assert np.max(np.abs(fast - exact)) <= 2 * probe.loss.budget() / probe.m
    assert not probe.notes
    first = dict(certified)[0]
    if h >= 1e-1:
        assert not first.all()  # steps this large reach a kink on some example: those entries are exact
    else:
        assert first.mean() > 0.5  # small steps stay on the pieces: most entries are read off the tables


def test_an_example_on_a_kink_leaves_its_unit_to_the_exact_path():
    """A pre-activation exactly at ReLU's kink (0) clears no step: every entry of that unit's row whose input is
    not 0 on that example is evaluated by the exact path; the other rows stay on the tables."""
    from layerkit import ReLU, SoftmaxCrossEntropy

    rng = np.random.default_rng(6)
    net = Network([Dense(4, 3, seed=1), ReLU(), Dense(3, 2, seed=2)], loss=SoftmaxCrossEntropy())
    X, y = rng.standard_normal((10, 4)), rng.integers(0, 2, 10)
    theta = net.params[net.layout["Theta1"].slice].reshape(3, 5)
    theta[1, 0] = -(X[0] @ theta[1, 1:])  # unit 1 sits on its kink at example 0
    tables = _tables(net, X, y)["Theta1"]
    ok = tables.evaluate(np.full((1, 15), 1e-6), 1e-3, np.zeros((1, 15))).reshape(3, 5)
    assert not ok[1].any() and ok[[0, 2]].all()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_tables_summed_over_blocks_of_examples_are_the_tables_of_blocks_of_columns(dtype, monkeypatch):
    """A 2-D input's tables are summed over blocks of examples (several here); they and the rounding scales
    agree with the products over blocks of columns of ``F = [1, x]`` to the products' own rounding."""
    import layerkit.fast.series as series

    monkeypatch.setattr(series, "MAX_BATCH_ELEMENTS", 64)
    rng = np.random.default_rng(3)
    net = Network.from_sizes([7, 5, 4, 3], seed=1, dtype=dtype)
    X, y = (3 * rng.standard_normal((50, 7))).astype(dtype), rng.integers(0, 3, 50)
    eps = float(np.finfo(dtype).eps)
    for block in _tables(net, X, y).values():
        G = block._coefficients(4)
        by_rows, R_rows = block._products_by_rows(G, 4, True)
        by_cols, R_cols = block._products_by_columns(G, 4, True)
        Fk = np.abs(block.F.columns(0, block.cols, np.float64))
        for k in range(4):  # each entry within its products' rounding: 50 terms of |G_k| |F|^(k+1)
            scale = np.abs(G[k]).astype(np.float64) @ Fk ** (k + 1)
            assert np.all(np.abs(by_rows[k] - by_cols[k]) <= 64 * eps * scale + 1e-300)
        assert np.allclose(R_rows, R_cols, rtol=64 * eps, atol=0)


@pytest.mark.parametrize("acts", [("Sigmoid", "Tanh"), ("ReLU", "Sigmoid"), ("Tanh", "LeakyReLU")])
@pytest.mark.parametrize("loss", [None, "SoftmaxCrossEntropy", "MeanSquaredError"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_a_pair_carried_to_the_loss_gives_the_layers_own_coefficients(acts, loss, dtype, monkeypatch):
    """A block two elementwise layers before the logits: its per-example coefficients, with the last
    elementwise layer and the linear one after it carried to the loss at once, are those of composing each
    layer's own series, to rounding, for every number of terms."""
    import layerkit
    import layerkit.fast.series as series

    rng = np.random.default_rng(4)
    hidden = [getattr(layerkit, a)() for a in acts]
    layers = [Dense(7, 6), hidden[0], Dense(6, 5), hidden[1], Dense(5, 4)]
    if loss is None:
        net = Network(layers + [Sigmoid()], dtype=dtype)
    else:
        net = Network(layers, loss=getattr(layerkit, loss)(), dtype=dtype)
    net.init_random(3)
    X = (2 * rng.standard_normal((40, 7))).astype(dtype)
    y = rng.standard_normal((40, 4)) if loss == "MeanSquaredError" else rng.integers(0, 4, 40)
    block = _tables(net, X, y)["Theta1"]
    eps = float(np.finfo(dtype).eps)
    for K in (1, 2, 3, 4):
        assert block._pair(K) == 3
        fused = block._coefficients(K).astype(np.float64)
        with monkeypatch.context() as mp:
            mp.setattr(series.SeriesBlock, "_pair", lambda self, K: None)
            own = block._coefficients(K).astype(np.float64)
        scale = np.max(np.abs(own), axis=(1, 2), keepdims=True)
        assert np.all(np.abs(fused - own) <= 64 * eps * scale), K
