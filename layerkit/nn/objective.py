"""The :class:`Objective`: ``theta -> (cost, grad)`` of one network on one data set, for optimizers and checkers."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from .._validate import describe, nonnegative_float
from ..errors import InputError
from .network import Network, evaluation_overrides


class Objective:
    """``theta -> (cost, grad)`` for one network and data set, evaluated on the network itself.

    A call writes ``theta`` into the network's buffer, evaluates, and restores the network exactly as it was
    (:meth:`Network.preserved`): calling it never changes the network.  It evaluates what the network *is*:
    a subclass's ``cost_and_gradient``, tied or shared layers, user layers.  ``theta`` is a 1-D vector of ``P``
    entries; a real ``theta`` is computed in the network's dtype, a complex one in the matching complex dtype
    (so that the complex-step check works).  Returns ``(float or complex, grad of shape (P,))``.  Calls from
    several threads are serialized by the network's lock.
    """

    def __init__(self, net: Network, X: Any, y: Any, lambda_: float) -> None:
        self.lambda_ = nonnegative_float(lambda_, "lambda_")
        self.X, self.Y = net.prepare(X, y)
        self.network = net
        self._data = (X, y)  # as given, for a subclass's own cost methods
        self._inputs: dict[np.dtype, NDArray] = {self.X.dtype: self.X}
        overrides = evaluation_overrides(net)
        self._public_grad = "cost_and_gradient" in overrides
        self._public_cost = "cost" in overrides

    @property
    def m(self) -> int:
        """Number of examples."""
        return self.X.shape[0]

    def _dtype(self, theta: NDArray) -> np.dtype:
        real = np.dtype(self.network.dtype).type(0).real.dtype
        return np.dtype(np.result_type(real, np.complex64) if np.iscomplexobj(theta) else real)

    def _check(self, theta: Any) -> NDArray:
        theta = np.asarray(theta)
        if theta.ndim != 1 or theta.size != self.network.size:
            raise InputError("theta", f"a 1-D vector of {self.network.size} entries", describe(theta))
        return theta

    def evaluate_in_place(self, theta: NDArray, with_grad: bool, record: list[NDArray] | None = None) -> Any:
        """Write ``theta`` into the network's buffer and evaluate there, leaving both changed: for callers
        that already hold :meth:`Network.preserved` (a check), and restore the network themselves.  Returns
        the cost, the gradient being in ``network.grads``."""
        net = self.network
        net.use_dtype(self._dtype(theta))
        net.params[...] = theta
        if with_grad:
            if self._public_grad:
                return net.cost_and_gradient(*self._data, self.lambda_)[0]
            return net.evaluate(self.inputs(net.params.dtype), self.Y, self.lambda_, True, record)
        if self._public_cost:
            return net.cost(*self._data, self.lambda_)
        if self._public_grad:
            return net.cost_and_gradient(*self._data, self.lambda_)[0]
        return net.evaluate(self.inputs(net.params.dtype), self.Y, self.lambda_, False)

    def __call__(self, theta: Any) -> tuple[Any, NDArray]:
        theta = self._check(theta)
        with self.network.preserved():
            cost = self.evaluate_in_place(theta, with_grad=True)
            return cost, self.network.grads.copy()

    def cost(self, theta: Any) -> Any:
        """The cost alone at ``theta``; same dtype rules as a call."""
        theta = self._check(theta)
        with self.network.preserved():
            return self.evaluate_in_place(theta, with_grad=False)

    def inputs(self, dtype: np.dtype) -> NDArray:
        """``X`` in ``dtype`` (converted once)."""
        X = self._inputs.get(dtype)
        if X is None:
            X = self._inputs[dtype] = self.X.astype(dtype)
        return X

    def __repr__(self) -> str:
        return f"Objective({self.network!r}, m={self.m}, lambda_={self.lambda_})"
