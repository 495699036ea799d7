"""Per-layer rules of the fast engine, in a registry: ``register_rule(LayerType, factory)``.

A *rule* restates a layer's math for the engine, so that a check evaluates only what a perturbation changes
(see :mod:`layerkit.fast.changes` for the change types).  It is an object with any of these members:

``propagate(x, y, change) -> change``
    The exact output change for a structured input change (no linearization).
``series(x, y, change) -> SeriesChange`` and ``series_bound(b) -> (b_out, limit)``
    Taylor coefficients of the output change, and a bound on it for complex ``tau`` that certifies the
    truncation (both or neither).
``param_inputs(name, x) -> ParamInputs`` and ``param_change(name, row, cols, steps, x) -> ColumnChange``
    For Dense-like parameters, whose entry ``(r, c)`` moves only output column ``r``, by ``t F[:, c]``.
``direction_change(x, change, dtheta, rows) -> change``
    The output change when the parameters move by ``dtheta`` and the input by ``change``.
``magnitude(x, y, A) -> NDArray``
    Backprop on magnitudes (the scale of the rounding of gradients).
``forward_scale(x) -> NDArray``
    The size of the terms ``forward(x)`` sums for each output (its rounding is about ``eps`` times that),
    for a layer whose outputs can be small sums of large terms (Dense).

Layers know nothing of rules.  A rule registered for a class applies to its instances, and to instances of a
subclass that redefines none of the members the rule reads (``reads``, ``forward`` always among them): a
subclass with its own ``forward`` would otherwise be checked with its parent's math.  Nothing of the layer's
math set on the instance either.  The most derived applicable registration wins.

A layer may still define rule members itself (as methods, each defined at least as far down its class
hierarchy as its ``forward``); those take precedence over a registered rule.

Every rule that is not layerkit's own, on an instance of exactly the class it was registered for, is
confirmed against the layer's ``forward`` before and while the engine uses it (:mod:`layerkit.fast.confirm`).
A layer without parameters and without any rule gets :class:`~layerkit.fast.forward_rule.ForwardRule`, which
calls its ``forward`` on many perturbations at once.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

from .._classes import defined_in
from .forward_rule import ForwardRule

#: Every member a rule may have.
RULE_MEMBERS = ("propagate", "series", "series_bound", "param_inputs", "param_change", "direction_change",
                "magnitude", "forward_scale")


@frozen
class Registration:
    """A rule factory registered for ``layer_type``; ``reads``: the layer members the rule restates."""

    layer_type: type
    factory: Callable[[Any], Any]
    reads: tuple[str, ...]
    builtin: bool


_REGISTRY: dict[type, Registration] = {}


def register_rule(layer_type: type, factory: Callable[[Any], Any], *, reads: tuple[str, ...] = ("forward",),
                  builtin: bool = False) -> None:
    """Make ``factory(layer)`` the engine's rule for instances of ``layer_type`` (and of subclasses that redefine
    none of ``reads``; ``"forward"`` is always included).  Registering a class again replaces its rule.

    ``builtin`` is for layerkit's own layers, whose rules are tested against ``forward`` and used without
    confirmation on instances of exactly ``layer_type``.
    """
    if not isinstance(layer_type, type):
        from ..errors import InputError

        raise InputError("register_rule(layer_type)", "a class", repr(layer_type))
    if not callable(factory):
        from ..errors import InputError

        raise InputError("register_rule(factory)", "a callable taking the layer and returning its rule",
                         repr(factory))
    names = ("forward",) + tuple(n for n in reads if n != "forward")
    _REGISTRY[layer_type] = Registration(layer_type, factory, names, builtin)


def unregister_rule(layer_type: type) -> None:
    """Remove the rule registered for exactly ``layer_type`` (nothing if there is none)."""
    _REGISTRY.pop(layer_type, None)


def provides(layer: Any, *members: str) -> bool:
    """Whether ``layer`` itself has every member, each defined at least as far down its class hierarchy as
    its ``forward`` (a ``forward`` set on the instance requires the members on the instance too)."""
    if layer is None:
        return False
    own = getattr(layer, "__dict__", {})
    if "forward" in own:
        return all(name in own for name in members)
    cls = type(layer)
    return all(hasattr(layer, name) and defined_in(cls, name) <= defined_in(cls, "forward") for name in members)


def _applies(reg: Registration, layer: Any) -> bool:
    """Whether ``reg`` describes ``layer``'s math: nothing it reads redefined below its class or on the
    instance."""
    own = getattr(layer, "__dict__", {})
    if any(name in own for name in reg.reads):
        return False
    cls = type(layer)
    depth = cls.__mro__.index(reg.layer_type)
    return all(defined_in(cls, name) >= depth for name in reg.reads)


def registration_for(layer: Any) -> Registration | None:
    """The most derived registration that applies to ``layer`` (see the module docstring), or None."""
    for klass in type(layer).__mro__:
        reg = _REGISTRY.get(klass)
        if reg is not None and _applies(reg, layer):
            return reg
    return None


def registered(cls: type) -> bool:
    """Whether a rule is registered for ``cls`` or one of its bases."""
    return any(klass in _REGISTRY for klass in cls.__mro__)


class BoundRule:
    """The rule members the engine may use for one layer, whoever supplies them (module docstring).

    ``known`` is True for layerkit's own rule on a layer whose math it describes (nothing it reads redefined
    or set on the instance), ``trusted`` when the layer is moreover an instance of exactly the rule's class:
    such a rule is used without confirmation.  ``source`` says where the rule comes from.
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.members: dict[str, Callable[..., Any]] = {}
        self.trusted = False
        self.known = False
        #: Whether ``propagate`` forms ``f(x + d) - f(x)`` by subtraction (about ``eps |f|`` of rounding).
        self.cancels = False
        self._columnwise: Callable[[Any, Any], bool] | None = None
        self.source = "none"
        own = [name for name in RULE_MEMBERS if provides(layer, name)]
        for name in own:
            self.members[name] = getattr(layer, name)
        reg = registration_for(layer) if layer is not None else None
        if reg is not None:
            rule = reg.factory(layer)
            for name in RULE_MEMBERS:
                if name not in self.members and hasattr(rule, name):
                    self.members[name] = getattr(rule, name)
            self.cancels = "propagate" not in own and bool(getattr(rule, "cancels", False))
            if "propagate" not in own:
                self._columnwise = getattr(rule, "columnwise", None)
            self.known = not own and reg.builtin and "forward" not in getattr(layer, "__dict__", {})
            self.trusted = self.known and type(layer) is reg.layer_type
            self.source = f"registered for {reg.layer_type.__name__}"
        elif layer is not None and not getattr(layer, "param_shapes", None) and "propagate" not in self.members:
            forward_rule = ForwardRule(layer)
            self.members["propagate"] = forward_rule.propagate
            self._columnwise = forward_rule.uniform
            self.cancels = True
            self.source = "forward"
        if own:
            self.source = "the layer's own members"

    def columnwise(self, x: Any, y: Any) -> bool:
        """Whether the layer acts on each entry alone at this input (an elementwise rule, or a forward found
        to commute with a shuffle of the entries), so that a column change stays a column change."""
        probe = self._columnwise
        return bool(probe(x, y)) if probe is not None else False

    def has(self, *names: str) -> bool:
        return all(name in self.members for name in names)

    def __getattr__(self, name: str) -> Any:
        members = self.__dict__.get("members", {})
        if name in members:
            return members[name]
        raise AttributeError(f"no {name} rule for {self.__dict__.get('layer')!r}")


def rule_for(layer: Any) -> BoundRule:
    """The engine's rule for ``layer`` (module docstring)."""
    return BoundRule(layer)
