"""layerkit: numpy layers over one flat parameter vector, and gradient checkers that locate mismatches."""

from importlib.metadata import PackageNotFoundError, version

from .datasets import debug_data, debug_matrix
from .errors import (ComplexEvaluationError, InputError, LayerkitError, NonFiniteError, NotBoundError,
                     NotForwardedError, TargetError, UnknownMethodError)
from .layers import Dense, Layer, Sigmoid
from .layout import Block, ParameterLayout
from .network import FitResult, Network, Objective

try:
    __version__ = version("layerkit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = [
    "Block", "ComplexEvaluationError", "Dense", "FitResult", "InputError", "Layer", "LayerkitError", "Network",
    "NonFiniteError", "NotBoundError", "NotForwardedError", "Objective", "ParameterLayout", "Sigmoid",
    "TargetError", "UnknownMethodError", "debug_data", "debug_matrix",
]
