"""Layer functions in the CS231n style: ``forward(x, w, b) -> (out, cache)`` and ``backward(dout, cache) ->
(dx, dw, db)``, checked with no wrapper to write.

The scalar checked is ``sum(forward(*inputs) * dout)`` for a fixed upstream gradient ``dout`` (seeded
standard normal of ``out``'s shape unless given): its gradient with respect to each input is what
``backward(dout, cache)`` must return.  The inputs are the blocks of the check, one per input, named by their
keys; :func:`check_backward` runs the same pipeline as every other check (every method and mode, the doctor,
pictures, JSON).  Arguments that are not arrays to differentiate -- a ``conv_param`` dict, a dropout seed,
integer labels -- are bound by the caller::

    check_backward(lambda x, w, b: conv_forward_naive(x, w, b, {"stride": 1, "pad": 1}), conv_backward_naive,
                   {"x": x, "w": w, "b": b})
    check_backward(functools.partial(dropout_forward, dropout_param={"p": 0.5, "mode": "train", "seed": 0}),
                   dropout_backward, {"x": x})
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from ._validate import describe
from .errors import InputError, TargetError


def backward_function(forward: Callable[..., Any], backward: Callable[..., Any], inputs: Mapping[str, Any],
                      dout: Any = None, seed: int = 0) -> tuple[Callable[[NDArray], Any], NDArray, dict[str, tuple]]:
    """``(fun, x0, blocks)`` for :func:`~layerkit.check_function`: ``fun(theta)`` is ``sum(out * dout)`` at the
    inputs unpacked from ``theta`` (in ``inputs``' order, each C-ordered), with the gradient ``backward``
    returns, packed the same way.

    Parameters
    ----------
    forward : callable
        ``forward(*arrays)`` returning ``out``, or ``(out, cache)``.
    backward : callable
        ``backward(dout, cache)`` (``backward(dout)`` when ``forward`` returns no cache), returning the inputs'
        gradients as a tuple or list in the order of ``inputs``, or a mapping by name.
    inputs : mapping of str to array
        The arrays to differentiate, in ``forward``'s argument order (float32 or float64; kept as given).
    dout : array, optional
        The upstream gradient, of ``out``'s shape; default seeded standard normal (``seed``).
    """
    if not callable(forward) or not callable(backward):
        raise InputError("forward, backward", "two callables", f"{describe(forward)}, {describe(backward)}")
    if not isinstance(inputs, Mapping) or not inputs:
        raise InputError("inputs", "a non-empty mapping from name to array, in forward's argument order",
                         describe(inputs))
    arrays = {}
    for name, value in inputs.items():
        a = np.asarray(value)
        if a.size == 0 or not np.issubdtype(a.dtype, np.floating) or np.iscomplexobj(a):
            raise InputError(f"inputs[{name!r}]", "a non-empty float32 or float64 array (bind integer labels and "
                             "parameters with functools.partial or a lambda)", describe(value))
        arrays[name] = a
    dtype = np.result_type(*arrays.values())
    blocks = {name: a.shape for name, a in arrays.items()}
    sizes = [a.size for a in arrays.values()]
    x0 = np.concatenate([a.astype(dtype).ravel() for a in arrays.values()])
    names = list(arrays)
    out0, _ = _forward(forward, [np.array(a, copy=True) for a in arrays.values()])
    if dout is None:
        upstream = np.random.default_rng([seed, 0x62776B]).standard_normal(np.shape(out0)).astype(dtype)
    else:
        upstream = np.asarray(dout, dtype=dtype)
        if upstream.shape != np.shape(out0):
            raise InputError("dout", f"an array of out's shape {np.shape(out0)}", describe(dout))

    def unpack(theta: NDArray) -> list[NDArray]:
        parts, start = [], 0
        for name, size in zip(names, sizes):
            parts.append(np.array(theta[start:start + size].reshape(blocks[name]), copy=True))
            start += size
        return parts

    def fun(theta: NDArray) -> tuple[Any, NDArray]:
        out, cache = _forward(forward, unpack(theta))
        if np.shape(out) != upstream.shape:
            raise TargetError(f"forward's output has shape {np.shape(out)} at another point, {upstream.shape} at x0")
        cost = np.sum(np.asarray(out) * upstream)
        grads = backward(np.array(upstream, copy=True), cache) if cache is not _NO_CACHE else \
            backward(np.array(upstream, copy=True))
        return cost, np.concatenate([g.ravel() for g in _ordered(grads, names, blocks)])

    return fun, x0, blocks


_NO_CACHE = object()


def _forward(forward: Callable[..., Any], arrays: list[NDArray]) -> tuple[Any, Any]:
    result = forward(*arrays)
    if isinstance(result, tuple) and len(result) == 2:
        return result[0], result[1]
    return result, _NO_CACHE


def _ordered(grads: Any, names: list[str], blocks: Mapping[str, tuple]) -> list[NDArray]:
    """``backward``'s gradients in the inputs' order, each of its input's shape (a clear error otherwise,
    naming the likely slip: a gradient not summed over the batch, or transposed)."""
    if isinstance(grads, Mapping):
        missing = [n for n in names if n not in grads]
        if missing:
            raise TargetError(f"backward returned gradients for {sorted(grads)}; missing {missing}")
        listed = [grads[n] for n in names]
    elif isinstance(grads, (tuple, list)):
        listed = list(grads)
    else:
        listed = [grads]
    if len(listed) != len(names):
        raise TargetError(f"backward returned {len(listed)} gradient(s); expected {len(names)}, one per input "
                          f"({', '.join(names)}), in that order or as a mapping by name")
    out = []
    for name, g in zip(names, listed):
        g = np.asarray(g)
        want = tuple(blocks[name])
        if g.shape != want:
            raise TargetError(f"backward's gradient of {name!r} has shape {g.shape}; expected {want}, the input's"
                              + _shape_slip(g.shape, want))
        out.append(g)
    return out


def _shape_slip(got: tuple, want: tuple) -> str:
    if got == want[::-1] and len(want) == 2:
        return ": it is transposed (dw = x.T @ dout, not dout.T @ x?)"
    if len(got) == len(want) + 1 and got[1:] == want:
        return f": one row per example ({got[0]}): it is not summed over the batch (axis 0)"
    return ""
