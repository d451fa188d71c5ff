"""The measurement scripts under benchmarks/ keep working (tiny sizes; no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import os
import re
import sys
from pathlib import Path

import pytest

from tests.support.topology import missing_reason

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


async def run_script(script: str, *args: str, timeout: float) -> str:
    """Run benchmarks/*script* with *args*; its output (stdout and stderr) once it exited 0."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / script),
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode == 0, out.decode()[-3000:]
    return out.decode()


async def test_retention_benchmark_runs_end_to_end_and_reports_every_figure(
    admin_dsn: str, tmp_path: Path
) -> None:
    figures = tmp_path / "figures.json"
    out = await run_script(
        "retention.py",
        "--dsn", admin_dsn,
        "--events", "4000",
        "--runs", "40",
        "--seconds", "2",
        "--interval", "0.5",
        "--concurrency", "2",
        "--json", str(figures),
        timeout=100,
    )  # fmt: skip
    report = json.loads(figures.read_text())
    assert [p["events_deleted"] for p in report["cost"]] == [0, 40, 160, 600, 800]
    assert report["churn"] and report["sizes"] and report["publisher"]["published"] > 0
    assert "Pass cost against rows deleted" in out


async def test_chain_cost_benchmark_runs_end_to_end(admin_dsn: str) -> None:
    out = await run_script(
        "chain_cost.py",
        "--dsn", admin_dsn,
        "--appends", "200",
        "--rounds", "1",
        "--runs", "5",
        "--concurrency", "2",
        timeout=100,
    )  # fmt: skip
    assert "chained / unchained throughput" in out


async def test_lone_statements_benchmark_times_each_way_a_lone_publish_can_go(admin_dsn: str) -> None:
    out = await run_script(
        "lone_statements.py",
        "--dsn", admin_dsn,
        "--rounds", "3",
        timeout=120,
    )  # fmt: skip
    for variant in ("plain INSERT + commit", "one_event ", "one_event, clock called", "bridge.publish"):
        assert re.search(re.escape(variant) + r"\s+p50 \d", out), out


async def test_concurrent_cpu_benchmark_reports_each_process_cpu_per_event(admin_dsn: str) -> None:
    out = await run_script(
        "concurrent_cpu.py",
        "--dsn", admin_dsn,
        "--contenders", "pgbridge",
        "--rounds", "1",
        "--seconds", "1",
        timeout=120,
    )  # fmt: skip
    line = next(line for line in out.splitlines() if line.startswith("pgbridge"))
    assert "lost 0;" in line, line
    assert re.search(r"postgres \d+\.\d", line) and re.search(r"subscriber \d+\.\d", line), line


@pytest.mark.parametrize("consumer", ["plain", "bench"])
async def test_subscriber_path_benchmark_reports_cpu_per_delivery(admin_dsn: str, consumer: str) -> None:
    out = await run_script(
        "subscriber_path.py",
        "--dsn", admin_dsn,
        "--rounds", "20",
        "--consumer", consumer,
        timeout=120,
    )  # fmt: skip
    figure = rf"{consumer} consumer: 4000 deliveries, \d+\.\d+ us of CPU a delivery"
    assert re.search(figure, out), out


@pytest.mark.own_server
async def test_soak_script_runs_a_short_soak_and_accounts_for_every_event() -> None:
    out = await run_script(
        "soak.py",
        "--minutes", "0.15",
        "--runs", "1",
        "--seed", "7",
        timeout=110,
    )  # fmt: skip
    assert '"ok": true' in out


async def test_append_cost_benchmark_measures_the_head_function_and_a_candidate(
    admin_dsn: str, tmp_path: Path
) -> None:
    # A candidate takes the head function's place between rounds, so it must keep the head's
    # result columns and its run rows' meaning (revision 0012): the head function itself is one.
    revision = (BENCHMARKS.parent / "migrations" / "versions" / "0012_history_and_heads.sql").read_text()
    upgrade = revision.split("\n-- migrate:upgrade\n")[1].split("\n-- migrate:downgrade\n")[0]
    function = re.search(
        r"^CREATE FUNCTION __SCHEMA__\.pgbridge_append_batch\(.*?\$body\$;$", upgrade, re.S | re.M
    )
    assert function is not None
    candidate = tmp_path / "candidate.sql"
    candidate.write_text(function.group().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
    out = await run_script(
        "append_cost.py",
        "--dsn", admin_dsn,
        "--candidate", str(candidate),
        "--samples", "3",
        "--rounds", "1",
        timeout=100,
    )  # fmt: skip
    assert "| head |" in out and "| candidate |" in out
    assert "candidate / head:" in out


async def test_xmin_horizon_benchmark_holds_a_snapshot_and_reports_every_phase(
    admin_dsn: str, tmp_path: Path
) -> None:
    figures = tmp_path / "horizon.json"
    await run_script(
        "xmin_horizon.py",
        "--dsn", admin_dsn, "--runs", "2", "--rate", "20", "--keep", "10",
        "--retention-every", "0.5", "--warmup", "1", "--hold", "2", "--recover", "1", "--sample", "1",
        "--json", str(figures),
        timeout=100,
    )  # fmt: skip
    report = json.loads(figures.read_text())
    samples = report["samples"]
    assert [s["phase"] for s in samples] == ["warmup", "pinned", "pinned", "released"]
    assert samples[2]["oldest_transaction_s"] >= 1  # the horizon really was held
    assert all(s["published"] > 0 and s["tables"]["run_streams"]["heap_bytes"] > 0 for s in samples)
    assert set(report["summary"]) == {"warmup", "pinned", "released"}


@pytest.mark.own_server
async def test_replication_cost_benchmark_measures_each_mode_on_a_primary_and_a_standby(
    tmp_path: Path,
) -> None:
    reason = missing_reason()
    if reason is not None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(f"CI must run the topology tests, but: {reason}")
        pytest.skip(f"no primary/standby topology on this machine: {reason}")
    figures = tmp_path / "replication.json"
    await run_script(
        "replication_cost.py",
        "--events", "20", "--publishers", "2", "--seconds", "0.3", "--rounds", "1", "--json", str(figures),
        timeout=100,
    )  # fmt: skip
    results = json.loads(figures.read_text())["results"]
    assert [r["mode"] for r in results] == ["async", "sync", "remote_apply"]
    assert all(r["lone_p50_ms"] > 0 and r["concurrent_events_per_s"] > 0 for r in results)
