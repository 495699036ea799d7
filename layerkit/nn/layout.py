"""The flat parameter layout: how named parameter blocks are unrolled into one vector.

This module is the one place where the layout is defined.

* Blocks are laid out one after the other, in the order given (for a :class:`~layerkit.Network`: layer
  order, and inside a layer the order of its ``param_shapes``).
* Inside a block, entries are unrolled in **C (row-major) order**: the flat vector is
  ``[Theta1.ravel(), Theta2.ravel(), ...]``.  For a ``Dense`` block ``Theta`` of shape ``(n_out, n_in + 1)``
  the bias column ``Theta[:, 0]`` therefore sits at offsets ``0, n_in + 1, 2 (n_in + 1), ...`` of the block.
* MATLAB/Octave code unrolls with ``Theta(:)``, i.e. in **Fortran (column-major) order**, block by block.
  :meth:`ParameterLayout.convert` turns one into the other (``order="F"``).

Offsets are computed once with a cumulative sum; views into a flat buffer are made with ``reshape`` on a
contiguous slice, so they share memory with it (see :meth:`ParameterLayout.views`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Literal

import numpy as np
from attrs import field, frozen
from numpy.typing import NDArray

from .._validate import describe
from ..errors import InputError

Order = Literal["C", "F"]


def check_order(order: Any, argument: str = "order") -> Order:
    """``order`` if it is ``"C"`` (numpy's row-major) or ``"F"`` (MATLAB/Octave's column-major), else an
    :class:`~layerkit.errors.InputError` naming ``argument``."""
    if order not in ("C", "F"):
        raise InputError(argument, "'C' (numpy's row-major) or 'F' (MATLAB/Octave's Theta(:))", repr(order))
    return order


def _shape(value: object, argument: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(s) for s in value)  # type: ignore[attr-defined]
    except TypeError:
        raise InputError(argument, "a shape (a tuple of non-negative integers)", describe(value)) from None
    if any(s < 0 for s in shape):
        raise InputError(argument, "a shape of non-negative integers", str(shape))
    return shape


@frozen
class Block:
    """One named parameter block of a flat vector.

    Attributes
    ----------
    name : str
        Block name, e.g. ``"Theta1"``; reports name entries by it.
    shape : tuple of int
        Shape of the block when viewed as an array.
    start : int
        Offset of the block's first entry in the flat vector.
    order : "C" or "F"
        How the block is unrolled in the flat vector: C (row-major, numpy's ``ravel``) or Fortran
        (column-major, MATLAB/Octave's ``Theta(:)``).
    """

    name: str
    shape: tuple[int, ...]
    start: int
    order: Order = "C"

    @property
    def size(self) -> int:
        """Number of entries in the block."""
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def stop(self) -> int:
        """Offset one past the block's last entry."""
        return self.start + self.size

    @property
    def slice(self) -> slice:
        """The block's slice of the flat vector."""
        return slice(self.start, self.stop)

    def index(self, flat_index: int) -> tuple[int, ...]:
        """Index tuple inside the block of the flat vector's entry ``flat_index`` (in the block's order)."""
        if not self.shape:
            return ()
        return tuple(int(i) for i in np.unravel_index(flat_index - self.start, self.shape, order=self.order))

    def unravel(self, local: Any) -> tuple[NDArray, ...]:
        """Index arrays of positions ``local`` inside the block (offsets from its start), in its order."""
        return np.unravel_index(np.asarray(local), self.shape, order=self.order)

    def grid(self) -> NDArray:
        """The block's shape filled with the offsets of its entries in the flat vector (from its start)."""
        return np.arange(self.size).reshape(self.shape, order=self.order)

    def matrix(self, flat: NDArray) -> NDArray:
        """The block of ``flat`` (the whole vector) as an array of its shape."""
        return np.asarray(flat)[self.slice].reshape(self.shape, order=self.order)

    def __repr__(self) -> str:
        return f"Block({self.name!r}, shape={self.shape}, slice={self.start}:{self.stop})"


def _blocks_from_shapes(shapes: Mapping[str, Iterable[int]], order: Order = "C") -> tuple[Block, ...]:
    names = list(shapes)
    dims = [_shape(shapes[n], f"blocks[{n!r}]") for n in names]
    sizes = [int(np.prod(d, dtype=np.int64)) for d in dims]
    starts = np.concatenate([[0], np.cumsum(sizes, dtype=np.int64)])[:-1]
    return tuple(Block(n, d, int(s), order) for n, d, s in zip(names, dims, starts))


@frozen
class ParameterLayout:
    """An ordered set of named blocks that together make up one flat vector.

    Build it with :meth:`from_shapes`.  The layout never holds data; it maps between a flat 1-D array of
    ``size`` entries and named block views.
    """

    blocks: tuple[Block, ...] = field(converter=tuple)

    @classmethod
    def from_shapes(cls, shapes: Mapping[str, Iterable[int]], order: Order = "C") -> ParameterLayout:
        """Lay out blocks in the mapping's order, each unrolled in ``order`` ("C", numpy's row-major, or "F",
        MATLAB/Octave's column-major ``Theta(:)``)."""
        if not isinstance(shapes, Mapping):
            raise InputError("blocks", "a mapping from block name to shape", describe(shapes))
        return cls(_blocks_from_shapes(shapes, check_order(order)))  # type: ignore[arg-type]  # attrs' converter

    @classmethod
    def single(cls, size: int, name: str = "x") -> ParameterLayout:
        """A layout with one 1-D block covering the whole vector."""
        return cls((Block(name, (int(size),), 0),))  # type: ignore[arg-type]  # attrs' converter

    @property
    def size(self) -> int:
        """Total number of entries."""
        return self.blocks[-1].stop if self.blocks else 0

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.blocks]

    def __getitem__(self, name: str) -> Block:
        for b in self.blocks:
            if b.name == name:
                return b
        raise KeyError(name)

    def block_of(self, flat_index: int) -> Block:
        """The block that holds entry ``flat_index``."""
        starts = [b.start for b in self.blocks]
        k = int(np.searchsorted(starts, flat_index, side="right")) - 1
        return self.blocks[k]

    def locate(self, flat_index: int) -> tuple[str, tuple[int, ...]]:
        """``(block name, index tuple inside the block)`` of a flat entry."""
        b = self.block_of(flat_index)
        return b.name, b.index(flat_index)

    def label(self, flat_index: int) -> str:
        """Readable name of a flat entry, e.g. ``"Theta2[0, 3]"``."""
        name, idx = self.locate(flat_index)
        return f"{name}[{', '.join(map(str, idx))}]"

    def check_vector(self, vec: object, argument: str, dtype: np.dtype | None = None) -> np.ndarray:
        """Validate a flat vector: 1-D, ``size`` entries, finite, and of ``dtype`` when given."""
        arr = np.asarray(vec)
        if arr.ndim != 1 or arr.size != self.size:
            raise InputError(argument, f"a 1-D vector of {self.size} entries", describe(arr))
        if dtype is not None and arr.dtype != dtype:
            raise InputError(argument, f"dtype {np.dtype(dtype)}", f"dtype {arr.dtype}")
        if not np.issubdtype(arr.dtype, np.inexact):
            raise InputError(argument, "a floating-point vector", f"dtype {arr.dtype}")
        bad = ~np.isfinite(arr)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise InputError(argument, "finite values", f"{arr[i]} at {self.label(i)} ({int(bad.sum())} in all)")
        return arr

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Block views into ``flat`` (no copies): writing to a view writes to ``flat``."""
        if flat.ndim != 1 or flat.size != self.size or not flat.flags.c_contiguous:
            raise InputError("flat", f"a contiguous 1-D vector of {self.size} entries", describe(flat))
        return {b.name: flat[b.slice].reshape(b.shape, order=b.order) for b in self.blocks}

    def convert(self, vec: np.ndarray, src: Order, dst: Order) -> np.ndarray:
        """Re-unroll a flat vector from order ``src`` to order ``dst`` (``"C"`` or ``"F"``), block by block.

        Returns a new array; ``vec`` is not modified.
        """
        for arg, o in (("order", src), ("order", dst)):
            if o not in ("C", "F"):
                raise InputError(arg, "'C' or 'F'", repr(o))
        out = np.array(vec, copy=True)
        if src == dst:
            return out
        for b in self.blocks:
            out[b.slice] = np.asarray(vec)[b.slice].reshape(b.shape, order=src).ravel(order=dst)
        return out

    def __repr__(self) -> str:
        inner = ", ".join(f"{b.name}{b.shape}" for b in self.blocks)
        return f"ParameterLayout({inner}; size={self.size})"
