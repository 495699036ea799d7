"""Property tests over user layers: a derivative wrong only on a region that 1 to 3 examples among up to 5,000
reach, with the layer's ``taylor`` and change members wrong in the same way, is never passed; the correct twin
is never failed.

Each case draws a layer family, a wrong region, the number of examples that reach it and their places among the
others, and a network seed.  ``LAYERKIT_PROPERTY_SCALE=10`` runs ten times as many cases (by hand, before a
release); CI runs the default.
"""

import os

import numpy as np
import pytest
from helpers import PlainTanh

from layerkit import Dense, Elementwise, Network, Sigmoid, check_network
from layerkit.fast.changes import ColumnChange, DenseChange

SCALE = int(os.environ.get("LAYERKIT_PROPERTY_SCALE", "1"))
#: The pre-activation the chosen examples are driven to, and where the derivative turns wrong.
REACH, EDGE = 3.5, 3.0

FUNCTIONS = {
    # name: (fn, its true derivative, a wrong one used beyond the edge)
    "tanh": (np.tanh, lambda x: 1 / np.cosh(x) ** 2, lambda x: np.ones_like(x)),
    "softplus": (lambda x: np.log1p(np.exp(x)), lambda x: 1 / (1 + np.exp(-x)), lambda x: 0.5 + 0 * x),
    "softsign": (lambda x: x / (1 + np.abs(x)), lambda x: 1 / (1 + np.abs(x)) ** 2, lambda x: 2 / (1 + np.abs(x)) ** 2),
    "wiggle": (lambda x: x + 0.1 * np.sin(x), lambda x: 1 + 0.1 * np.cos(x), lambda x: 1 - 0.1 * np.cos(x)),
}


def _derivative(name, wrong):
    _, d, bad = FUNCTIONS[name]

    def derivative(x):
        with np.errstate(over="ignore"):
            return np.where(np.abs(x) > EDGE, bad(x), d(x)) if wrong else d(x)

    return derivative


def _coefficients(name, x, K):
    """``f^(n)(x) / n!`` for ``n = 1..K`` of the true function, shape ``(K,) + x.shape``."""
    n = np.arange(1, K + 1).reshape((K,) + (1,) * x.ndim)
    if name == "tanh":
        from layerkit import Tanh

        return Tanh().taylor(x, np.tanh(x), K)
    if name == "softplus":
        from layerkit.fast.changes import sigmoid_series

        s = 1 / (1 + np.exp(-x))
        out = np.empty((K,) + x.shape)
        out[0] = s
        if K > 1:
            out[1:] = sigmoid_series(s, 1 / (1 + np.exp(x)), None, K - 1) / np.arange(2, K + 1)[:, None, None]
        return out
    if name == "softsign":  # 1 - 1/(1 + x) for x > 0, -1 + 1/(1 - x) for x < 0
        return np.where(x > 0, (-1.0) ** (n + 1) / (1 + x) ** (n + 1), 1 / (1 - x) ** (n + 1))
    # x + 0.1 sin x
    from math import factorial

    shifts = [np.sin(x + k * np.pi / 2) for k in range(1, K + 1)]
    out = np.stack([0.1 * shifts[k] / factorial(k + 1) for k in range(K)])
    out[0] += 1
    return out


def elementwise_layer(name, wrong):
    """A user's Elementwise layer: ``derivative`` and ``taylor`` from the same (possibly wrong) helper -- the
    true Taylor coefficients but the first, which is the helper's -- with a strip and slope of its own."""
    fn = FUNCTIONS[name][0]
    derivative = _derivative(name, wrong)

    class User(Elementwise):
        strip, slope = np.pi / 4, 2.0

        def fn(self, x):
            return fn(x)

        def derivative(self, x, y):
            return derivative(x)

        def taylor(self, x, y, K):
            out = _coefficients(name, x, K)
            out[0] = derivative(x)
            return out

    User.__name__ = f"User{name.title()}"
    return User()


def plain_layer(name, wrong):
    """A plain user layer whose backward and change member share the (possibly wrong) helper."""
    fn = FUNCTIONS[name][0]
    derivative = _derivative(name, wrong)

    class Plain(PlainTanh):
        def forward(self, x):
            self._x = x
            return fn(x)

        def backward(self, dy):
            return dy * derivative(self._x)

        def propagate(self, x, y, change):  # first order on the same helper
            if isinstance(change, ColumnChange):
                return ColumnChange(change.col, change.delta * derivative(x[:, change.col])[None])
            return DenseChange(change.dense(x.shape) * derivative(x)[None])

    Plain.__name__ = f"Plain{name.title()}"
    return Plain()


def cases(rng, per_kind):
    """``per_kind`` draws of (m, k, seed) for every layer family and function."""
    for family in (elementwise_layer, plain_layer):
        for name in FUNCTIONS:
            for _ in range(per_kind):
                yield family, name, int(rng.choice([60, 400, 5000])), int(rng.integers(1, 4)), int(rng.integers(1 << 30))


def build(family, name, m, k, seed, wrong):
    """The network, and inputs of ``m`` examples of which ``k`` (at random places) drive one unit past the
    edge; None when the draw does not keep the others below it."""
    rng = np.random.default_rng(seed)
    net = Network([Dense(4, 8), family(name, wrong), Dense(8, 3), Sigmoid()])
    net.init_random(seed % 1000)
    X = 0.2 * rng.standard_normal((m, 4))
    W, b = net.layers[0].Theta[:, 1:], net.layers[0].Theta[:, 0]
    unit = int(rng.integers(8))
    where = rng.choice(m, size=k, replace=False)
    w = W[unit]
    X[where] = (REACH - b[unit]) * w / (w @ w) + 0.01 * rng.standard_normal((k, 4))
    z = X @ W.T + b
    beyond = np.abs(z) > EDGE
    if beyond.sum() != k or not beyond[where, unit].all():
        return None
    return net, X, rng.integers(0, 3, m)


#: Draws per layer family and function (8 of those): 24 cases in CI, 240 by hand.
PER_KIND = 3 * SCALE


@pytest.mark.slow
def test_a_derivative_wrong_on_a_few_examples_is_never_passed_and_its_twin_never_failed():
    rng = np.random.default_rng(20261203)
    done = []
    for family, name, m, k, seed in cases(rng, PER_KIND):
        for attempt in range(20):  # another seed when the draw puts other examples past the edge
            wrong = build(family, name, m, k, seed + attempt, wrong=True)
            if wrong is not None:
                break
        assert wrong is not None
        right = build(family, name, m, k, seed + attempt, wrong=False)
        label = (family.__name__, name, m, k, seed + attempt)
        bad = check_network(*wrong, 0.0)
        assert not bad.passed, (label, str(bad))
        good = check_network(*right, 0.0)
        assert good.passed, (label, str(good))
        done.append(label)
    assert len(done) == 8 * PER_KIND and {c[2] for c in done} >= {5000} and {c[3] for c in done} == {1, 2, 3}
