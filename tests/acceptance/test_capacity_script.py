"""benchmarks/capacity.py at a tiny size, so the script behind docs/scaling.md keeps working."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

#: Drives whole processes from outside; .ci/run runs it in its first pass only (see pyproject.toml).
pytestmark = pytest.mark.once

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


async def test_capacity_script_measures_every_per_process_figure(admin_dsn: str, tmp_path: Path) -> None:
    out = tmp_path / "capacity.json"
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        str(BENCHMARKS / "capacity.py"),
        "--dsn", admin_dsn, "--runs", "5", "--subscribers", "50", "--publishers", "3",
        "--seconds", "1", "--idle-seconds", "0.5", "--json", str(out),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()[-3000:]
    figures = json.loads(out.read_text())
    idle, load = figures["idle"], figures["load"]
    assert idle["connections_with_subscribers"] <= idle["pool_max_size"] + 1
    assert idle["rss_per_subscriber_bytes"] is not None
    assert load["events"] > 0 and load["events_per_second"] > 0
    assert 0 <= load["notify_queue_usage_max"] <= 1
