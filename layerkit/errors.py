"""Exception classes raised by layerkit.

Every error names the argument (or thing) at fault, what was expected and what was received, so that a
message alone is enough to fix the call.  Input errors subclass :class:`ValueError` (or :class:`TypeError`)
so that generic ``except ValueError`` code keeps working.
"""

from __future__ import annotations

from typing import Any


class LayerkitError(Exception):
    """Base class of every exception raised on purpose by layerkit."""


class InputError(LayerkitError, ValueError):
    """An argument has the wrong size, shape, dtype, range or value.

    Attributes
    ----------
    argument : str
        Name of the offending argument, e.g. ``"y"`` or ``"params"``.
    expected, received : str
        Human-readable descriptions used in the message.
    """

    def __init__(self, argument: str, expected: str, received: Any) -> None:
        self.argument = argument
        self.expected = expected
        self.received = received
        super().__init__(f"{argument}: expected {expected}, got {received}")


class UnknownMethodError(InputError):
    """A difference method was requested by a name that is not registered."""

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__("method", "one of " + ", ".join(repr(k) for k in known), repr(name))
        self.name = name
        self.known = known


class NotForwardedError(LayerkitError, RuntimeError):
    """``backward`` was called on a layer before any ``forward``."""


class NotBoundError(LayerkitError, RuntimeError):
    """A layer with parameters was used before parameter arrays were bound to it."""


class ComplexEvaluationError(LayerkitError, TypeError):
    """The target cannot be evaluated at complex parameters, so the complex step cannot be used."""


class TargetError(LayerkitError, RuntimeError):
    """The function under check returned something unusable (wrong type, wrong gradient shape)."""


class NonFiniteError(TargetError):
    """The function under check produced NaN or inf.

    Attributes
    ----------
    where : str
        Which evaluation produced it, e.g. ``"cost at x0"`` or ``"gradient entry Theta2[0, 3]"``.
    """

    def __init__(self, where: str, value: Any) -> None:
        self.where = where
        self.value = value
        super().__init__(f"the target produced a non-finite value ({value}) in the {where}")
