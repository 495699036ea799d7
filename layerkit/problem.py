"""A :class:`Problem`: one thing to check, as the CLI loads it from ``file.py:NAME`` or ``module:NAME``.

A problem is either a plain function (``fun(theta) -> (cost, grad)`` at ``x0``, optional ``blocks``) or a
network on data (``net, X, y, lambda_``).  Build one with :meth:`Problem.from_function` or
:meth:`Problem.from_network`; :meth:`Problem.coerce` also accepts the plain tuples ``(fun, x0)``,
``(fun, x0, blocks)`` and ``(net, X, y, lambda_)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from attrs import evolve, field, frozen
from numpy.typing import NDArray

from ._validate import describe
from .api import check_function, check_network
from .backward import backward_function
from .check.report import Report
from .errors import InputError
from .nn.datasets import debug_data
from .nn.layout import Order, check_order
from .nn.network import Network


@frozen(eq=False)
class Problem:
    """A gradient-check problem.

    Attributes
    ----------
    kind : ``"function"`` or ``"network"``
    name : str
        Shown in reports and CLI output.
    fun, x0, blocks : for ``kind == "function"``
    network, X, y, lambda_ : for ``kind == "network"`` (``lambda_`` is also a hint for functions)
    m : int or None
        Number of examples behind a function, when known (lets the doctor name factors like lambda/m).
    """

    kind: str
    name: str = ""
    fun: Callable[[NDArray], Any] | None = None
    x0: NDArray | None = None
    blocks: Mapping[str, Any] | None = None
    network: Network | None = None
    X: Any = None
    y: Any = None
    lambda_: float | None = None
    m: int | None = None
    sizes: tuple[int, ...] = field(default=())
    order: Order = "C"
    #: What building the problem assumed, added to the notes of every report of it.
    notes: tuple[str, ...] = ()

    @classmethod
    def from_function(cls, fun: Callable[[NDArray], Any], x0: Any, blocks: Mapping[str, Any] | None = None, *,
                      lambda_: float | None = None, m: int | None = None, name: str = "",
                      order: Order = "C") -> Problem:
        """A hand-written ``fun(theta) -> (cost, grad)`` at ``x0`` (optional ``blocks``: name -> shape, each
        unrolled in ``order``: "C", or "F" for MATLAB/Octave's ``[Theta1(:); Theta2(:)]``)."""
        if not callable(fun):
            raise InputError("fun", "a callable theta -> (cost, grad)", describe(fun))
        own = getattr(fun, "__name__", "")
        title = name or (own if own and not own.startswith("<") else "the function")  # not "<lambda>"
        return cls("function", title, fun=fun, x0=np.asarray(x0),
                   blocks=blocks, lambda_=lambda_, m=m, order=check_order(order))

    @classmethod
    def from_backward(cls, forward: Callable[..., Any], backward: Callable[..., Any], inputs: Mapping[str, Any], *,
                      dout: Any = None, seed: int = 0, name: str = "") -> Problem:
        """A layer function pair (:func:`~layerkit.check_backward`): one block per input, by its key."""
        fun, x0, blocks = backward_function(forward, backward, inputs, dout, seed)
        own = getattr(forward, "__name__", "")
        return cls("function", name or (own if own and not own.startswith("<") else "layer functions"), fun=fun,
                   x0=x0, blocks=blocks)

    @classmethod
    def from_network(cls, network: Network, X: Any, y: Any, lambda_: float = 0.0, *, name: str = "") -> Problem:
        """A :class:`~layerkit.Network` on data ``(X, y)`` with regularization ``lambda_``."""
        if not isinstance(network, Network):
            raise InputError("network", "a layerkit.Network", describe(network))
        return cls("network", name or repr(network), network=network, X=X, y=y, lambda_=float(lambda_),
                   m=int(np.shape(X)[0]) if np.ndim(X) == 2 else None)

    @classmethod
    def debug(cls, lambda_: float = 0.0, sizes: tuple[int, ...] = (3, 5, 3), m: int = 5, *,
              dtype: Any = np.float64, seed: int | None = None) -> Problem:
        """The course's gradient-check problem: debug weights and inputs, labels ``1 + (i mod 3)`` (0-based
        here).  With ``seed`` the weights are random (seeded) instead of the debug weights."""
        net = Network.from_sizes(list(sizes), dtype=dtype, init="debug" if seed is None else "random",
                                 seed=seed)
        X, y = debug_data(m, sizes[0], dtype=dtype)
        y = y % sizes[-1]
        p = cls.from_network(net, X, y, lambda_, name=f"debug network {'-'.join(map(str, sizes))}, m = {m}")
        return p

    @classmethod
    def coerce(cls, obj: Any, name: str = "") -> Problem:
        """A Problem from a Problem or a plain tuple; anything else raises InputError."""
        if isinstance(obj, Problem):
            return obj
        if isinstance(obj, tuple):
            if len(obj) == 4 and isinstance(obj[0], Network):
                return cls.from_network(obj[0], obj[1], obj[2], obj[3], name=name)
            if len(obj) in (2, 3) and callable(obj[0]):
                return cls.from_function(obj[0], obj[1], obj[2] if len(obj) == 3 else None, name=name)
        raise InputError("problem", "a layerkit.Problem, (fun, x0), (fun, x0, blocks) or (network, X, y, lambda)",
                         describe(obj))

    def check(self, method: Any = "central", **options: Any) -> Report:
        """Run the check: :func:`~layerkit.check_function` or :func:`~layerkit.check_network` with ``options``."""
        if self.kind == "network":
            assert self.network is not None
            report = check_network(self.network, self.X, self.y, self.lambda_ or 0.0, method, **options)
        else:
            assert self.fun is not None
            report = check_function(self.fun, self.x0, method, blocks=self.blocks, lambda_=self.lambda_, m=self.m,
                                    order=self.order, **options)
        return evolve(report, notes=report.notes + self.notes) if self.notes else report
