"""layerkit: numpy layers over one flat parameter vector, and gradient checkers that locate mismatches.

The public API::

    Network, Dense, Sigmoid, Layer, Binding        layers and networks
    check_network, check_function, check_layer     gradient checks -> Report
    Forward, Central, Richardson, ComplexStep      strategies (register_method, get_method for more)
    Report, Finding, Problem, Noise                results, the measured noise of a cost, and problems

The package is organised in wings, each importing only those below it: ``nn`` (layers, losses, the network
and its layout), ``fast`` (the network engine and the confirmation of its rules), ``check`` (subjects,
strategies, noise, tolerances, reports, directional checks), ``diagnosis`` (the doctor and the step sweep),
and ``api`` (the orchestrator).  Everything public is importable from ``layerkit`` itself.
"""

from importlib.metadata import PackageNotFoundError, version

from .api import check_function, check_layer, check_network
from .check.methods import (
    Central,
    ComplexStep,
    Estimate,
    FiniteDifference,
    Forward,
    Method,
    Richardson,
    get_method,
    method_names,
    register_method,
)
from .check.noise import Noise
from .check.report import BlockSummary, Entry, Finding, Report
from .errors import (
    ComplexEvaluationError,
    InputError,
    LayerkitError,
    NonFiniteError,
    NotBoundError,
    NotForwardedError,
    TargetError,
    UnknownMethodError,
)
from .fast.rules import register_rule, rule_for, unregister_rule
from .nn.datasets import debug_data, debug_matrix
from .nn.elementwise import Elementwise, Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from .nn.layers import Dense, Layer
from .nn.layout import Block, ParameterLayout
from .nn.losses import L2, Loss, MeanSquaredError, SigmoidCrossEntropy, SoftmaxCrossEntropy
from .nn.network import Binding, FitResult, Network
from .nn.objective import Objective
from .problem import Problem

try:
    __version__ = version("layerkit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = [
    "Binding", "Block", "BlockSummary", "Central", "ComplexEvaluationError", "ComplexStep", "Dense", "Elementwise",
    "Entry", "Estimate", "Identity", "L2", "LeakyReLU", "Loss", "MeanSquaredError", "ReLU", "SigmoidCrossEntropy",
    "SoftmaxCrossEntropy", "Tanh",
    "Finding", "FiniteDifference", "FitResult", "Forward", "InputError", "Layer", "LayerkitError", "Method",
    "Network", "Noise", "NonFiniteError", "NotBoundError", "NotForwardedError", "Objective", "ParameterLayout", "Problem",
    "Report", "Richardson", "Sigmoid", "TargetError", "UnknownMethodError", "check_function", "check_layer",
    "check_network", "debug_data", "debug_matrix", "get_method", "method_names", "register_method",
    "register_rule", "rule_for", "unregister_rule",
]
