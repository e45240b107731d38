"""Handler strings resolve exactly as awslambdaric resolves them."""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest

from statefulrt import HandlerLoadError
from statefulrt._loader import load_handler

_names = itertools.count()


def _module(tmp_path: Path, source: str, package: str | None = None) -> str:
    name = f"loader_case_{next(_names)}"
    folder = tmp_path
    if package:
        folder = tmp_path / package
        folder.mkdir()
        (folder / "__init__.py").write_text("")
    (folder / f"{name}.py").write_text(source)
    return name


@pytest.fixture(autouse=True)
def _clean_path(tmp_path: Path) -> object:
    yield
    if str(tmp_path) in sys.path:
        sys.path.remove(str(tmp_path))


def test_load_handler_plain_module(tmp_path: Path) -> None:
    name = _module(tmp_path, "def handler(e, c):\n    return 1\n")
    handler = load_handler(f"{name}.handler", str(tmp_path))
    assert callable(handler) and handler.__name__ == "handler"


def test_load_handler_slash_path(tmp_path: Path) -> None:
    name = _module(tmp_path, "def run(e, c):\n    return 2\n", package="pkg_slash")
    handler = load_handler(f"pkg_slash/{name}.run", str(tmp_path))
    assert handler.__name__ == "run"  # type: ignore[attr-defined]


def _error(spec: str, root: Path) -> HandlerLoadError:
    with pytest.raises(HandlerLoadError) as caught:
        load_handler(spec, str(root))
    return caught.value


def test_load_handler_malformed(tmp_path: Path) -> None:
    error = _error("handler", tmp_path)
    assert error.error_type == "Runtime.MalformedHandlerName"
    assert str(error) == (
        "Bad handler 'handler': expected 'module.function', for example 'app.handler'"
    )


def test_load_handler_missing_module(tmp_path: Path) -> None:
    error = _error("no_such_module_xyz.handler", tmp_path)
    assert error.error_type == "Runtime.ImportModuleError"
    assert str(error) == (
        "Unable to import module 'no_such_module_xyz': "
        "No module named 'no_such_module_xyz'"
    )


def test_load_handler_syntax_error(tmp_path: Path) -> None:
    name = _module(tmp_path, "def handler(e, c)\n    return 1\n")
    error = _error(f"{name}.handler", tmp_path)
    assert error.error_type == "Runtime.UserCodeSyntaxError"
    assert str(error).startswith(f"Syntax error in module '{name}': ")
    assert error.stack_trace[0].startswith(f'  File "{tmp_path / name}.py" Line 1')


def test_load_handler_missing_attribute(tmp_path: Path) -> None:
    name = _module(tmp_path, "x = 1\n")
    error = _error(f"{name}.handler", tmp_path)
    assert error.error_type == "Runtime.HandlerNotFound"
    assert str(error) == f"Handler 'handler' missing on module '{name}'"


def test_load_handler_builtin_module_conflict(tmp_path: Path) -> None:
    error = _error("sys.handler", tmp_path)
    assert error.error_type == "Runtime.BuiltInModuleConflict"
    assert str(error) == "Cannot use built-in module sys as a handler module"


def test_load_handler_module_raising_propagates(tmp_path: Path) -> None:
    name = _module(tmp_path, "raise KeyError('config')\n")
    with pytest.raises(KeyError):
        load_handler(f"{name}.handler", str(tmp_path))


def test_load_handler_relative_module_name(tmp_path: Path) -> None:
    error = _error("../app.handler", tmp_path)
    assert error.error_type == "Runtime.MalformedHandlerName"
    assert str(error) == (
        "Bad handler '../app.handler': the module must be an absolute name, "
        "like 'app' or 'pkg/app', not '...app'"
    )
