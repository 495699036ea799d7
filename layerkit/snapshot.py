"""Put the caller's objects back as they were: the snapshot a check takes of a network, a layer or a user's
helper objects before it evaluates them in place, and restores on every exit path (a normal return, an
exception, a KeyboardInterrupt).

What is kept: every object's attributes (shallow, ``__slots__`` too), the contents of the lists, tuples,
deques, dicts and plain helper objects those attributes lead to (where a layer keeps what ``bind`` gave it),
the layers reachable from them, and with ``state`` the values of the small writeable arrays among them (a
running statistic).  Attributes are compared and put back by identity, never by ``==``.
"""

from __future__ import annotations

import collections
import contextlib
import copy
import functools
import inspect
import itertools
import random
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Arrays a layer holds of up to this many entries are state whose values a check puts back (a running
#: statistic, a counter); larger ones, per-example caches of activations, are put back by identity only
#: (copying them at every check would cost more than some checks).
MAX_STATE = 1 << 16


@contextmanager
def preserving(objects: Sequence[Any], arrays: Sequence[NDArray] = (), state: bool = False) -> Iterator[None]:
    """Put ``objects`` (and layers they refer to by attribute) and the values of ``arrays`` back as they were
    when the block is left, however it is left: rebound attributes get their old objects, the lists, dicts
    and helper objects they lead to their old contents, and each array its old values (written in place,
    after the attributes).  With ``state``, every writeable array of at most :data:`MAX_STATE` entries among
    those attributes and contents is one of ``arrays`` too."""
    snapshot = _snapshot(list(objects) + _attached(objects))
    arrays = list(arrays)
    if state:
        seen = {id(a) for a in arrays}
        for _, attrs, held in snapshot:
            values = list(attrs["__dict__"].values()) + list(attrs["__slots__"].values())
            for _, contents in held:
                values += list(contents.values()) if isinstance(contents, dict) else list(contents)
            for v in values:
                if isinstance(v, np.ndarray) and v.flags.writeable and v.size <= MAX_STATE and id(v) not in seen:
                    seen.add(id(v))
                    arrays.append(v)
    saved = [(a, a.copy()) for a in arrays]
    rewind = _streams(snapshot)
    try:
        yield
    finally:
        _restore(snapshot)
        for a, copied in saved:
            a[...] = copied
        for put_back in rewind:
            put_back()


def _streams(snapshot: list[tuple[Any, dict[str, Any], list[tuple[Any, Any]]]]) -> list[Callable[[], None]]:
    """What puts every random stream and counter among the snapshot's attributes and contents back where it
    is now: a ``numpy.random.Generator`` (its bit generator's state), a ``RandomState``, a ``random.Random``,
    and numpy's and ``random``'s global streams; an ``itertools.count``, which cannot be rewound in place, is
    rebound to a copy at its old position wherever it moved (a dropout mask drawn during a check leaves the
    user's stream exactly where it was)."""
    global_np, global_py = np.random.get_state(), random.getstate()
    out: list[Callable[[], None]] = [lambda: np.random.set_state(global_np), lambda: random.setstate(global_py)]
    seen: set[int] = set()
    for obj, attrs, held in snapshot:
        places: list[tuple[Any, Any]] = [(vars(obj) if hasattr(obj, "__dict__") else None, attrs["__dict__"].items())]
        for h, contents in held:
            live = None if isinstance(h, tuple) else h if isinstance(h, (dict, list, collections.deque)) else vars(h)
            places.append((live, contents.items() if isinstance(contents, dict) else enumerate(contents)))
        for live, items in places:
            for key, value in items:
                if id(value) not in seen:
                    seen.add(id(value))
                    keeper = _stream_keeper(value)
                    if keeper is not None:
                        out.append(keeper)
                if live is not None and isinstance(value, itertools.count):
                    out.append(_counter_keeper(live, key, value))
    return out


@contextmanager
def streams_kept(objects: Sequence[Any]) -> Iterator[None]:
    """Put back, however the block is left, the random streams code reachable from ``objects`` may draw
    from: numpy's and ``random``'s global ones; those held by the objects' classes (a dropout layer's
    class-level ``rng``) and by the modules that define them; and for a function, those in its closure, its
    bound instance, its ``functools.partial`` arguments and its module's globals."""
    keepers: list[Callable[[], None]] = []
    seen: set[int] = set()
    global_np, global_py = np.random.get_state(), random.getstate()
    for value in _stream_places(objects):
        if id(value) not in seen:
            seen.add(id(value))
            keeper = _stream_keeper(value)
            if keeper is not None:
                keepers.append(keeper)
    try:
        yield
    finally:
        np.random.set_state(global_np)
        random.setstate(global_py)
        for put_back in keepers:
            put_back()


def _stream_places(objects: Sequence[Any]) -> Iterator[Any]:
    """The values a stream may hide in, one level deep (module docstring of :func:`streams_kept`)."""
    modules: dict[str, Any] = {}
    for obj in objects:
        while isinstance(obj, functools.partial):
            yield from obj.args
            yield from obj.keywords.values()
            obj = obj.func
        if callable(obj) and hasattr(obj, "__code__") or inspect.ismethod(obj):
            for cell in getattr(obj, "__closure__", None) or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    yield cell.cell_contents
            owner = getattr(obj, "__self__", None)
            if owner is not None and hasattr(owner, "__dict__"):
                yield from vars(owner).values()
            yield from (getattr(obj, "__globals__", None) or {}).values()
            continue
        for cls in type(obj).__mro__[:-1]:
            yield from vars(cls).values()
            module = sys.modules.get(cls.__module__)
            if module is not None and not cls.__module__.startswith(("numpy", "builtins")):
                modules[cls.__module__] = module
    for module in modules.values():
        yield from vars(module).values()


def _stream_keeper(value: Any) -> Callable[[], None] | None:
    """What puts a random stream back where it is now (None for anything else)."""
    if isinstance(value, np.random.Generator):
        value = value.bit_generator
    if isinstance(value, np.random.BitGenerator):
        bits, state = value, value.state
        return lambda: setattr(bits, "state", state)
    if isinstance(value, np.random.RandomState):
        rs, rs_state = value, value.get_state()
        return lambda: rs.set_state(rs_state)
    if isinstance(value, random.Random):
        py, py_state = value, value.getstate()
        return lambda: py.setstate(py_state)
    return None


def _counter_keeper(holder: Any, key: Any, value: itertools.count) -> Callable[[], None]:
    """Rebinds ``holder[key]`` to a copy of the counter at its present position, if it has moved."""
    where, copied = repr(value), copy.copy(value)

    def put_back() -> None:
        if repr(holder[key]) != where:
            holder[key] = copied

    return put_back


def _attached(objects: Sequence[Any], depth: int = 4) -> list[Any]:
    """Layers reachable from ``objects`` through attributes, and through lists, tuples and dicts held in
    attributes, ``depth`` levels down (a layer that wraps another, a block of layers kept in a list, a tied
    layer's partner), that are not among ``objects`` themselves."""
    seen = {id(o) for o in objects}
    out: list[Any] = []
    frontier = list(objects)
    for _ in range(depth):
        found = []
        for obj in frontier:
            for value in _attribute_values(obj):
                items = list(value.values()) if isinstance(value, dict) else \
                    list(value) if isinstance(value, (list, tuple)) else [value]
                for item in items:
                    if id(item) not in seen and _is_layer(item):
                        seen.add(id(item))
                        found.append(item)
        out += found
        frontier = found
        if not frontier:
            break
    return out


def _is_layer(obj: Any) -> bool:
    """``isinstance(obj, Layer)`` without the cost of a runtime protocol check (it runs on every attribute of
    every layer, at every evaluation of an objective)."""
    return not isinstance(obj, (type, np.ndarray)) and all(
        hasattr(obj, name) for name in ("param_shapes", "bind", "forward", "backward"))


def _slots(obj: Any) -> list[str]:
    names: list[str] = []
    for klass in type(obj).__mro__:
        slots = vars(klass).get("__slots__", ())
        names += [slots] if isinstance(slots, str) else [n for n in slots if n not in ("__dict__", "__weakref__")]
    return names


def _attribute_values(obj: Any) -> list[Any]:
    values = list(getattr(obj, "__dict__", {}).values())
    for name in _slots(obj):
        if hasattr(obj, name):
            values.append(getattr(obj, name))
    return values


_MISSING = object()


#: How far below an object's attributes the containers that may hold its bindings are looked for.
HOLDER_DEPTH = 3


def _holders(values: Sequence[Any], seen: set[int]) -> list[Any]:
    """Lists, dicts and plain attribute holders (``SimpleNamespace``, a user's helper object) reachable from
    ``values``, ``HOLDER_DEPTH`` levels down: where a layer may keep what ``bind`` gives it (``self._bound =
    [w, gw]``, ``self.state["bound"]["w"]``).  Layers are left to their own snapshot; arrays, types, modules
    and functions hold no bindings of their own."""
    out: list[Any] = []
    frontier = list(values)
    for _ in range(HOLDER_DEPTH):
        found = []
        for v in frontier:
            if id(v) in seen or isinstance(v, (np.ndarray, type, str, bytes, int, float, complex)) or callable(v) \
                    or type(v).__module__ in ("builtins", "numpy") and not isinstance(v, _CONTAINERS) \
                    or _is_layer(v):
                continue
            if isinstance(v, _CONTAINERS) or hasattr(v, "__dict__"):
                seen.add(id(v))
                out.append(v)
                found += list(v.values()) if isinstance(v, dict) else list(v) if isinstance(v, _SEQUENCES) \
                    else list(vars(v).values())
        frontier = found
    return out


#: Sequences whose items a layer may keep its bindings or state in (a tuple's items cannot be rebound, but the
#: arrays they hold can change in place); dicts and plain objects are the other holders.
_SEQUENCES = (list, tuple, collections.deque)
_CONTAINERS = _SEQUENCES + (dict,)


def _contents(holder: Any) -> Any:
    return list(holder) if isinstance(holder, _SEQUENCES) else dict(
        holder if isinstance(holder, dict) else vars(holder))


def _snapshot(objects: Sequence[Any]) -> list[tuple[Any, dict[str, Any], list[tuple[Any, Any]]]]:
    """Each distinct object's attributes (shallow; ``__slots__`` too) and the shallow contents of the lists,
    dicts and helper objects its attributes lead to (see :func:`_holders`)."""
    out, seen = [], set()
    for obj in objects:
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        attrs = dict(getattr(obj, "__dict__", {}))
        slots = {name: getattr(obj, name, _MISSING) for name in _slots(obj)}
        held = [(h, _contents(h)) for h in _holders(list(attrs.values()) + list(slots.values()), seen)]
        out.append((obj, {"__dict__": attrs, "__slots__": slots}, held))
    return out


def _restore(state: list[tuple[Any, dict[str, Any], list[tuple[Any, Any]]]]) -> None:
    for obj, saved, held in state:
        attrs = saved["__dict__"]
        if hasattr(obj, "__dict__"):
            current = vars(obj)
            if not _same(current, attrs):
                current.clear()
                current.update(attrs)
        for name, value in saved["__slots__"].items():
            if value is _MISSING:
                if hasattr(obj, name):
                    delattr(obj, name)
            elif getattr(obj, name, _MISSING) is not value:
                setattr(obj, name, value)
        for h, contents in held:
            if isinstance(h, tuple):
                continue  # its items cannot have been rebound
            if isinstance(h, (list, collections.deque)):
                if len(h) != len(contents) or any(a is not b for a, b in zip(h, contents)):
                    h.clear()
                    h.extend(contents)
                continue
            d = h if isinstance(h, dict) else vars(h)
            if not _same(d, contents):
                d.clear()
                d.update(contents)


def _same(a: dict, b: dict) -> bool:
    """Whether two dicts hold the same keys bound to the same objects (identity, never ``==``)."""
    return len(a) == len(b) and all(k in a and a[k] is v for k, v in b.items())
