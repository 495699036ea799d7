"""layerkit: numpy layers over one flat parameter vector, and gradient checkers that locate mismatches.

The public API::

    Network, Dense, Sigmoid, Layer                 layers and networks
    check_network, check_function, check_layer     gradient checks -> Report
    Forward, Central, Richardson, ComplexStep      strategies (register_method, get_method for more)
    Report, Finding, Problem                       results and problems
"""

from importlib.metadata import PackageNotFoundError, version

from .api import check_function, check_layer, check_network
from .nn.datasets import debug_data, debug_matrix
from .errors import (ComplexEvaluationError, InputError, LayerkitError, NonFiniteError, NotBoundError,
                     NotForwardedError, TargetError, UnknownMethodError)
from .nn.layers import Dense, Layer, Sigmoid
from .nn.layout import Block, ParameterLayout
from .check.methods import (Central, ComplexStep, Estimate, FiniteDifference, Forward, Method, Richardson, get_method,
                      method_names, register_method)
from .nn.network import FitResult, Network, Objective
from .problem import Problem
from .check.report import BlockSummary, Entry, Finding, Report

try:
    __version__ = version("layerkit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = [
    "Block", "BlockSummary", "Central", "ComplexEvaluationError", "ComplexStep", "Dense", "Entry", "Estimate",
    "Finding", "FiniteDifference", "FitResult", "Forward", "InputError", "Layer", "LayerkitError", "Method",
    "Network", "NonFiniteError", "NotBoundError", "NotForwardedError", "Objective", "ParameterLayout", "Problem",
    "Report", "Richardson", "Sigmoid", "TargetError", "UnknownMethodError", "check_function", "check_layer",
    "check_network", "debug_data", "debug_matrix", "get_method", "method_names", "register_method",
]
