"""Imports point one way (docs/architecture.md): a lower layer never imports a higher one.

Every ``import`` in every module of the package counts, also the ones inside
functions: a lazy import is still a dependency.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "pgbridge"

#: Lowest first. A module belongs to the first entry that is it or contains it.
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "pure",
        (
            "pgbridge.contract",
            "pgbridge.exceptions",
            "pgbridge.ids",
            "pgbridge.payload",
            "pgbridge.lsn",
            "pgbridge.dsn",
            "pgbridge.tokens",
            "pgbridge.audit.chain",
            "pgbridge.audit.export",
            "pgbridge.retention.policy",
            "pgbridge.durable_streams.offsets",
            "pgbridge.durable_streams.forks",
            "pgbridge.durable_streams.messages",
            "pgbridge.ai_sdk.chunks",
            "pgbridge.ai_sdk.sse",
            "pgbridge.ai_sdk.runs",
        ),
    ),
    ("sql", ("pgbridge.sql",)),
    ("connector", ("pgbridge.connector", "pgbridge.metrics", "pgbridge.engine.listen")),
    ("store", ("pgbridge.store",)),
    ("engine", ("pgbridge.engine", "pgbridge.durable_streams.streams")),
    ("policies", ("pgbridge.retention", "pgbridge.audit", "pgbridge.inspection")),
    ("bridge", ("pgbridge.bridge",)),
    (
        "surfaces",
        (
            "pgbridge.durable_streams.http",
            "pgbridge.http",
            "pgbridge.cli",
            "pgbridge.bench",
            "pgbridge.embedded",
            "pgbridge.migrate",
            "pgbridge.migration_support",
            "pgbridge.schema",
            "pgbridge.durable_streams",
            "pgbridge.ai_sdk",
            "pgbridge",
        ),
    ),
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int:
    for rank, (_, prefixes) in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    raise AssertionError(f"{module} is in no layer: add it to LAYERS")


def imported_modules(path: Path) -> set[str]:
    """The pgbridge modules *path* imports (``from pgbridge.x import y`` counts y when y is a module)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports"
            base = node.module or ""
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names if is_module(f"{base}.{alias.name}"))
    return {m for m in found if m == "pgbridge" or m.startswith("pgbridge.")}


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


MODULES = sorted(PACKAGE.rglob("*.py"))


@pytest.mark.parametrize("path", MODULES, ids=[module_name(p) for p in MODULES])
def test_a_module_imports_only_its_own_layer_and_the_layers_below(path: Path) -> None:
    here = module_name(path)
    upward = [
        f"{m} ({LAYERS[layer_of(m)][0]})" for m in imported_modules(path) if layer_of(m) > layer_of(here)
    ]
    assert not upward, f"{here} ({LAYERS[layer_of(here)][0]}) imports a higher layer: {', '.join(upward)}"


@pytest.mark.parametrize("heavy", ["sqlalchemy", "alembic", "starlette", "uvicorn", "rich"])
def test_importing_pgbridge_loads_no_migration_or_server_library(heavy: str) -> None:
    code = f"import sys, pgbridge; sys.exit(any(m.split('.')[0] == {heavy!r} for m in sys.modules))"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0, (
        f"import pgbridge loads {heavy}"
    )
