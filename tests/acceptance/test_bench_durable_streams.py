"""``pgbridge bench --durable-streams --quick`` runs every Durable Streams workload on both servers
and writes its report (no timing asserted); the append throughput is driven by wrk."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from pgbridge.bench.durable_streams import DS_WORKLOADS, reference_unavailable_reason
from tests.support.durable_streams_conformance import require_suite


def require_wrk() -> None:
    """Skip without wrk, except in CI (``CI=true``; ``.ci/run`` installs it), where that fails."""
    if shutil.which("wrk") is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must run the Durable Streams benchmark with wrk: `apt-get install wrk`")
        pytest.skip("wrk is not installed (`apt-get install wrk`)")


async def _quick_bench(admin_dsn: str, out: Path, env: dict[str, str] | None = None) -> tuple[int, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pgbridge.bench", "--quick", "--durable-streams", "--dsn", admin_dsn, "--out", str(out)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env=env,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 150)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, output.decode()


async def test_quick_durable_streams_benchmark_measures_both_servers(admin_dsn: str, tmp_path: Path) -> None:
    require_suite()  # Node and conformance/node_modules (the reference server is installed with the suite)
    require_wrk()
    assert reference_unavailable_reason() is None
    out = tmp_path / "bench"
    code, output = await _quick_bench(admin_dsn, out)
    assert code == 0, output[-4000:]
    report = json.loads((out / "durable-streams.json").read_text())
    assert report["errors"] == []
    assert report["load_client"]["throughput"].startswith("wrk")
    assert "backends of the benchmark's scratch database" in report["postgres_cpu"]["measured"]
    for contender in ("pgbridge", "reference"):
        figures = report["contenders"][contender]
        assert set(DS_WORKLOADS) <= set(figures), contender
        throughput: dict[str, Any] = figures["throughput"]
        assert throughput["load_client"].startswith("wrk"), throughput
        assert throughput["appends"] > 0
        assert throughput["stored_messages"] >= throughput["appends"]  # every acknowledged append is kept
        assert throughput["server_cpu_us_per_append"] > 0
        assert throughput["latency"]["p50"] > 0
        assert figures["append_latency"]["latency"]["count"] == report["sizes"]["latency_appends"]
        assert figures["sse_latency"]["received"] == report["sizes"]["sse_messages"]
        assert figures["catch_up"]["received"] == report["sizes"]["catch_up_messages"]
    mine = report["contenders"]["pgbridge"]["throughput"]
    assert mine["postgres_cpu_us_per_append"] > 0
    assert mine["total_cpu_us_per_append"] == pytest.approx(
        mine["server_cpu_us_per_append"] + mine["postgres_cpu_us_per_append"], abs=0.2
    )
    assert report["contenders"]["reference"]["throughput"]["postgres_cpu_us_per_append"] is None
    assert {"before", "after"} <= set(report["disk"])  # the flush cost the ratio depends on
    assert report["disk"]["before"]["p50_us"] > 0
    text = (out / "durable-streams.md").read_text()
    assert "pgbridge / reference" in text and "## Targets" in text
    assert "append throughput with wrk" in text and "PostgreSQL CPU per append, µs" in text
    assert "with wrk ≥ 3× the reference's (issue 22)" in text
    assert "fdatasync" in text


async def test_without_wrk_the_throughput_workload_fails_saying_how_to_install_it(
    admin_dsn: str, tmp_path: Path
) -> None:
    require_suite()
    node = shutil.which("node")
    assert node is not None
    bin_dir = tmp_path / "bin"  # a PATH with Node and no wrk
    bin_dir.mkdir()
    (bin_dir / "node").symlink_to(node)
    out = tmp_path / "bench"
    code, output = await _quick_bench(admin_dsn, out, env={**os.environ, "PATH": str(bin_dir)})
    assert code == 1, output[-4000:]
    assert "apt-get install wrk" in output
    report = json.loads((out / "durable-streams.json").read_text())
    for contender in ("pgbridge", "reference"):
        figures = report["contenders"][contender]
        assert "apt-get install wrk" in figures["throughput"]["error"]
        assert figures["catch_up"]["received"] == report["sizes"]["catch_up_messages"]  # the rest ran
    assert [e for e in report["errors"] if "throughput" in e] and all(
        "apt-get install wrk" in e for e in report["errors"]
    )
    assert "apt-get install wrk" in (out / "durable-streams.md").read_text()
