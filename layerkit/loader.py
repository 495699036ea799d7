"""Load a :class:`~layerkit.Problem` from ``path/to/file.py:NAME`` or ``package.module:NAME``.

``NAME`` (``problem`` when ``file.py`` is given alone) may be a Problem; a callable returning one (with no
arguments, or taking ``lambda_``, which ``--lambda`` then sets); a cost function in a course signature
(:mod:`layerkit.course`), checked on the course's own debug problem; or a plain tuple accepted by
:meth:`Problem.coerce`: ``(fun, x0)``, ``(fun, x0, blocks)`` or ``(network, X, y, lambda)``.  Every failure
raises :class:`ProblemLoadError` with a one-line message that names the problem; the exception behind it,
if any, is its ``original`` (for ``--traceback``).
"""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import os
import sys
from pathlib import Path
from typing import Any

from .course import course_problem, course_signature
from .errors import InputError, LayerkitError
from .problem import Problem

#: The name looked for in ``file.py`` when the target names none.
DEFAULT_NAME = "problem"


class ProblemLoadError(LayerkitError, ValueError):
    """The target spec could not be turned into a Problem; ``original`` is the exception behind it, if any."""

    def __init__(self, message: str, original: BaseException | None = None) -> None:
        super().__init__(message)
        self.original = original


def takes_lambda(obj: Any) -> bool:
    """Whether ``obj`` is a callable with a parameter named ``lambda_``."""
    try:
        return "lambda_" in inspect.signature(obj).parameters
    except (TypeError, ValueError):
        return False


def _required(obj: Any) -> list[str]:
    """The parameters of ``obj`` that have no default (empty when unknown)."""
    try:
        params = inspect.signature(obj).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in params if p.default is p.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                                                          p.KEYWORD_ONLY)]


def _wrapper_hint(name: str, required: list[str]) -> str:
    """A wrapper to paste for a cost function in no course signature: every argument it takes is passed (the
    first as the flat parameters), ``lambda_`` from the factory's own."""
    first, rest = required[0], required[1:]
    args = ", ".join(["t"] + rest)
    others = [r for r in rest if r != "lambda_"]
    return (f"{name} takes arguments ({', '.join(required)}) in no course signature layerkit knows (see "
            f"layerkit.course_signature).  Give layerkit a problem instead, e.g. in the same file:  "
            f"def problem(lambda_=1.0): return layerkit.Problem.from_function(lambda t: {name}({args}), "
            f"{first}0, blocks={{...}}, order='F', lambda_=lambda_)  with {first}0"
            f"{' and ' + ', '.join(others) if others else ''} defined there, then run "
            f"'layerkit check FILE.py:problem'")

def _one_line(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}".strip()
    return " ".join(text.split())


def target_object(spec: str) -> Any:
    """The object ``NAME`` of ``spec`` (``file.py:NAME`` or ``module:NAME``), its module imported."""
    if ":" not in spec and spec.endswith(".py"):
        spec = f"{spec}:{DEFAULT_NAME}"
    if ":" not in spec:
        raise ProblemLoadError(f"target {spec!r}: expected path/to/file.py[:NAME] or package.module:NAME")
    where, _, name = spec.rpartition(":")
    if not where or not name:
        raise ProblemLoadError(f"target {spec!r}: expected path/to/file.py:NAME or package.module:NAME")
    is_file = where.endswith(".py") or "/" in where or "\\" in where
    module = _import_file(where, spec) if is_file else _import_module(where, spec)
    if not hasattr(module, name):
        found = [k for k, v in vars(module).items() if getattr(v, "__module__", None) == module.__name__
                 and callable(v) and course_signature(v) is not None]
        hint = (f"; cost functions in a course signature there: {', '.join(found)} (layerkit check "
                f"{where}:{found[0]})" if found else "")
        raise ProblemLoadError(f"target {spec!r}: {where} has no attribute {name!r}{hint}")
    return getattr(module, name)


def _import_file(where: str, spec: str) -> Any:
    """The module of the file ``where``, registered under its own name, as ``python file.py`` would not but
    ``import file`` would: dataclasses, pickling (process pools) and relative imports of sibling modules then
    work."""
    path = Path(where)
    if not path.is_file():
        raise ProblemLoadError(f"target {spec!r}: no such file: {where}")
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
        raise ProblemLoadError(f"target {spec!r}: importing {where} failed: {_one_line(exc)}", exc) from None
    return module


def _import_module(where: str, spec: str) -> Any:
    """The module ``where``, looked for in the current directory too (as ``python -m`` would)."""
    if "" not in sys.path and os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        return importlib.import_module(where)
    except ModuleNotFoundError as exc:
        if exc.name and where.startswith(exc.name):
            raise ProblemLoadError(f"target {spec!r}: no module named {where!r}") from None
        raise ProblemLoadError(f"target {spec!r}: importing {where} failed: {_one_line(exc)}") from None
    except (Exception, SystemExit) as exc:
        raise ProblemLoadError(f"target {spec!r}: importing {where} failed: {_one_line(exc)}", exc) from None


def load_problem(spec: str, lambda_: float | None = None, *, obj: Any = None) -> Problem:
    """Resolve ``spec`` (``file.py:NAME``, ``file.py`` for its ``problem``, or ``module:NAME``) to a Problem; a
    factory that takes ``lambda_`` is called with ``lambda_`` when it is given; a cost function in a course
    signature becomes the course's debug problem (:func:`~layerkit.course_problem`) at ``lambda_`` (0 when
    not given).  ``obj``: the target's object when the caller has already loaded it (its file is then not
    run a second time)."""
    if obj is None:
        obj = target_object(spec)
    name = (spec if ":" in spec else f"{spec}:{DEFAULT_NAME}").rpartition(":")[2]
    if course_signature(obj) is not None:
        try:
            return course_problem(obj, 0.0 if lambda_ is None else lambda_)
        except (Exception, SystemExit) as exc:
            raise ProblemLoadError(f"target {spec!r}: calling {name} on the course's debug problem failed: "
                                   f"{_one_line(exc)}", exc) from None
    if lambda_ is not None and not takes_lambda(obj):
        raise ProblemLoadError(f"target {spec!r}: --lambda needs a factory that takes lambda_, e.g. "
                               f"def {name}(lambda_=1.0): ...; {name} does not")
    if callable(obj) and not isinstance(obj, Problem) and not isinstance(obj, tuple):
        required = _required(obj)
        if required and required != ["lambda_"]:
            raise ProblemLoadError(f"target {spec!r}: {_wrapper_hint(name, required)}")
        try:
            obj = obj(lambda_=lambda_) if lambda_ is not None else obj()
        except TypeError as exc:
            raise ProblemLoadError(f"target {spec!r}: {name} must be a Problem or a callable with no arguments "
                                   f"returning one ({_one_line(exc)})", exc) from None
        except (Exception, SystemExit) as exc:
            raise ProblemLoadError(f"target {spec!r}: calling {name}() failed: {_one_line(exc)}", exc) from None
    try:
        return Problem.coerce(obj, name=name)
    except InputError as exc:
        raise ProblemLoadError(f"target {spec!r}: {name} gave {exc.received}; expected {exc.expected}") from None
