"""The structured network probe must reproduce the naive loop's numerical gradient exactly."""

import numpy as np
import pytest

from layerkit import Dense, Network, Sigmoid, check_network
from layerkit.changes import ColumnChange, RankOneChange, sigmoid_change, softplus_change
from layerkit.incremental import NetworkProbe


def _agreement(net, X, y, lam, method):
    fast = check_network(net, X, y, lam, method, engine="structured", diagnose=False)
    naive = check_network(net, X, y, lam, method, engine="generic", diagnose=False)
    rel = np.linalg.norm(fast.numerical - naive.numerical) / np.linalg.norm(naive.numerical)
    return fast, naive, rel


@pytest.mark.parametrize("sizes", [[3, 5, 3], [7, 6, 4], [6, 5, 4, 3], [5, 4, 6, 3, 2]])
@pytest.mark.parametrize("method", ["central", "richardson"])
@pytest.mark.parametrize("lam", [0.0, 2.0])
def test_structured_equals_naive_at_any_depth(sizes, method, lam):
    rng = np.random.default_rng(len(sizes))
    net = Network.from_sizes(sizes, seed=3)
    X, y = rng.standard_normal((25, sizes[0])), rng.integers(0, sizes[-1], 25)
    fast, naive, rel = _agreement(net, X, y, lam, method)
    assert rel < 1e-9
    assert fast.passed == naive.passed
    assert fast.n_evals == naive.n_evals


def test_forward_method_also_agrees():
    rng = np.random.default_rng(0)
    net = Network.from_sizes([6, 5, 4], seed=1)
    X, y = rng.standard_normal((30, 6)), rng.integers(0, 4, 30)
    fast, naive, rel = _agreement(net, X, y, 1.0, "forward")
    # forward differences carry the naive loop's roundoff, eps |J| / h ~ 1e-8 relative: the structured probe
    # is compared with the exact gradient instead, which it matches to the forward method's truncation
    _, g = net.cost_and_gradient(X, y, 1.0)
    assert np.linalg.norm(fast.numerical - g) / np.linalg.norm(g) < 1e-6
    assert rel < 1e-6 and fast.passed and naive.passed


def test_custom_layers_take_the_generic_path():
    from custom_layer import Tanh

    rng = np.random.default_rng(1)
    net = Network([Dense(4, 5), Tanh(), Dense(5, 3), Sigmoid()])
    net.init_random(2)
    X, y = rng.standard_normal((10, 4)), rng.integers(0, 3, 10)
    fast, naive, rel = _agreement(net, X, y, 1.0, "central")
    assert rel < 1e-9 and fast.passed


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
    z = np.array([-40.0, -3.0, 0.0, 2.0, 35.0])
    d = np.array([1e-7, -2e-3, 0.5, -1e-9, 3.0])
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
    np.testing.assert_allclose(sigmoid_change(s, s * sc, d), ref, rtol=1e-9)
    sp = [float(np.log1p(np.exp(L(zi) + L(di))) - np.log1p(np.exp(L(zi)))) for zi, di in zip(z, d)]
    np.testing.assert_allclose(softplus_change(s, d), sp, rtol=1e-9)


def test_dense_turns_a_column_change_into_rank_one():
    layer = Dense(3, 4, seed=0)
    x = np.random.default_rng(0).standard_normal((6, 3))
    y = layer.forward(x)
    ch = layer.param_change("Theta", 2, np.array([0, 2]), np.array([1e-3, -2e-3]), x)
    assert isinstance(ch, ColumnChange) and ch.col == 2
    theta = layer.Theta.copy()
    for b, (c, s) in enumerate([(0, 1e-3), (2, -2e-3)]):
        t = theta.copy()
        t[2, c] += s
        np.testing.assert_allclose(ch.dense(y.shape)[b], (x @ t[:, 1:].T + t[:, 0]) - y, atol=1e-15)
    nxt = Dense(4, 2, seed=1)
    out = nxt.propagate(y, nxt.forward(y), ch)
    assert isinstance(out, RankOneChange)
    np.testing.assert_allclose(out.dense((6, 2)), ch.dense(y.shape) @ nxt.Theta[:, 1:].T, atol=1e-15)


def test_batches_stay_bounded(monkeypatch):
    import layerkit.incremental as inc

    monkeypatch.setattr(inc, "MAX_BATCH_ELEMENTS", 2000)
    rng = np.random.default_rng(0)
    net = Network.from_sizes([12, 10, 8, 3], seed=0)
    X, y = rng.standard_normal((40, 12)), rng.integers(0, 3, 40)
    largest = []
    orig = inc.NetworkProbe._loss_change

    def spy(self, change):
        arr = getattr(change, "delta", getattr(change, "u", None))
        largest.append(arr.size * (1 if isinstance(change, RankOneChange) else 1))
        return orig(self, change)

    monkeypatch.setattr(inc.NetworkProbe, "_loss_change", spy)
    fast, naive, rel = _agreement(net, X, y, 1.0, "central")
    assert rel < 1e-9 and max(largest) <= 2000 * 3


def test_probe_reports_perturbations_as_evaluations(debug_problem):
    net, X, y = debug_problem
    r = check_network(net, X, y, 3.0, "richardson", engine="structured")
    assert r.n_evals == 4 * net.size + 1
    assert isinstance(NetworkProbe, type)
