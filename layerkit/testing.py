"""One-line gradient assertions for users' own test suites.

Each function runs a check and raises ``AssertionError`` carrying the full report (verdict, blocks, worst
entries, findings) when it fails, so pytest shows *where* and *why*; it returns the report otherwise::

    from layerkit.testing import assert_layer_gradients

    def test_my_layer():
        assert_layer_gradients(MyLayer(4, 3), np.random.default_rng(0).standard_normal((5, 4)))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from numpy.typing import NDArray

from ._validate import describe
from .api import check_function, check_layer, check_network
from .check.report import Report
from .errors import InputError
from .nn.layers import Layer
from .nn.network import Network

__all__ = ["assert_function_gradients", "assert_layer_gradients", "assert_network_gradients",
           "plant_gradient_error"]


def _require(report: Report, what: str) -> Report:
    if not report.passed:
        raise AssertionError(f"gradient check of {what} failed:\n{report}")
    return report


def assert_layer_gradients(layer: Layer, x: Any, method: Any = "central", **options: Any) -> Report:
    """Assert that ``layer``'s input and parameter gradients match finite differences at input ``x``."""
    return _require(check_layer(layer, x, method, **options), repr(layer))


def assert_network_gradients(net: Network, X: Any, y: Any, lambda_: float = 0.0, method: Any = "central",
                             **options: Any) -> Report:
    """Assert that a network's backprop matches finite differences on ``(X, y)``."""
    return _require(check_network(net, X, y, lambda_, method, **options), repr(net))


def assert_function_gradients(fun: Callable[[NDArray], Any], x0: Any, method: Any = "central", *,
                              blocks: Mapping[str, Any] | None = None, **options: Any) -> Report:
    """Assert that ``fun(theta) -> (cost, grad)`` returns the gradient of its cost at ``x0``."""
    return _require(check_function(fun, x0, method, blocks=blocks, **options), getattr(fun, "__name__", "fun"))


def plant_gradient_error(net: Network, index: int, rel: float = 1e-4) -> Network:
    """A copy of ``net`` whose backprop is wrong in exactly one entry: the data-term gradient of flat entry
    ``index`` is multiplied by ``1 + rel``.

    For testing that a check pipeline (tolerances, directional mode, CI thresholds) catches the smallest
    bug you care about.  ``net`` itself is not changed.
    """
    if not isinstance(net, Network):
        raise InputError("net", "a layerkit.Network", describe(net))
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < net.size:
        raise InputError("index", f"a flat parameter index in 0..{net.size - 1}", describe(index))
    twin = net.clone()
    owner = [(b.index, b.param, twin.layout[b.block]) for b in twin.bindings
             if twin.layout[b.block].start <= index < twin.layout[b.block].stop]
    i, p, block = owner[0]
    layer = twin.layers[i]
    local = index - block.start
    base = type(layer)

    def backward(self: Any, dy: NDArray) -> NDArray:
        dx = base.backward(self, dy)
        self.grads[p].reshape(-1)[local] *= 1 + rel
        return dx

    def backward_params(self: Any, dy: NDArray) -> None:
        base.backward_params(self, dy)
        self.grads[p].reshape(-1)[local] *= 1 + rel

    # a subclass rather than an instance attribute, so that copies made for evaluation keep the error; a layer
    # whose backward delegates to backward_params gets the error there, once
    override = {"backward_params": backward_params} if hasattr(base, "backward_params") else {"backward": backward}
    layer.__class__ = type(base.__name__, (base,), override)
    return twin
