"""``pgbridge bench --durable-streams --quick`` runs every Durable Streams workload on both servers
and writes its report (no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from pgbridge.bench.durable_streams import DS_WORKLOADS, reference_unavailable_reason
from tests.support.durable_streams_conformance import require_suite


async def test_quick_durable_streams_benchmark_measures_both_servers(admin_dsn: str, tmp_path: Path) -> None:
    require_suite()  # Node and conformance/node_modules (the reference server is installed with the suite)
    assert reference_unavailable_reason() is None
    out = tmp_path / "bench"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pgbridge.bench", "--quick", "--durable-streams", "--dsn", admin_dsn, "--out", str(out)),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        output, _ = await asyncio.wait_for(process.communicate(), 150)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, output.decode()[-4000:]
    report = json.loads((out / "durable-streams.json").read_text())
    assert report["errors"] == []
    for contender in ("pgbridge", "reference"):
        figures = report["contenders"][contender]
        assert set(DS_WORKLOADS) <= set(figures), contender
        assert figures["throughput"]["appends"] > 0
        assert figures["append_latency"]["latency"]["count"] == report["sizes"]["latency_appends"]
        assert figures["sse_latency"]["received"] == report["sizes"]["sse_messages"]
        assert figures["catch_up"]["received"] == report["sizes"]["catch_up_messages"]
    assert {"before", "after"} <= set(report["disk"])  # the flush cost the ratio depends on
    assert report["disk"]["before"]["p50_us"] > 0
    text = (out / "durable-streams.md").read_text()
    assert "pgbridge / reference" in text and "## Targets (issue 12)" in text
    assert "fdatasync" in text
