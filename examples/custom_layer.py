"""Layers written outside layerkit, used in a Network and checked like the built-in ones.

``Tanh`` needs nothing of layerkit: a layer is any object with ``param_shapes``, ``params``, ``grads``,
``bind``, ``forward`` and ``backward`` (see :class:`layerkit.Layer`).  ``Softsign`` and ``Softplus`` are
written on :class:`layerkit.Elementwise` instead: ``fn`` and ``derivative`` give a layer with forward and
backward; a network check derives everything else from ``fn`` (Taylor tables when ``fn`` is analytic, as
Softplus's is; exact changes when it is not, as Softsign's ``abs`` makes it).  Run:  python examples/custom_layer.py
"""

from __future__ import annotations

import numpy as np

import layerkit
from layerkit import Dense, Network, Sigmoid


class Tanh:
    """Elementwise ``tanh``; caches its output, since ``d tanh(x)/dx = 1 - tanh(x)^2``."""

    param_shapes: dict = {}
    params: dict = {}
    grads: dict = {}

    def __init__(self):
        self._y = None

    def bind(self, params, grads):
        pass  # no parameters

    def forward(self, x):
        self._y = np.tanh(x)
        return self._y

    def backward(self, dy):
        if self._y is None:
            raise layerkit.NotForwardedError("Tanh.backward was called before Tanh.forward")
        return dy * (1 - self._y**2)

    def __repr__(self):
        return "Tanh()"


class Softsign(layerkit.Elementwise):
    """``x / (1 + |x|)``: not analytic (``abs``), so the engine takes its exact per-perturbation path."""

    def fn(self, x):
        return x / (1 + np.abs(x))

    def derivative(self, x, y):
        return (1 - np.abs(y)) ** 2


class Softplus(layerkit.Elementwise):
    """``log(1 + e^x)``: analytic, so a network check reads it off Taylor tables derived from ``fn`` itself."""

    def fn(self, x):
        return np.log1p(np.exp(x))

    def derivative(self, x, y):
        return 1 / (1 + np.exp(-x))


def main() -> tuple[layerkit.Report, layerkit.Report]:
    rng = np.random.default_rng(0)
    net = Network([Dense(4, 6), Tanh(), Dense(6, 3), Sigmoid()])
    net.init_random(seed=0)
    X = rng.standard_normal((20, 4))
    y = rng.integers(0, 3, 20)
    layer_report = layerkit.check_layer(Tanh(), rng.standard_normal((5, 6)))
    net_report = layerkit.check_network(net, X, y, lambda_=1.0)
    print(layer_report.verdict)
    print(net_report)
    result = net.fit(X, y, lambda_=1.0, max_iter=200)
    print(f"trained: cost {result.cost:.4f} after {result.n_iter} iterations, "
          f"training accuracy {np.mean(net.predict(X) == y):.2f}")
    return layer_report, net_report


if __name__ == "__main__":
    main()
