"""Every built-in layer through layerkit.testing.LayerContract, and the contract's own failures."""

import numpy as np
import pytest
from custom_layer import Softsign
from helpers import PlainTanh

import layerkit
from layerkit.testing import LayerContract


class TestDense(LayerContract):
    input_shape = (6, 4)

    def make_layer(self, dtype):
        return layerkit.Dense(4, 3, seed=1, dtype=dtype)


class TestSigmoid(LayerContract):
    def make_layer(self, dtype):
        return layerkit.Sigmoid()

    def make_input(self, dtype):  # saturated units too
        return (4 * np.random.default_rng(2).standard_normal((5, 4))).astype(dtype)


class TestTanh(LayerContract):
    def make_layer(self, dtype):
        return layerkit.Tanh()


class TestReLU(LayerContract):
    def make_layer(self, dtype):
        return layerkit.ReLU()

    def make_input(self, dtype):  # an input exactly on the kink, and one next to it
        x = np.random.default_rng(3).standard_normal((5, 4)).astype(dtype)
        x[0, 0], x[1, 1] = 0, dtype(1e-9) if dtype == np.float64 else dtype(1e-5)
        return x


class TestLeakyReLU(LayerContract):
    def make_layer(self, dtype):
        return layerkit.LeakyReLU(0.1)


class TestIdentity(LayerContract):
    def make_layer(self, dtype):
        return layerkit.Identity()


_Softsign = Softsign  # a user's layer on the Elementwise helper (examples/custom_layer.py)


class TestUsersElementwiseLayer(LayerContract):
    def make_layer(self, dtype):
        return _Softsign()


def _run(contract, name):
    getattr(contract, name)()


def test_the_contract_catches_a_wrong_derivative():
    class Wrong(_Softsign):
        def derivative(self, x, y):
            return 1 - np.abs(y)

    class C(LayerContract):
        def make_layer(self, dtype):
            return Wrong()

    with pytest.raises(AssertionError, match="FAILED"):
        _run(C(), "test_gradients_float64")


def test_the_contract_catches_accumulating_gradients_and_a_mutated_input():
    class Accumulating(layerkit.Dense):
        def backward_params(self, dy):
            old = self.grads["Theta"].copy()
            super().backward_params(dy)
            self.grads["Theta"] += old

    class InPlace(_Softsign):
        def forward(self, x):
            x *= 1.0 + 1e-3
            return super().forward(x)

    class A(LayerContract):
        def make_layer(self, dtype):
            return Accumulating(4, 3, seed=0, dtype=dtype)

    class B(LayerContract):
        def make_layer(self, dtype):
            return InPlace()

    with pytest.raises(AssertionError, match="accumulated"):
        _run(A(), "test_repeated_calls")
    with pytest.raises(AssertionError, match="changed its input"):
        _run(B(), "test_input_is_not_changed")


def test_the_contract_catches_an_obscure_error_before_forward_and_a_two_faced_fn():
    class C(LayerContract):
        def make_layer(self, dtype):
            return PlainTanh()  # backward before forward: an AttributeError that names nothing

    with pytest.raises(AssertionError, match="say that forward is missing"):
        _run(C(), "test_backward_before_forward_is_a_clear_error")

    class TwoFaced(layerkit.Elementwise):  # an fn that computes something else for complex input
        def fn(self, x):
            return (1.1 if np.iscomplexobj(x) else 1.0) * np.tanh(x)

        def derivative(self, x, y):
            return 1 - y**2

    class D(LayerContract):
        def make_layer(self, dtype):
            return TwoFaced()

    with pytest.raises(AssertionError, match="series rule disagrees"):
        _run(D(), "test_rules_agree_with_forward")


def test_the_contract_compares_a_registered_rule_with_forward(monkeypatch):
    from layerkit.fast.layer_rules import DenseRule

    class Transposed(DenseRule):  # a rule that reads the weights the wrong way round in one place
        def param_inputs(self, name, x):
            from layerkit.fast.changes import ParamInputs

            return ParamInputs(x[:, ::-1].copy(), ones=1)

    class MyDense(layerkit.Dense):
        pass

    class C(LayerContract):
        input_shape = (6, 4)

        def make_layer(self, dtype):
            return MyDense(4, 3, seed=1, dtype=dtype)

    from layerkit.fast import rules

    with pytest.raises(layerkit.InputError, match="layerkit's own"):
        rules.register_rule(MyDense, Transposed)  # a rule is layerkit's own code, for its own layers
    # a bug in one of layerkit's own rules, simulated: the contract compares it with forward
    monkeypatch.setitem(rules._REGISTRY, MyDense, rules.Registration(MyDense, Transposed, ("forward",)))
    with pytest.raises(AssertionError, match="param_inputs rule disagrees"):
        _run(C(), "test_rules_agree_with_forward")
    monkeypatch.delitem(rules._REGISTRY, MyDense)
    _run(C(), "test_rules_agree_with_forward")  # the inherited Dense rule again
