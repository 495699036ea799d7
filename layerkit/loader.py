"""Load a :class:`~layerkit.Problem` from ``path/to/file.py:NAME`` or ``package.module:NAME``.

``NAME`` may be a Problem, a callable with no arguments returning one, or a plain tuple accepted by
:meth:`Problem.coerce`: ``(fun, x0)``, ``(fun, x0, blocks)`` or ``(network, X, y, lambda)``.  Every failure
raises :class:`ProblemLoadError` with a one-line message that names the problem.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from pathlib import Path

from .errors import InputError, LayerkitError
from .problem import Problem


class ProblemLoadError(LayerkitError, ValueError):
    """The target spec could not be turned into a Problem."""


def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())


def load_problem(spec: str) -> Problem:
    """Resolve ``spec`` (``file.py:NAME`` or ``module:NAME``) to a Problem."""
    if ":" not in spec:
        raise ProblemLoadError(f"target {spec!r}: expected path/to/file.py:NAME or package.module:NAME")
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ProblemLoadError(f"target {spec!r}: expected path/to/file.py:NAME or package.module:NAME")
    if where.endswith(".py") or "/" in where or "\\" in where:
        path = Path(where)
        if not path.is_file():
            raise ProblemLoadError(f"target {spec!r}: no such file: {where}")
        # registered under its own name, as ``python file.py`` would not but ``import file`` would: dataclasses,
        # pickling (process pools) and relative imports of sibling modules then work
        mod_name = path.stem if path.stem.isidentifier() and path.stem not in sys.modules else \
            f"_layerkit_target_{abs(hash(str(path.resolve())))}"
        module_spec = importlib.util.spec_from_file_location(mod_name, path)
        if module_spec is None or module_spec.loader is None:
            raise ProblemLoadError(f"target {spec!r}: cannot import {where}")
        module = importlib.util.module_from_spec(module_spec)
        folder = str(path.resolve().parent)
        if folder not in sys.path:
            sys.path.insert(0, folder)
        sys.modules[mod_name] = module
        try:
            module_spec.loader.exec_module(module)
        except (Exception, SystemExit, KeyboardInterrupt) as exc:  # the user's file failed: report their message
            sys.modules.pop(mod_name, None)
            raise ProblemLoadError(f"target {spec!r}: importing {where} failed: {_one_line(exc)}") from None
    else:
        if "" not in sys.path and os.getcwd() not in sys.path:  # as `python -m` would: the current directory
            sys.path.insert(0, os.getcwd())
        try:
            module = importlib.import_module(where)
        except ModuleNotFoundError as exc:
            if exc.name and where.startswith(exc.name):
                raise ProblemLoadError(f"target {spec!r}: no module named {where!r}") from None
            raise ProblemLoadError(f"target {spec!r}: importing {where} failed: {_one_line(exc)}") from None
        except (Exception, SystemExit) as exc:
            raise ProblemLoadError(f"target {spec!r}: importing {where} failed: {_one_line(exc)}") from None
    if not hasattr(module, name):
        raise ProblemLoadError(f"target {spec!r}: {where} has no attribute {name!r}")
    obj = getattr(module, name)
    if callable(obj) and not isinstance(obj, Problem) and not isinstance(obj, tuple):
        try:
            obj = obj()
        except TypeError as exc:
            raise ProblemLoadError(f"target {spec!r}: {name} must be a Problem or a callable with no arguments "
                                   f"returning one ({_one_line(exc)})") from None
        except (Exception, SystemExit) as exc:
            raise ProblemLoadError(f"target {spec!r}: calling {name}() failed: {_one_line(exc)}") from None
    try:
        return Problem.coerce(obj, name=name)
    except InputError as exc:
        raise ProblemLoadError(f"target {spec!r}: {name} gave {exc.received}; expected {exc.expected}") from None
