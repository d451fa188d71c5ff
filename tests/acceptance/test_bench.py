"""``pgbridge bench --quick`` runs end to end and writes its three artefacts (no timing asserted)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from tests.acceptance.test_cli import _wait_gone
from tests.support.cli import cli_env
from tests.support.helpers import wait_until

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
    # The append statement's PostgreSQL time per event, both batch shapes, next to a plain INSERT.
    assert set(report["ceilings"]["append_cost"]) == {"100x1", "1x100"}
    for shape, cost in report["ceilings"]["append_cost"].items():
        assert cost["append_us_per_event"] > 0, (shape, cost)
        assert isinstance(cost["insert_us_per_row"], float), (shape, cost)
    text = (out / "results.md").read_text()
    assert "inside `pgbridge_append_batch`, 100 runs × 1 event" in text
    assert "inside `pgbridge_append_batch`, 1 run × 100 events" in text
    # And the set-based statement a busy batch of one event per existing run is sent as.
    assert report["ceilings"]["append_cost"]["100x1"]["sent_us_per_event"] > 0
    assert report["ceilings"]["append_cost"]["1x100"]["sent_us_per_event"] is None
    assert "(`append_runs_once`, set-based, no PL/pgSQL)" in text
    assert "a plain multi-row INSERT of the same rows" in text
    # issue 7's targets still standing, and issue 22's (each with a figure in this run)
    assert len(report["targets"]) == 12
    assert all(t["measured"] is not None for t in report["targets"]), report["targets"]
    assert "## Targets" in text


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A scratch folder with a short path.

    The embedded server's Unix socket lives under TMPDIR, and a socket path
    holds at most 107 bytes: under pytest-xdist, ``tmp_path`` is too deep
    (``.../popen-gw0/test_.../``) and the server cannot start.
    """
    with tempfile.TemporaryDirectory(prefix="pgb-", dir="/tmp") as folder:
        yield Path(folder)


@pytest.mark.own_server
async def test_bench_stopped_with_sigterm_stops_its_embedded_postgresql_and_removes_its_folder(
    short_tmp_path: Path,
) -> None:
    tmp_path = short_tmp_path
    env = cli_env(TMPDIR=str(tmp_path))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pgbridge.cli", "bench", "--quick", "--out", str(tmp_path / "out")),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    postmaster = None
    try:
        postmaster = await _embedded_server_up(tmp_path, process)
        process.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(process.wait(), 60)
        assert process.stderr is not None
        err = (await process.stderr.read()).decode()
        assert code == 143, err[-3000:]
        await asyncio.to_thread(_wait_gone, postmaster, 30)
        assert await asyncio.to_thread(lambda: list(tmp_path.glob("pgbridge-bench-*"))) == []
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        if postmaster is not None and psutil.pid_exists(postmaster):  # left behind: stop it
            os.kill(postmaster, signal.SIGINT)


async def _embedded_server_up(folder: Path, bench: asyncio.subprocess.Process) -> int:
    """The postmaster's pid once the benchmark's embedded server in *folder* accepts connections."""
    found: list[int] = []

    def ready() -> bool:
        pid = _ready_postmaster(folder)
        found.extend([] if pid is None else [pid])
        assert found or bench.returncode is None, f"the benchmark exited with {bench.returncode} first"
        return bool(found)

    await wait_until(ready, timeout=120)
    return found[0]


def _ready_postmaster(folder: Path) -> int | None:
    for pid_file in folder.glob("pgbridge-bench-*/pgdata/postmaster.pid"):
        lines = pid_file.read_text().splitlines()
        if len(lines) >= 8 and lines[7].strip() == "ready":
            return int(lines[0])
    return None
