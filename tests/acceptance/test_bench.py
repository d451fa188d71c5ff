"""``pgbridge bench --quick`` runs end to end and writes its three artefacts (no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

WORKLOADS = {"a_latency", "b_concurrent", "c_fanout", "d_replay", "e_idle"}
CONTENDERS = {"pgbridge", "inprocess", "redis"}


async def test_quick_benchmark_writes_markdown_json_and_chart_with_every_workload(
    admin_dsn: str, tmp_path: Path
) -> None:
    out = tmp_path / "bench"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "pgbridge.bench",
        "--quick",
        "--dsn",
        admin_dsn,
        "--out",
        str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 100)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()[-4000:]
    for name in ("results.md", "results.json", "results.png"):
        assert (out / name).stat().st_size > 0, name
    report = json.loads((out / "results.json").read_text())
    assert set(report["workloads"]) == WORKLOADS
    for workload, entries in report["workloads"].items():
        assert set(entries) == CONTENDERS, workload
        for contender, figures in entries.items():
            assert "error" not in figures, (workload, contender, figures)
        assert "skipped" not in entries["pgbridge"] and "skipped" not in entries["inprocess"]
    assert report["errors"] == []
    assert "batched_insert_rows_per_s" in report["ceilings"]
    assert len(report["targets"]) == 7
    assert "## Targets" in (out / "results.md").read_text()
