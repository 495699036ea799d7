"""The network's parameters: one flat buffer, and views of it bound to the layers (:class:`FlatParameters`).

The layout of the flat vector is defined in :mod:`layerkit.nn.layout`: blocks ``Theta1, Theta2, ...`` in the
order of the layers, each unrolled in C order (:meth:`FlatParameters.get_params` and
:meth:`~FlatParameters.set_params` convert from and to MATLAB/Octave's Fortran order).  Layers never hold
copies: assignment into the buffer is ``a[...] = b``, never rebinding.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError
from .datasets import debug_matrix
from .layers import Layer, epsilon_init
from .layout import Block, Order, ParameterLayout


@frozen
class Binding:
    """Which block of the flat vector a layer's parameter is bound to.

    Attributes
    ----------
    index : int
        Position of the layer in :attr:`Network.layers`.
    layer : Layer
        The layer object itself (the same object may appear at several positions).
    param : str
        The parameter's name in the layer's ``param_shapes``, e.g. ``"Theta"``.
    block : str
        The block's name in the network's layout, e.g. ``"Theta2"``.
    """

    index: int
    layer: Any = field(eq=False, repr=False)
    param: str
    block: str


def bind_fresh(layer: Any, rng: np.random.Generator, dtype: Any = np.float64) -> dict[str, NDArray]:
    """Bind a layer that has no parameters bound yet (fresh from its constructor) to new arrays of ``dtype``
    and fill them with a start: its own ``init_params(rng)`` when it has one, else standard normal values
    times 0.5 (not zeros, where many wrong gradients vanish).  Returns the bound parameter views, by name."""
    sub = ParameterLayout.from_shapes({k: tuple(v) for k, v in layer.param_shapes.items()})
    p, g = np.zeros(sub.size, dtype), np.zeros(sub.size, dtype)
    views = sub.views(p)
    layer.bind(views, sub.views(g))
    init = getattr(layer, "init_params", None)
    if callable(init):
        init(rng)
    else:
        p[...] = 0.5 * rng.standard_normal(sub.size)
    return views


def bindings_of(layers: Sequence[Layer]) -> tuple[Binding, ...]:
    """One Binding per layer parameter; block names number the layers with parameters from 1."""
    out, k = [], 0
    for i, layer in enumerate(layers):
        if layer.param_shapes:
            k += 1
            out += [Binding(i, layer, p, f"{p}{k}") for p in layer.param_shapes]
    return tuple(out)


def _penalized_entries(layer: Any, param: str, shape: tuple[int, ...], who: str) -> NDArray:
    """Flat positions inside a block that ``layer.penalized`` selects (empty when it has none).

    ``penalized(name, array)`` is called on an array of entry *positions*, so that any selection works: a view
    (``array[:, 1:]``) as well as a copy made by fancy indexing (``array[:, [1, 3]]``).
    """
    pen = getattr(layer, "penalized", None)
    if pen is None:
        return np.zeros(0, dtype=np.int64)
    size = int(np.prod(shape, dtype=np.int64))
    positions = np.arange(size, dtype=np.int64).reshape(shape)
    sel = np.asarray(pen(param, positions))
    if sel.size == 0:
        return np.zeros(0, dtype=np.int64)
    if sel.dtype != np.int64 or np.any((sel < 0) | (sel >= size)):
        raise InputError(f"{who}.penalized({param!r}, array)", "a selection of the array's entries (a view such as "
                         "array[:, 1:] or an indexed copy such as array[:, [1, 3]])", describe(sel))
    chosen = np.zeros(size, dtype=bool)
    chosen[sel.ravel()] = True
    flat = np.flatnonzero(chosen)
    if flat.size != sel.size:
        raise InputError(f"{who}.penalized({param!r}, array)", "each entry selected at most once",
                         f"{sel.size - flat.size} entries selected twice")
    return flat


class FlatParameters:
    """The parameters of a :class:`~layerkit.Network` (module docstring): ``params`` and ``grads`` (1-D,
    contiguous, of ``dtype``), the ``layout`` of their blocks and the ``bindings`` of each block to a layer's
    parameter.  The network sets ``layers``, ``layout``, ``dtype``, ``penalty_rules`` and the buffers when it
    is made (:meth:`_allocate`)."""

    layers: list[Layer]
    layout: ParameterLayout
    dtype: np.dtype
    penalty_rules: tuple[str, ...]

    def _allocate(self, bindings: tuple[Any, ...]) -> None:
        """The buffers, holding each layer's current values, and the layers bound to views of them."""
        self._bindings = bindings
        self.layout = ParameterLayout.from_shapes({b.block: b.layer.param_shapes[b.param] for b in bindings})
        self._params = np.zeros(self.layout.size, self.dtype)
        self._grads = np.zeros(self.layout.size, self.dtype)
        views = self.layout.views(self._params)
        for b in bindings:
            current = b.layer.params.get(b.param) if b.layer.params else None
            if current is not None:
                views[b.block][...] = current
        self._bind_layers()
        self._mask: NDArray | None = None

    def _bind_layers(self) -> None:
        """Bind every layer with parameters to views of this network's ``params`` and ``grads`` buffers."""
        views, gviews = self.layout.views(self._params), self.layout.views(self._grads)
        for i, layer in enumerate(self.layers):
            mine = [(b.param, b.block) for b in self._bindings if b.index == i]
            if mine:
                layer.bind({p: views[b] for p, b in mine}, {p: gviews[b] for p, b in mine})

    @property
    def bindings(self) -> tuple[Binding, ...]:
        """Which block each layer parameter is bound to, in flat order (see :class:`Binding`)."""
        return self._bindings

    def use_dtype(self, dtype: Any) -> None:
        """Rebind the layers to new buffers of ``dtype`` (complex, for the complex step) holding the current
        values.  Only inside :meth:`preserved`, which restores the original buffers and bindings."""
        dt = np.dtype(dtype)
        if dt == self._params.dtype:
            return
        params = np.zeros(self.layout.size, dt)
        params[...] = self._params if dt.kind == "c" else self._params.real
        self._params = params
        self._grads = np.zeros(self.layout.size, dt)
        self.dtype = dt
        self._bind_layers()

    def init_random(self, seed: int | None = 0) -> None:
        """A random start, seeded: each layer with ``init_params(rng)`` initializes its own parameters (Dense:
        uniform in ``[-eps, eps]``, ``eps = sqrt(6) / sqrt(n_in + n_out)``, the classic ``epsilon_init``),
        in the order of the layers, from one generator.  The blocks of a layer without it are drawn uniform
        in ``[-eps, eps]`` with ``eps = sqrt(6) / sqrt(fan_in + fan_out)``, ``fan_out = shape[0]`` and
        ``fan_in`` the rest of the block (no assumption about a bias column).
        """
        rng = np.random.default_rng(seed)
        own = {b.block for b in self.bindings if hasattr(self.layers[b.index], "init_params")}
        done: set[int] = set()
        for b in self.bindings:
            layer = self.layers[b.index]
            if b.block in own:
                if b.index not in done:
                    layer.init_params(rng)  # type: ignore[attr-defined]
                    done.add(b.index)
                continue
            block = self.layout[b.block]
            fan_out = block.shape[0] if block.shape else 1
            eps = epsilon_init(max(block.size // max(fan_out, 1), 1), fan_out)
            self._params[block.slice] = rng.uniform(-eps, eps, block.size)

    def init_debug(self) -> None:
        """The course's deterministic weights: each block is ``sin(1..size) / 10`` in Fortran order.

        See :func:`layerkit.datasets.debug_matrix`; 1-D blocks are filled with ``sin(1..size) / 10``.
        """
        for b in self.layout.blocks:
            shape = b.shape if len(b.shape) == 2 else (b.size, 1)
            self._params[b.slice] = debug_matrix(shape).ravel()

    @property
    def params(self) -> NDArray:
        """The flat parameter vector (the buffer itself, C order, 1-D, contiguous).  Assigning copies in."""
        return self._params

    @params.setter
    def params(self, value: NDArray) -> None:
        self.set_params(value)

    @property
    def grads(self) -> NDArray:
        """The flat gradient buffer written by the last :meth:`cost_and_gradient` (same layout as params)."""
        return self._grads

    @property
    def blocks(self) -> tuple[Block, ...]:
        """Ordered parameter blocks: name, shape and slice of the flat vector."""
        return self.layout.blocks

    @property
    def size(self) -> int:
        """Number of parameters ``P``."""
        return self.layout.size

    def penalized_mask(self) -> NDArray:
        """Boolean mask, shape (P,), of the entries the L2 penalty applies to (each layer's ``penalized``)."""
        if self._mask is None:
            mask = np.zeros(self.layout.size, dtype=bool)
            for b in self._bindings:
                block = self.layout[b.block]
                rule = self.penalty_rules[b.index]
                if rule == "all":
                    mask[block.slice] = True
                elif rule == "default":
                    mask[block.start + _penalized_entries(b.layer, b.param, block.shape, repr(b.layer))] = True
            self._mask = mask
        return self._mask

    def get_params(self, order: Order = "C") -> NDArray:
        """A copy of the parameters unrolled block by block in ``order`` (``"F"`` for MATLAB's ``Theta(:)``)."""
        return self.layout.convert(self._params, "C", order)

    def set_params(self, value: NDArray, order: Order = "C") -> None:
        """Copy a flat vector into the buffer; ``order="F"`` reads MATLAB/Octave ``[Theta1(:); Theta2(:)]``.

        Raises :class:`~layerkit.errors.InputError` unless ``value`` is 1-D, of ``size`` entries, of this
        network's dtype and finite.
        """
        vec = self.layout.check_vector(value, "params", dtype=self.dtype)
        self._params[...] = self.layout.convert(vec, order, "C")
