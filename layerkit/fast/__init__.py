"""The fast engine: structured changes, per-layer and per-loss rules, network and direction probes."""

from . import (
    batch_rules,  # noqa: F401 - and those of its batch-coupled layers
    layer_rules,  # noqa: F401 - registers layerkit's own layers' rules
    spatial_rules,  # noqa: F401 - and those of its image layers
)
