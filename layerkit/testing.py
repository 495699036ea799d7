"""One-line gradient assertions for users' own test suites, and a contract test for a layer.

Each function runs a check and raises ``AssertionError`` carrying the full report (verdict, blocks, worst
entries, findings) when it fails, so pytest shows *where* and *why*; it returns the report otherwise::

    from layerkit.testing import assert_layer_gradients

    def test_my_layer():
        assert_layer_gradients(MyLayer(4, 3), np.random.default_rng(0).standard_normal((5, 4)))

:class:`LayerContract` is a whole test class to subclass: give it a layer factory and an input shape, and
pytest runs its tests (gradients in float64 and float32, repeated calls, no mutation of the input, a clear
error before forward, the fast engine's rule against ``forward``)::

    from layerkit.testing import LayerContract

    class TestMyLayer(LayerContract):
        input_shape = (5, 4)

        def make_layer(self, dtype):
            return MyLayer(4, 3, dtype=dtype)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._validate import describe
from .api import check_function, check_layer, check_network
from .check.report import Report
from .errors import InputError
from .nn.buffer import bind_fresh
from .nn.layers import Layer
from .nn.network import Network

__all__ = ["LayerContract", "assert_function_gradients", "assert_layer_gradients", "assert_network_gradients",
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

    inside: set[int] = set()  # the layers whose backward is running (it may or may not call backward_params)

    def backward(self: Any, dy: NDArray) -> NDArray:
        inside.add(id(self))
        try:
            dx = base.backward(self, dy)
        finally:
            inside.discard(id(self))
        self.grads[p].reshape(-1)[local] *= 1 + rel
        return dx

    def backward_params(self: Any, dy: NDArray) -> None:
        base.backward_params(self, dy)  # type: ignore[attr-defined]  # present: see the override below
        if id(self) not in inside:  # called alone (a network's first layer), not from backward
            self.grads[p].reshape(-1)[local] *= 1 + rel

    # a subclass rather than an instance attribute, so that copies made for evaluation keep the error; the error
    # is applied once whichever of backward and backward_params the network calls, and whether or not one
    # calls the other
    override: dict[str, Any] = {"backward": backward}
    if hasattr(base, "backward_params"):
        override["backward_params"] = backward_params
    layer.__class__ = type(base.__name__, (base,), override)
    return twin


class LayerContract:
    """A contract test for one layer class: subclass it in a test module as ``TestSomething`` (pytest collects
    it), set :attr:`input_shape` (or override :meth:`make_input`) and define :meth:`make_layer`.

    Every test builds fresh layers, so a test can never pass because of another's state.  The tests:

    * ``test_gradients_float64``, ``test_gradients_float32``: input and parameter gradients against finite
      differences (:func:`assert_layer_gradients`), in each dtype the layer is made for;
    * ``test_repeated_calls``: two forward/backward rounds on the same input give the same output, input
      gradient and parameter gradients (no state carried over, no accumulation);
    * ``test_input_is_not_changed``: forward and backward leave the input array as it was;
    * ``test_backward_before_forward_is_a_clear_error``: ``backward`` on a fresh layer raises an exception
      that names ``forward`` (layerkit's :class:`~layerkit.NotForwardedError`, say), not an obscure one;
    * ``test_rules_agree_with_forward``: every fast-engine rule the layer gets (layerkit's own for its
      class, derived from an Elementwise layer's ``fn``, or the batched forward calls of a layer without
      parameters) is compared with ``forward`` under large random changes (see :mod:`layerkit.fast.confirm`).
    """

    #: Shape of the input batch ``(m, n_in)`` of :meth:`make_input`.
    input_shape: tuple[int, int] = (5, 4)
    #: Seed of the random inputs.
    seed: int = 0
    #: The dtypes of ``test_gradients_<dtype>``.
    dtypes: tuple[Any, ...] = (np.float64, np.float32)

    def make_layer(self, dtype: Any) -> Layer:
        """A fresh layer computing in ``dtype`` (float64 or float32)."""
        raise NotImplementedError("define make_layer(self, dtype) in the subclass of LayerContract")

    def make_input(self, dtype: Any) -> NDArray:
        """The input batch: standard normal of :attr:`input_shape`, in ``dtype``."""
        return np.random.default_rng(self.seed).standard_normal(self.input_shape).astype(dtype)

    def _layer(self, dtype: Any) -> Layer:
        """:meth:`make_layer`'s layer, bound to parameters of ``dtype`` when it comes unbound (its own
        ``init_params`` start, seeded, or standard normal values times 0.5)."""
        layer = self.make_layer(dtype)
        shapes = dict(getattr(layer, "param_shapes", {}) or {})
        if shapes and not all(k in (layer.params or {}) for k in shapes):
            bind_fresh(layer, np.random.default_rng(self.seed), dtype)
        return layer

    def _gradients(self, dtype: Any) -> None:
        if np.dtype(dtype) not in [np.dtype(d) for d in self.dtypes]:
            return
        assert_layer_gradients(self._layer(dtype), self.make_input(dtype))

    def test_gradients_float64(self) -> None:
        self._gradients(np.float64)

    def test_gradients_float32(self) -> None:
        self._gradients(np.float32)

    def test_repeated_calls(self) -> None:
        layer, x = self._layer(np.float64), self.make_input(np.float64)
        rounds = []
        for _ in range(2):
            y = np.array(layer.forward(x), copy=True)
            dy = np.random.default_rng(self.seed + 1).standard_normal(y.shape)
            dx = np.array(layer.backward(dy), copy=True)
            grads = {k: np.array(v, copy=True) for k, v in (layer.grads or {}).items()}
            rounds.append((y, dx, grads))
        (y1, dx1, g1), (y2, dx2, g2) = rounds
        assert np.array_equal(y1, y2), f"{layer!r}: forward gave another output the second time"
        assert np.array_equal(dx1, dx2), f"{layer!r}: backward gave another input gradient the second time"
        for k in g1:
            assert np.array_equal(g1[k], g2[k]), \
                f"{layer!r}: the gradient of {k!r} changed on the second backward (accumulated?)"

    def test_input_is_not_changed(self) -> None:
        layer, x = self._layer(np.float64), self.make_input(np.float64)
        before = x.copy()
        y = layer.forward(x)
        layer.backward(np.ones_like(np.asarray(y)))
        assert np.array_equal(x, before), f"{layer!r}: forward or backward changed its input array"

    def test_backward_before_forward_is_a_clear_error(self) -> None:
        layer, x = self._layer(np.float64), self.make_input(np.float64)
        y_shape = np.shape(self._layer(np.float64).forward(x))
        try:
            layer.backward(np.ones(y_shape))
        except Exception as exc:  # noqa: BLE001 - any exception, as long as it says what went wrong
            assert "forward" in str(exc).lower(), \
                f"{layer!r}: backward before forward raised {type(exc).__name__}: {exc} (say that forward is missing)"
        else:
            raise AssertionError(f"{layer!r}: backward before forward raised nothing")

    def test_rules_agree_with_forward(self) -> None:
        from .fast.confirm import MEMBERS, Rules
        from .fast.fn_rule import Unavailable
        from .nn.losses import MeanSquaredError

        layer, x = self._layer(np.float64), self.make_input(np.float64)
        net = Network([layer], loss=MeanSquaredError())
        acts = net.activations(x)
        rules = Rules(list(net.body), acts, net.bindings, net.params, net.layout)
        rule = rules.rule(0)
        for name, members in MEMBERS.items():
            if rule.has(*members):
                try:
                    agrees = rules.confirm(0, name)
                except Unavailable:  # an fn with no derived series here: the engine calls forward instead
                    continue
                assert agrees, f"{layer!r}: its {name} rule disagrees with its forward: {rules.notes}"
