"""A layer written outside layerkit -- Tanh -- used in a Network and checked like the built-in ones.

A layer needs only ``param_shapes``, ``params``, ``grads``, ``bind``, ``forward`` and ``backward``
(see :class:`layerkit.Layer`).  Run:  python examples/custom_layer.py
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
