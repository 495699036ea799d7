"""Losses and the L2 penalty as objects (layerkit.nn.losses), and their engine rules."""

import numpy as np
import pytest

import layerkit
from layerkit import (
    L2,
    Dense,
    Identity,
    InputError,
    MeanSquaredError,
    Network,
    ReLU,
    Sigmoid,
    SigmoidCrossEntropy,
    SoftmaxCrossEntropy,
    Tanh,
    check_network,
)

RNG = np.random.default_rng(11)
X = RNG.standard_normal((12, 4))


def _softmax_net(dtype=np.float64):
    net = Network([Dense(4, 5), Tanh(), Dense(5, 3)], loss=SoftmaxCrossEntropy(), dtype=dtype)
    net.init_random(1)
    return net


def _mse_net(outputs=2, dtype=np.float64):
    net = Network([Dense(4, 5), Sigmoid(), Dense(5, outputs)], loss=MeanSquaredError(), dtype=dtype)
    net.init_random(2)
    return net


def test_the_default_loss_is_todays_course_cost():
    a = Network.from_sizes([4, 5, 3], seed=0)
    b = Network([Dense(4, 5), Sigmoid(), Dense(5, 3), Sigmoid()], loss=SigmoidCrossEntropy())
    b.params = a.params
    y = RNG.integers(0, 3, 12)
    assert a.cost(X, y, 1.0) == b.cost(X, y, 1.0)
    assert np.array_equal(a.cost_and_gradient(X, y, 1.0)[1], b.cost_and_gradient(X, y, 1.0)[1])


def test_softmax_cost_gradient_and_predictions_against_a_direct_formula():
    net = _softmax_net()
    y = RNG.integers(0, 3, 12)
    T1, T2 = net.layers[0].Theta, net.layers[2].Theta
    z = np.tanh(X @ T1[:, 1:].T + T1[:, 0]) @ T2[:, 1:].T + T2[:, 0]
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    lam = 2.0
    expect = -np.mean(np.log(p[np.arange(12), y])) + lam / 24 * (np.sum(T1[:, 1:] ** 2) + np.sum(T2[:, 1:] ** 2))
    assert net.cost(X, y, lam) == pytest.approx(expect, rel=1e-13)
    np.testing.assert_allclose(net.predict_proba(X), p, rtol=1e-13)
    assert np.array_equal(net.predict(X), np.argmax(p, axis=1))
    big = _softmax_net()
    big.params = big.params * 300  # logits in the thousands: log-softmax stays finite
    assert np.isfinite(big.cost(X, y, 0.0)) and np.all(np.isfinite(big.cost_and_gradient(X, y, 0.0)[1]))


def test_squared_error_cost_and_predictions():
    net = _mse_net()
    Y = RNG.standard_normal((12, 2))
    out = net.predict(X)
    assert out.shape == (12, 2)
    assert net.cost(X, Y, 0.0) == pytest.approx(0.5 * np.sum((out - Y) ** 2) / 12, rel=1e-13)
    one = _mse_net(outputs=1)
    assert one.predict(X).shape == (12,)
    assert one.cost(X, Y[:, 0], 0.0) == pytest.approx(one.cost(X, Y[:, :1], 0.0))
    with pytest.raises(InputError, match="regression loss"):
        net.predict_proba(X)


@pytest.mark.parametrize("loss, y, match", [
    (SoftmaxCrossEntropy(), np.full(12, 3), "labels in 0..2"),
    (SoftmaxCrossEntropy(), np.full((12, 3), 0.5), "probability rows"),
    (SoftmaxCrossEntropy(), np.full(12, 0.5), "integer class labels"),
    (MeanSquaredError(), np.full((12, 3), np.nan), "finite target values"),
    (MeanSquaredError(), np.zeros(12), r"an \(m, 3\) target matrix"),
    (SigmoidCrossEntropy(), np.full((12, 3), 2.0), r"values in \[0, 1\]"),
])
def test_each_loss_validates_its_labels(loss, y, match):
    layers = [Dense(4, 3)] + ([Sigmoid()] if isinstance(loss, SigmoidCrossEntropy) else [])
    net = Network(layers, loss=loss)
    with pytest.raises(InputError, match=match):
        net.cost(X, y)


