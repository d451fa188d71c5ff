"""The measurement scripts under benchmarks/ keep working (tiny sizes; no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


async def test_retention_benchmark_runs_end_to_end_and_reports_every_figure(
    admin_dsn: str, tmp_path: Path
) -> None:
    figures = tmp_path / "figures.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / "retention.py"),
        "--dsn",
        admin_dsn,
        "--events",
        "4000",
        "--runs",
        "40",
        "--seconds",
        "2",
        "--interval",
        "0.5",
        "--concurrency",
        "2",
        "--json",
        str(figures),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode == 0, out.decode()
    report = json.loads(figures.read_text())
    assert [p["events_deleted"] for p in report["cost"]] == [0, 40, 160, 600, 800]
    assert report["churn"] and report["sizes"] and report["publisher"]["published"] > 0
    assert "Pass cost against rows deleted" in out.decode()


async def test_chain_cost_benchmark_runs_end_to_end(admin_dsn: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / "chain_cost.py"),
        "--dsn", admin_dsn,
        "--appends", "200",
        "--rounds", "1",
        "--runs", "5",
        "--concurrency", "2",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode == 0, out.decode()
    assert "chained / unchained throughput" in out.decode()


@pytest.mark.own_server
async def test_soak_script_runs_a_short_soak_and_accounts_for_every_event() -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / "soak.py"),
        "--minutes", "0.15",
        "--runs", "1",
        "--seed", "7",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 110)
    assert process.returncode == 0, out.decode()[-3000:]
    assert '"ok": true' in out.decode()


async def test_append_cost_benchmark_measures_the_head_function_and_a_candidate(admin_dsn: str) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / "append_cost.py"),
        "--dsn", admin_dsn,
        "--candidate", str(BENCHMARKS / "candidates" / "set_based_append.sql"),
        "--samples", "3",
        "--rounds", "1",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    out, _ = await asyncio.wait_for(process.communicate(), 100)
    assert process.returncode == 0, out.decode()
    assert "| head |" in out.decode() and "| candidate |" in out.decode()
    assert "candidate / head:" in out.decode()
