"""The Durable Streams comparison as Markdown: a table with ratios, the issue's two targets, the notes.

Rendered from the JSON alone (``durable-streams.json``), so a saved run can
be re-rendered. Ratios are pgbridge / reference: above 1 is better for
pgbridge on throughputs, below 1 is better on latencies.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from pgbridge.bench.report import number, number_at, ratio

Results = Mapping[str, Any]

#: (label, workload, path, higher is better)
ROWS: tuple[tuple[str, str, tuple[str, ...], bool], ...] = (
    ("append throughput with wrk, appends/s ({streams} connections on {streams} streams)", "throughput",
     ("appends_per_s",), True),
    ("  append latency under that load, p50 ms", "throughput", ("latency", "p50"), False),
    ("  append latency under that load, p99 ms", "throughput", ("latency", "p99"), False),
    ("  server process CPU per append, µs", "throughput", ("server_cpu_us_per_append",), False),
    ("  PostgreSQL CPU per append, µs", "throughput", ("postgres_cpu_us_per_append",), False),
    ("  server + PostgreSQL CPU per append, µs", "throughput", ("total_cpu_us_per_append",), False),
    ("  server process CPU, % of one core", "throughput", ("server_cpu_percent",), False),
    ("  wrk's CPU (the load client), % of one core", "throughput", ("client_cpu_percent",), False),
    ("  machine CPU busy (every process on it), %", "throughput", ("machine_cpu_percent",), False),
    ("sequential append latency, p50 ms", "append_latency", ("latency", "p50"), False),
    ("sequential append latency, p99 ms", "append_latency", ("latency", "p99"), False),
    ("append → SSE receive, p50 ms", "sse_latency", ("latency", "p50"), False),
    ("append → SSE receive, p99 ms", "sse_latency", ("latency", "p99"), False),
    ("catch-up read from -1, messages/s ({catch_up_messages} messages)", "catch_up",
     ("messages_per_s",), True),
    ("catch-up read, MB/s", "catch_up", ("mb_per_s",), True),
    ("catch-up read, HTTP requests", "catch_up", ("requests",), False),
)  # fmt: skip


def ds_figure(results: Results, contender: str, workload: str, path: Sequence[str]) -> float | None:
    """A number in ``results["contenders"][contender][workload]`` along *path*, or None."""
    return number_at(results, ("contenders", contender, workload, *path))


def _cell(results: Results, contender: str, workload: str, value: float | None) -> str:
    if value is not None:
        return number(value)
    entry = results.get("contenders", {}).get(contender, {})
    for key in ("skipped", "error"):
        if key in entry:
            return key
        if isinstance(entry.get(workload), Mapping) and key in entry[workload]:
            return key
    return "–"


def table(results: Results) -> list[str]:
    sizes = results.get("sizes", {})
    lines = [
        "| | pgbridge serve | reference (file) | pgbridge / reference |",
        "|---|---:|---:|---:|",
    ]
    for label, workload, path, _ in ROWS:
        mine = ds_figure(results, "pgbridge", workload, path)
        theirs = ds_figure(results, "reference", workload, path)
        lines.append(
            f"| {label.format(**sizes)} | {_cell(results, 'pgbridge', workload, mine)} "
            f"| {_cell(results, 'reference', workload, theirs)} | {ratio(mine, theirs)} |"
        )
    return lines


class Target(NamedTuple):
    name: str
    needed: float
    got: float | None

    @property
    def met(self) -> bool:
        return self.got is not None and self.got >= self.needed


def targets(results: Results) -> list[Target]:
    def quotient(workload: str, path: tuple[str, ...]) -> float | None:
        mine = ds_figure(results, "pgbridge", workload, path)
        theirs = ds_figure(results, "reference", workload, path)
        return mine / theirs if mine is not None and theirs else None

    appends = quotient("throughput", ("appends_per_s",))
    return [
        Target("durable append throughput ≥ 2× the reference's (issue 12)", 2.0, appends),
        Target("catch-up reads at least as fast (issue 12)", 1.0, quotient("catch_up", ("messages_per_s",))),
        Target("durable append throughput with wrk ≥ 3× the reference's (issue 22)", 3.0, appends),
    ]


def markdown(results: Results) -> str:
    meta = results.get("meta", {})
    lines = ["# pgbridge Durable Streams vs @durable-streams/server", ""]
    lines += table(results)
    lines += ["", "## Targets", "", "| target | ratio | met |", "|---|---:|---|"]
    for target in targets(results):
        got = f"{target.got:.2f}×" if target.got is not None else "–"
        lines.append(f"| {target.name} | {got} | {'yes' if target.met else 'NO'} |")
    lines += ["", "## How", ""]
    sizes = results.get("sizes", {})
    client = results.get("load_client", {})
    wrk = client.get("throughput") if isinstance(client, Mapping) else None
    lines.append(
        f"- One server process each: {meta.get('pgbridge_processes', 1)} `pgbridge serve` (uvicorn, "
        f"access log off) and one Node process; throughput driven by `wrk` ({wrk or 'missing'}), "
        "the other workloads by aiohttp in the benchmark process (they read response bodies or "
        f"send one request at a time); ~{results.get('payload_bytes')}-byte JSON messages, "
        "JSON-mode streams."
    )
    lines.append(
        "- Both servers run side by side and take turns, workload by workload, in alternating order; "
        f"throughput and catch-up are the median of {sizes.get('rounds')} round(s) each "
        "(every round's figure is in the JSON)."
    )
    warm = sizes.get("throughput_warmup_seconds")
    warm_up = f"after an unmeasured wrk run of {warm} s" if warm else "no warm-up"
    lines.append(
        f"- Throughput: wrk with {sizes.get('streams')} connections and {sizes.get('wrk_threads')} "
        f"thread(s) (`pgbridge/bench/wrk/append.lua`), each connection POSTing one message after the "
        f"last was answered, to {sizes.get('streams')} streams taken in turn, for "
        f"{sizes.get('throughput_seconds')} s ({warm_up}); a run with any wrk error (a 4xx/5xx, "
        "a timeout) fails, and the streams are read back afterwards to check that they hold every "
        "acknowledged append."
    )
    pg_cpu = results.get("postgres_cpu", {})
    lines.append(
        "- CPU per append (psutil, user + system, over the measured wrk run): the server process "
        "(`pgbridge serve`; the reference's Node process, its libuv threads included) and, for pgbridge, "
        f"PostgreSQL: {pg_cpu.get('measured') or 'not measured (' + str(pg_cpu.get('skipped')) + ')'}. "
        "wrk's own CPU and the whole machine's are beside them: on a shared machine, other processes' "
        "work shows in the machine figure."
    )
    lines.append(
        f"- Sequential latency: {sizes.get('latency_appends')} POSTs, one after another. SSE: "
        f"{sizes.get('sse_messages')} messages, one every {sizes.get('sse_interval')} s, to one "
        "`live=sse` reader; sent-to-received on the same clock."
    )
    lines.append(
        f"- Catch-up: {sizes.get('catch_up_messages')} messages appended in JSON arrays of "
        f"{sizes.get('catch_up_batch')}, then read from `offset=-1` following `Stream-Next-Offset`."
    )
    for name, guarantee in results.get("durability", {}).items():
        lines.append(f"- At a 2xx, {name}: {guarantee}.")
    disk = results.get("disk", {})
    if disk.get("before"):
        flushes = " and ".join(
            f"p50 {disk[when]['p50_us']:,.0f} µs (p99 {disk[when]['p99_us']:,.0f}) {when} the workloads"
            for when in ("before", "after")
            if disk.get(when)
        )
        lines.append(
            f"- Disk: an 8 KiB write + fdatasync in {disk.get('folder')} (both servers' data) took "
            f"{flushes}. The reference flushes once per stream file per batch of appends, pgbridge once "
            "per group commit: the faster the flush, the more CPU alone decides the throughput ratio."
        )
    postgres = meta.get("postgres", {})
    if postgres:
        settings = ", ".join(f"{k}={v}" for k, v in postgres.get("settings", {}).items())
        lines.append(f"- PostgreSQL {postgres.get('version')} ({meta.get('server')}): {settings}.")
    machine = meta.get("machine", {})
    if machine:
        lines.append(
            f"- Machine: {machine.get('cpus')} CPUs, {machine.get('platform')}, "
            f"Python {machine.get('python')}."
        )
    code = meta.get("pgbridge", {})
    if code.get("commit"):
        dirty = f", uncommitted: {', '.join(code['uncommitted'])}" if code.get("uncommitted") else ""
        lines.append(f"- pgbridge at {code['commit']}{dirty}.")
    for error in results.get("errors", []):
        lines.append(f"- ERROR {error}")
    return "\n".join(lines) + "\n"


def write_ds_report(results: Results, out_dir: Path) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    data = out_dir / "durable-streams.json"
    text = out_dir / "durable-streams.md"
    data.write_text(json.dumps(results, indent=2) + "\n")
    text.write_text(markdown(results))
    return text, data
