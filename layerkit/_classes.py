"""Where in a class hierarchy a member is defined: the ground floor of the rule that a subclass overriding
one method must not be handled with its parent's version of another."""

from __future__ import annotations


def defined_in(cls: type, name: str) -> int:
    """Position in ``cls``'s MRO of the class that defines attribute ``name`` (large when none does)."""
    for i, klass in enumerate(cls.__mro__):
        if name in vars(klass):
            return i
    return len(cls.__mro__)
