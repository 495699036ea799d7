"""layerkit: numpy layers over one flat parameter vector, and gradient checkers that locate mismatches.

The public API::

    Network, Dense, Sigmoid, Layer, Binding        layers and networks
    check_network, check_function, check_layer     gradient checks -> Report
    Forward, Central, Richardson, ComplexStep      strategies (register_method, get_method for more)
    Report, Finding, Problem, Noise                results, the measured noise of a cost, and problems

The package is organised in wings, each importing only those below it: ``nn`` (layers, losses, the network,
its flat parameters and their layout), ``fast`` (the network engine: the state read off a forward pass, Taylor
tables, the exact path, the rules and their confirmation), ``check`` (the steps of a check: options, ledger,
baseline, the choice of evaluator, probes, strategies, the full and the directional check and the safeguards
they share, verdicts, reports), ``diagnosis`` (the doctor's patterns and follow-ups, the step sweep) and
``api`` (the recipe, :func:`~layerkit.api.run_check`).  Below them: ``numerics`` (constants and small
formulas shared by every wing) and ``snapshot`` (putting the caller's objects back).  Everything public is
importable from ``layerkit`` itself.
"""

from importlib.metadata import PackageNotFoundError, version

from .api import check_backward, check_function, check_layer, check_network
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
from .course import course_problem, course_problems, course_signature
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
from .fast.rules import rule_for
from .nn.batch import BatchNorm, Dropout
from .nn.buffer import Binding
from .nn.datasets import debug_data, debug_matrix
from .nn.elementwise import Elementwise, Identity, LeakyReLU, ReLU, Sigmoid, Tanh
from .nn.layers import Dense, Layer
from .nn.layout import Block, ParameterLayout
from .nn.losses import L2, Loss, MeanSquaredError, SigmoidCrossEntropy, SoftmaxCrossEntropy
from .nn.network import FitResult, Network, Objective
from .nn.spatial import AvgPool2D, Conv2D, Flatten, MaxPool2D
from .problem import Problem

try:
    __version__ = version("layerkit")
except PackageNotFoundError:  # running from a source tree
    __version__ = "0.1.0"

__all__ = [
    "AvgPool2D", "BatchNorm", "Conv2D", "Dropout", "Flatten", "MaxPool2D",
    "Binding", "Block", "BlockSummary", "Central", "ComplexEvaluationError", "ComplexStep", "Dense", "Elementwise",
    "Entry", "Estimate", "Identity", "L2", "LeakyReLU", "Loss", "MeanSquaredError", "ReLU", "SigmoidCrossEntropy",
    "SoftmaxCrossEntropy", "Tanh",
    "Finding", "FiniteDifference", "FitResult", "Forward", "InputError", "Layer", "LayerkitError", "Method",
    "Network", "Noise", "NonFiniteError", "NotBoundError", "NotForwardedError", "Objective", "ParameterLayout", "Problem",
    "Report", "Richardson", "Sigmoid", "TargetError", "UnknownMethodError", "check_backward", "check_function", "check_layer",
    "check_network", "course_problem", "course_problems", "course_signature", "debug_data", "debug_matrix", "get_method", "method_names", "register_method",
    "rule_for",
]
