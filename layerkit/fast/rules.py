"""Per-layer rules of the fast engine: ``register_rule(LayerType, factory)`` for layerkit's own layers.

A *rule* restates a layer's math for the engine, so that a check evaluates only what a perturbation changes
(see :mod:`layerkit.fast.changes` for the change types).  It is an object with any of these members:

``propagate(x, y, change) -> change``
    The exact output change for a structured input change (no linearization).
``series(x, y, change) -> SeriesChange`` and ``series_bound(b) -> (b_out, limit)``
    Taylor coefficients of the output change, and a bound on it for complex ``tau`` that certifies the
    truncation (both or neither).
``kink_distance(x) -> NDArray``
    With ``series``: the series describes the layer only on the piece that holds each input entry, for
    changes smaller than this distance to the nearest kink (a piecewise-linear layer's); a change that may
    reach a kink must be evaluated by ``propagate`` instead.
``param_change(name, row, cols, steps, x) -> ColumnChange``, with ``param_inputs(name, x) -> ParamInputs``
    For Dense-like parameters, whose entry ``(r, c)`` moves only output column ``r``, by ``t F[:, c]``.
``param_change`` with ``feature_inputs(name, x) -> NDArray``
    For a per-feature parameter vector (BatchNorm's scale and shift), whose entry ``r`` moves only output
    feature ``r``, by ``t G[:, r]`` (``G`` shaped like the output).
``direction_change(x, change, dtheta, rows) -> change``
    The output change when the parameters move by ``dtheta`` and the input by ``change``.
``magnitude(x, y, A) -> NDArray``
    Backprop on magnitudes (the scale of the rounding of gradients).
``forward_scale(x) -> NDArray``
    The size of the terms ``forward(x)`` sums for each output (its rounding is about ``eps`` times that),
    for a layer whose outputs can be small sums of large terms (Dense).

**The cost is the only truth.**  A rule stands behind a check's numerical reference only when it is
layerkit's own code describing layerkit's own math: registered here for one of layerkit's layer classes, and
applied to an instance whose class redefines none of the members the rule reads (``reads``, ``forward``
always among them) and whose instance sets none of them.  On an instance of exactly the registered class
such a rule is used as it is (``trusted``); on a subclass's it is first confirmed against the layer's own
``forward`` on every example (``known``; see :mod:`layerkit.fast.confirm`).

Nothing a user supplies about derivatives is used.  A user's layer gets what its ``forward`` computes: for a
layer without parameters, batched calls of that ``forward``
(:class:`~layerkit.fast.forward_rule.ForwardRule`); for an :class:`~layerkit.Elementwise` one, its ``fn``
(:class:`~layerkit.fast.fn_rule.FnRule`, Taylor coefficients derived from ``fn`` at complex points when it is
analytic); for a layer with parameters, a re-run of the layers from its own.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from attrs import frozen

from .._classes import defined_in
from ..errors import InputError
from .forward_rule import ForwardRule

#: Every member a rule may have.
RULE_MEMBERS = ("propagate", "series", "series_bound", "kink_distance", "param_inputs", "param_change",
                "feature_inputs", "direction_change", "magnitude", "forward_scale", "entry_series",
                "linear_weights")


@frozen
class Registration:
    """A rule factory registered for ``layer_type``; ``reads``: the layer members the rule restates."""

    layer_type: type
    factory: Callable[[Any], Any]
    reads: tuple[str, ...]
    #: ``reads`` as the class held them when the rule was registered: a rule describes that math only.
    members: tuple[Any, ...] = ()

    def unchanged(self) -> bool:
        """Whether the class still holds the members the rule restates (none replaced on the class since)."""
        return all(getattr(self.layer_type, name, None) is member for name, member in zip(self.reads, self.members))


_REGISTRY: dict[type, Registration] = {}


def register_rule(layer_type: type, factory: Callable[[Any], Any], *, reads: tuple[str, ...] = ("forward",)) -> None:
    """Make ``factory(layer)`` the engine's rule for instances of ``layer_type`` (one of layerkit's layer
    classes) and of subclasses that redefine none of ``reads`` (``"forward"`` is always included).
    Registering a class again replaces its rule."""
    if not isinstance(layer_type, type):
        raise InputError("register_rule(layer_type)", "a class", repr(layer_type))
    if not _own_code(layer_type) or not _own_code(factory):
        raise InputError("register_rule", "one of layerkit's own layer classes and rules (a rule restates a "
                         "layer's derivatives, and nothing a user supplies about derivatives may stand behind a "
                         "check's reference)", f"{layer_type!r} and {factory!r}")
    if not callable(factory):
        raise InputError("register_rule(factory)", "a callable taking the layer and returning its rule",
                         repr(factory))
    names = ("forward",) + tuple(n for n in reads if n != "forward")
    _REGISTRY[layer_type] = Registration(layer_type, factory, names,
                                         tuple(getattr(layer_type, name, None) for name in names))


def _own_code(obj: Any) -> bool:
    return str(getattr(obj, "__module__", "")).split(".")[0] == "layerkit"


def unregister_rule(layer_type: type) -> None:
    """Remove the rule registered for exactly ``layer_type`` (nothing if there is none)."""
    _REGISTRY.pop(layer_type, None)


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
        if reg is not None and _applies(reg, layer) and reg.unchanged():
            return reg
    return None


class BoundRule:
    """The rule members the engine may use for one layer (module docstring).

    ``known`` is True for layerkit's own rule on a layer whose math it describes, ``trusted`` when the layer
    is moreover an instance of exactly the rule's class.  ``source`` says where the rule comes from:
    ``"registered for NAME"``, ``"forward"`` (batched calls of a parameterless layer's own ``forward``) or
    ``"none"`` (a layer with parameters and no rule of layerkit's: the engine re-runs it).
    """

    def __init__(self, layer: Any) -> None:
        self.layer = layer
        self.members: dict[str, Callable[..., Any]] = {}
        self.trusted = False
        self.known = False
        #: Whether ``propagate`` forms ``f(x + d) - f(x)`` by subtraction (about ``eps |f|`` of rounding).
        self.cancels = False
        #: Whether the rule keeps each perturbation's batch apart through a batch-coupled layer (its
        #: statistics over the examples are each batch item's own; :mod:`layerkit.fast.batch_rules`).
        self.batch_aware = False
        #: Whether ``series`` reads coefficients derived numerically from the layer's ``fn`` (accurate to about
        #: ``eps |f|`` each, not ``eps |f'|``: see :class:`~layerkit.fast.fn_rule.FnRule`).
        self.derived = False
        self._columnwise: Callable[[Any, Any], bool] | None = None
        self.source = "none"
        reg = registration_for(layer) if layer is not None else None
        if reg is not None:
            rule = reg.factory(layer)
            for name in RULE_MEMBERS:
                if hasattr(rule, name):
                    self.members[name] = getattr(rule, name)
            self.cancels = bool(getattr(rule, "cancels", False))
            self.batch_aware = bool(getattr(rule, "batch_aware", False))
            self.derived = bool(getattr(rule, "derived", False))
            self._columnwise = getattr(rule, "columnwise", None)
            self.known = True
            self.trusted = type(layer) is reg.layer_type
            self.source = f"registered for {reg.layer_type.__name__}"
        elif (layer is not None and not getattr(layer, "param_shapes", None)
              and not getattr(layer, "batch_coupled", False) and getattr(layer, "engine_ready", True) is not False):
            forward_rule = ForwardRule(layer)
            self.members["propagate"] = forward_rule.propagate
            self.members["series"] = forward_rule.series
            self.members["series_bound"] = forward_rule.series_bound
            self.members["entry_series"] = forward_rule.entry_series
            self._columnwise = forward_rule.uniform
            self.cancels = True
            self.derived = True
            self.source = "forward"

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