def test_bad_loss_and_penalty_arguments_are_named():
    with pytest.raises(InputError, match="loss"):
        Network([Dense(4, 3)], loss=SoftmaxCrossEntropy)
    with pytest.raises(InputError, match="penalty"):
        Network([Dense(4, 3)], penalty="l2")
    with pytest.raises(InputError, match="one of"):
        L2({0: "bias"})
    with pytest.raises(InputError, match="layer position"):
        Network([Dense(4, 3)], loss=SoftmaxCrossEntropy(), penalty=L2({5: "all"}))
    with pytest.raises(InputError, match="end the network with Sigmoid"):
        Network([Dense(4, 3), Sigmoid(), Dense(3, 2)])  # sigmoid cross-entropy on unbounded outputs: NaN


def test_the_penalty_exempts_bias_columns_unless_a_layer_says_otherwise():
    first = Dense(4, 5)
    net = Network([first, Tanh(), Dense(5, 3)], loss=SoftmaxCrossEntropy(), penalty=L2({first: "all", 2: "none"}))
    mask = net.penalized_mask()
    assert mask[:25].all() and not mask[25:].any()
    default = Network([Dense(4, 5), Tanh(), Dense(5, 3)], loss=SoftmaxCrossEntropy()).penalized_mask()
    assert default.reshape(-1)[:25].reshape(5, 5)[:, 0].sum() == 0 and default[:25].sum() == 20
    y = RNG.integers(0, 3, 12)
    net.init_random(0)
    g0 = net.cost_and_gradient(X, y, 0.0)[1]
    g1 = net.cost_and_gradient(X, y, 2.4)[1]
    np.testing.assert_allclose(g1 - g0, np.where(mask, 2.4 / 12 * net.params, 0.0), atol=1e-15)
    assert check_network(net, X, y, 2.4).passed


@pytest.mark.parametrize("make", [_softmax_net, _mse_net])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_engine_agrees_with_the_generic_path_for_every_loss(make, dtype):
    net = make(dtype=dtype)
    y = RNG.integers(0, 3, 12) if make is _softmax_net else RNG.standard_normal((12, 2))
    for mode in ("full", "directional"):
        fast = check_network(net, X, y, 1.0, mode=mode)
        slow = check_network(net, X, y, 1.0, mode=mode, engine="generic")
        assert fast.passed and slow.passed
    full = check_network(net, X, y, 1.0)
    slow = check_network(net, X, y, 1.0, engine="generic")
    scale = np.max(np.abs(full.analytical))
    assert np.max(np.abs(full.numerical - slow.numerical)) <= (1e-6 if dtype == np.float64 else 1e-1) * scale


@pytest.mark.parametrize("make", [_softmax_net, _mse_net])
def test_a_wrong_gradient_fails_for_every_loss(make):
    from layerkit.testing import plant_gradient_error

    net = make()
    y = RNG.integers(0, 3, 12) if make is _softmax_net else RNG.standard_normal((12, 2))
    for j in (3, 27, net.size - 1):
        bad = plant_gradient_error(net, j, rel=1e-4)
        report = check_network(bad, X, y, 1.0)
        assert not report.passed and report.worst[0].flat_index == j
        assert not check_network(bad, X, y, 1.0, mode="directional").passed


def test_a_regression_network_ends_with_a_linear_or_identity_layer():
    net = Network([Dense(4, 6), ReLU(), Dense(6, 1), Identity()], loss=MeanSquaredError())
    net.init_random(3)
    y = RNG.standard_normal(12)
    assert check_network(net, X, y, 0.5).passed
    assert repr(net).startswith("Network([Dense(4, 6), ReLU(), Dense(6, 1), Identity()], MeanSquaredError()")


def test_loss_rules_apply_only_to_layerkits_own_losses():
    from layerkit.fast.loss_rules import has_loss_rule

    class Huberish(MeanSquaredError):
        def value_and_grad(self, out, Y, fused=False):
            r = out - Y
            return np.sum(np.sqrt(1 + r * r) - 1), r / np.sqrt(1 + r * r)

    net = Network([Dense(4, 2)], loss=Huberish())
    assert not has_loss_rule(net) and has_loss_rule(Network([Dense(4, 2)], loss=MeanSquaredError()))
    Y = RNG.standard_normal((12, 2))
    assert check_network(net, X, Y, 0.0).passed  # checked through its own cost
    assert layerkit.Loss in type(net.loss).__mro__


