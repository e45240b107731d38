"""Resolving the handler string ``module.function`` as awslambdaric does."""

from __future__ import annotations

import importlib
import sys

from ._exceptions import HandlerLoadError
from ._wire import ErrorType


def load_handler(spec: str, task_root: str | None = None) -> object:
    """Import the module of ``spec`` and return its attribute.

    The string splits on its last dot; ``/`` in the module part stands for a
    package separator (``src/app.handler``).  Failures raise
    ``HandlerLoadError`` carrying Lambda's error type.  Any other exception the
    module raises while importing propagates unchanged: it is the user's init
    error.
    """
    if task_root and task_root not in sys.path:
        sys.path.insert(0, task_root)

    module_name, dot, attribute = spec.rpartition(".")
    if not dot or not module_name or not attribute:
        raise HandlerLoadError(
            ErrorType.MALFORMED_HANDLER_NAME,
            f"Bad handler '{spec}': expected 'module.function', "
            "for example 'app.handler'",
        )
    module_name = module_name.replace("/", ".")
    if module_name.split(".")[0] in sys.builtin_module_names:
        raise HandlerLoadError(
            ErrorType.BUILT_IN_MODULE_CONFLICT,
            f"Cannot use built-in module {module_name} as a handler module",
        )

    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise HandlerLoadError(
            ErrorType.IMPORT_MODULE_ERROR,
            f"Unable to import module '{module_name}': {exc}",
        ) from exc
    except TypeError as exc:  # a relative name such as '..app'
        raise HandlerLoadError(
            ErrorType.MALFORMED_HANDLER_NAME,
            f"Bad handler '{spec}': the module must be an absolute name, "
            f"like 'app' or 'pkg/app', not {module_name!r}",
        ) from exc
    except SyntaxError as exc:
        location = f'  File "{exc.filename}" Line {exc.lineno}\n    {exc.text or ""}'
        raise HandlerLoadError(
            ErrorType.USER_CODE_SYNTAX_ERROR,
            f"Syntax error in module '{module_name}': {exc}",
            [location],
        ) from exc

    try:
        return getattr(module, attribute)
    except AttributeError:
        raise HandlerLoadError(
            ErrorType.HANDLER_NOT_FOUND,
            f"Handler '{attribute}' missing on module '{module_name}'",
        ) from None
