"""The fast engine: structured changes, per-layer and per-loss rules, network and direction probes."""

from . import layer_rules  # noqa: F401 - registers layerkit's own layers' rules