def test_softmax_targets_that_sum_to_one_only_up_to_rounding_get_the_exact_gradient():
    net = Network([Dense(4, 3)], loss=SoftmaxCrossEntropy())
    net.init_random(0)
    Y = np.full((12, 3), 1 / 3) * (1 + 9e-7)
    assert check_network(net, X, Y, 0.0).passed
    z = X @ net.layers[0].Theta[:, 1:].T + net.layers[0].Theta[:, 0]
    p = np.exp(z) / np.exp(z).sum(axis=1, keepdims=True)
    g = net.cost_and_gradient(X, Y, 0.0)[1].reshape(3, 5)
    dz = (Y.sum(axis=1, keepdims=True) * p - Y) / 12
    np.testing.assert_allclose(g[:, 1:], dz.T @ X, atol=1e-15)


def _confidently_wrong_net():
    """A float32 softmax network whose logits differ by hundreds: the float32 probability of some example's own
    class is exactly 0 (its loss is finite, about the gap of its logits)."""
    rng = np.random.default_rng(3)
    net = Network([Dense(4, 6), Tanh(), Dense(6, 3)], loss=SoftmaxCrossEntropy(), dtype=np.float32)
    net.init_random(3)
    net.params = net.params * 100
    return net, rng.standard_normal((8, 4)).astype(np.float32), rng.integers(0, 3, 8)


def test_a_confidently_wrong_float32_softmax_network_is_checked_by_the_engine_without_a_false_alarm():
    net, X, y = _confidently_wrong_net()
    p = net.predict_proba(X)
    assert p.dtype == np.float32 and np.any(p[np.arange(8), y] == 0)  # an example's own class underflows
    report = check_network(net, X, y, 0.0)
    assert report.passed and report.evaluator == "engine", str(report)
    assert np.all(np.isfinite(report.numerical))
    generic = check_network(net, X, y, 0.0, engine="generic")
    assert generic.passed
    scale = np.max(np.abs(report.analytical))
    assert np.max(np.abs(report.numerical - generic.numerical)) <= 0.05 * scale
    assert str(check_network(net, X, y, 0.0, mode="directional")).split()[0] != "FAILED"


@pytest.mark.parametrize("j, rel", [(0, 0.1), (3, 1e-2), (30, 1e-3), (50, 1e-3)])
def test_a_wrong_gradient_of_a_confidently_wrong_float32_softmax_network_fails(j, rel):
    from layerkit.testing import plant_gradient_error

    net, X, y = _confidently_wrong_net()
    report = check_network(plant_gradient_error(net, j, rel=rel), X, y, 0.0)
    assert str(report).startswith("FAILED") and report.worst[0].flat_index == j, str(report)
    assert report.evaluator == "engine"


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("one_hot", [True, False])
def test_softmax_loss_changes_are_finite_and_exact_when_probabilities_underflow(dtype, one_hot):
    """Every change the softmax rule computes (dense, one logit, rank one) against float64 differences of the
    loss, on logits where probabilities are exact zeros in their dtype (one row even in float64), with the
    own class's among them, and for changes up to hundreds (beyond float32's ``expm1``)."""
    from layerkit.fast.loss_rules import SoftmaxCrossEntropyTerms
    from layerkit.nn.losses import log_softmax

    rng = np.random.default_rng(5 + one_hot)
    m, n, B = 9, 3, 4
    Z = 120 * rng.standard_normal((m, n))
    Z[0] = (900, -900, 0)
    Z = Z.astype(dtype)
    labels = np.argmin(Z, axis=1)  # every example's own class is its least likely one
    Y = np.eye(n)[labels] if one_hot else 0.8 * np.eye(n)[labels] + 0.1
    Y = Y.astype(dtype)
    terms = SoftmaxCrossEntropyTerms(Z, Y)
    assert np.any(terms.P[np.arange(m), labels] == 0)
    Z64, Y64 = Z.astype(np.float64), Y.astype(np.float64)
    loss = lambda z: -np.sum(Y64 * log_softmax(z), axis=-1)  # noqa: E731

    def truth(d):
        each = np.stack([loss(Z64 + d[b].astype(np.float64)) - loss(Z64) for b in range(d.shape[0])])
        return each.sum(axis=1), 64 * float(np.finfo(dtype).eps) * np.abs(each).sum(axis=1) + 1e-9

    for size in (1e-3, 1.0, 30.0, 300.0):
        d = (size * rng.standard_normal((B, m, n))).astype(dtype)
        expect, tol = truth(d)
        got = terms.dense(d)
        assert np.all(np.isfinite(got)) and np.all(np.abs(got - expect) <= tol), (size, got, expect)
        for k in range(n):
            dk = np.zeros_like(d)
            dk[:, :, k] = d[:, :, 0]
            expect, tol = truth(dk)
            got = terms.column(k, d[:, :, 0])
            assert np.all(np.isfinite(got)) and np.all(np.abs(got - expect) <= tol), (size, k, got, expect)
        u, v = d[:, :, 0], rng.standard_normal(n).astype(dtype)
        expect, tol = truth(u[:, :, None] * v[None, None, :])
        got = terms.rank_one(u, v)
        assert np.all(np.isfinite(got)) and np.all(np.abs(got - expect) <= tol + terms.budget()), (size, got, expect)


