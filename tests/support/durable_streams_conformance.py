"""Running the official Durable Streams conformance suite (npm, pinned in conformance/).

Where Node or the installed suite is missing, tests skip with the reason;
in CI (``PGBRIDGE_REQUIRE_NODE=1``, set by ``.ci/run``) they fail instead.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CONFORMANCE_DIR = Path(__file__).resolve().parents[2] / "conformance"
SUITE_PACKAGE = CONFORMANCE_DIR / "node_modules" / "@durable-streams" / "server-conformance-tests"


def require_suite() -> str:
    """The ``npx`` to run, or skip (fail in CI) saying what is missing."""
    npx = shutil.which("npx")
    missing = None
    if npx is None:
        missing = "Node.js (npx) is not installed"
    elif not SUITE_PACKAGE.is_dir():
        missing = f"the conformance suite is not installed: run `npm ci` in {CONFORMANCE_DIR}"
    if missing is not None:
        if os.environ.get("PGBRIDGE_REQUIRE_NODE") == "1":
            pytest.fail(f"{missing} (required: PGBRIDGE_REQUIRE_NODE=1)")
        pytest.skip(missing)
    assert npx is not None
    return npx


@dataclass
class SuiteResult:
    passed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)


def _read_report(out_file: Path, stderr: bytes) -> dict[str, Any]:
    assert out_file.exists(), f"vitest wrote no report: {stderr.decode(errors='replace')[-2000:]}"
    report: dict[str, Any] = json.loads(out_file.read_text())
    return report


def name_pattern(names: list[str]) -> str:
    """A vitest ``-t`` pattern (a JavaScript regex) matching exactly *names*."""
    escaped = [re.sub(r"([.*+?^${}()|\[\]\\/])", r"\\\1", name) for name in names]
    return "^(" + "|".join(escaped) + ")$"


async def run_suite(
    base_url: str, out_file: Path, *, only: list[str] | None = None, timeout: float = 900
) -> SuiteResult:
    """Run the suite (or *only* these tests) against *base_url*; results from vitest's JSON report."""
    npx = require_suite()
    selection = ["-t", name_pattern(only)] if only else []
    process = await asyncio.create_subprocess_exec(
        npx,
        "vitest",
        "run",
        "conformance.test.mjs",
        *selection,
        "--reporter=json",
        f"--outputFile={out_file}",
        cwd=CONFORMANCE_DIR,
        env={**os.environ, "CONFORMANCE_TEST_URL": base_url, "CI": "1"},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, stderr = await asyncio.wait_for(process.communicate(), timeout)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    report = await asyncio.to_thread(_read_report, out_file, stderr)
    result = SuiteResult()
    for suite in report["testResults"]:
        for test in suite["assertionResults"]:
            name, status = test["fullName"], test["status"]
            if status == "passed":
                result.passed.append(name)
            elif status == "failed":
                result.failed[name] = "\n".join(test.get("failureMessages") or [])[:500]
            elif not only:  # a selection reports the rest as skipped
                result.skipped.append(name)
    return result
