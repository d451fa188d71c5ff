"""One error tree: every error class lives in pgbridge.exceptions, under StreamBridgeError."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pgbridge
from pgbridge import exceptions
from pgbridge.exceptions import ConfigurationError, InvalidEventError, StreamBridgeError

PACKAGE = Path(pgbridge.__file__).resolve().parent


def _error_classes() -> list[type[BaseException]]:
    return [
        value
        for value in vars(exceptions).values()
        if inspect.isclass(value)
        and issubclass(value, BaseException)
        and value.__module__ == exceptions.__name__
    ]


def test_every_error_class_of_the_module_is_in_the_tree() -> None:
    classes = _error_classes()
    assert len(classes) > 20
    assert all(issubclass(cls, StreamBridgeError) for cls in classes)


def test_no_other_module_defines_a_public_error_class() -> None:
    """Private control-flow exceptions (``_Name``) that never reach a caller may live elsewhere."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "exceptions.py" and path.parent == PACKAGE:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef) or node.name.startswith("_"):
                continue
            bases = [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases]
            if any(base.endswith(("Error", "Exception")) for base in bases):
                found.append(f"{path.relative_to(PACKAGE)}: {node.name}")
    assert found == []


def test_a_configuration_error_is_a_value_error_and_not_a_bad_event() -> None:
    assert issubclass(ConfigurationError, ValueError)
    assert not issubclass(ConfigurationError, InvalidEventError)
    assert pgbridge.ConfigurationError is ConfigurationError
    assert "ConfigurationError" in pgbridge.__all__