@pytest.mark.parametrize("one_hot", [True, False])
@pytest.mark.parametrize("K", [1, 3, 8])
def test_the_softmax_series_of_a_rank_one_change_is_the_series_of_its_dense_form(one_hot, K):
    """The rank-one branch of the softmax cross-entropy's series (moments of the logit offsets composed with
    the powers of ``c``) against the general branch on the same change written out densely, and both against
    the loss itself: ``sum_k G_k tau^k`` is the loss change at a small ``tau``."""
    from layerkit.fast.changes import SeriesChange
    from layerkit.fast.loss_rules import SoftmaxCrossEntropyTerms
    from layerkit.nn.losses import log_softmax

    rng = np.random.default_rng(K + 10 * one_hot)
    m, n, B = 9, 4, 3
    Z = 3 * rng.standard_normal((m, n))
    Y = np.eye(n)[rng.integers(0, n, m)] if one_hot else rng.dirichlet(np.ones(n), m) * rng.uniform(0.5, 2, (m, 1))
    terms = SoftmaxCrossEntropyTerms(Z, Y)
    c, v = rng.standard_normal((K, B, m)), rng.standard_normal((B, n))
    rank_one = terms.series(SeriesChange(c, v=v))
    dense = terms.series(SeriesChange(c[..., None] * v[None, :, None, :]))
    assert np.allclose(rank_one, dense, rtol=1e-12, atol=1e-12 * np.max(np.abs(dense)))
    tau = 1e-3
    d = np.einsum("kbi,bn->bin", c * tau ** np.arange(1, K + 1)[:, None, None], v)  # logit change (B, m, n)
    loss = lambda z: -np.sum(Y * log_softmax(z), axis=-1)  # noqa: E731
    exact = np.stack([loss(Z + d[b]) - loss(Z) for b in range(B)])
    approx = np.einsum("kbi,k->bi", rank_one, tau ** np.arange(1, K + 1))
    assert np.max(np.abs(approx - exact)) <= 10 * tau ** (K + 1) * np.max(np.abs(c)) ** (K + 1) * np.max(np.abs(v)) ** (
        K + 1) * (K + 1) ** 2 + 1e-13


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("one_hot", [True, False])
def test_the_softmax_series_of_a_column_change_is_the_series_of_its_dense_form(one_hot, dtype):
    """The column branch (two exponential series: the changed logit is the example's class or not) against
    the general branch on the same change written out densely, in float64; every class is some example's."""
    from layerkit.fast.changes import SeriesChange
    from layerkit.fast.loss_rules import SoftmaxCrossEntropyTerms

    rng = np.random.default_rng(7 + one_hot)
    m, n, B, K = 40, 4, 6, 4
    Z = (3 * rng.standard_normal((m, n))).astype(dtype)
    Y = np.eye(n)[np.arange(m) % n] if one_hot else rng.dirichlet(np.ones(n), m) * rng.uniform(0.5, 2, (m, 1))
    Y = Y.astype(dtype)
    cols = rng.integers(0, n, B)
    c = rng.standard_normal((K, B, m)).astype(dtype)
    column = SoftmaxCrossEntropyTerms(Z, Y).series(SeriesChange(c, cols=cols))
    dense = np.zeros((K, B, m, n))
    dense[:, np.arange(B), :, cols] = np.moveaxis(c, 1, 0)
    truth = SoftmaxCrossEntropyTerms(Z.astype(np.float64), Y.astype(np.float64)).series(SeriesChange(dense))
    eps = float(np.finfo(dtype).eps)
    assert np.allclose(column, truth, rtol=64 * eps, atol=64 * eps * np.max(np.abs(truth)))
