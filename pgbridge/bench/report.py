"""The results, three ways: a Markdown report, the JSON behind it, and a PNG chart.

Absolute figures depend on the machine, so the report puts ratios next to
them (pgbridge divided by each peer, and by PostgreSQL's own ceilings) and
checks the issue's targets, saying by how much each is met or missed. The
report is rendered from the JSON alone, so a saved JSON can be re-rendered.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

CONTENDER_ORDER = ("pgbridge", "inprocess", "redis")
LABELS = {"pgbridge": "pgbridge", "inprocess": "in-process", "redis": "Redis Streams"}
PEERS = ("inprocess", "redis")
WORKLOAD_KEYS = ("a_latency", "b_concurrent", "c_fanout", "d_replay", "e_idle")

Results = Mapping[str, Any]


# -- reading figures out of the results -----------------------------------------------------------


def number_at(node: Any, path: Sequence[str]) -> float | None:
    """The number at *path* in nested mappings, or None (a step missing, or no number there)."""
    for step in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(step)
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def figure(results: Results, workload: str, contender: str, path: Sequence[str]) -> float | None:
    """A number in ``results["workloads"][workload][contender]`` along *path*, or None."""
    return number_at(results, ("workloads", workload, contender, *path))


def ceiling(results: Results, *path: str) -> float | None:
    return number_at(results, ("ceilings", *path))


def outcome_note(results: Results, workload: str, contender: str) -> str | None:
    """Why a contender has no figures for a workload, if it has none."""
    entry = results.get("workloads", {}).get(workload, {}).get(contender)
    if not isinstance(entry, Mapping):
        return "not run"
    for key in ("skipped", "error"):
        if key in entry:
            return f"{key}: {entry[key]}"
    return None


# -- the metrics table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Metric:
    workload: str
    label: str
    path: tuple[str, ...]
    #: Multiply the stored figure by this for display (bytes to KiB, ...).
    scale: float = 1.0
    #: Whether a pgbridge ÷ peer ratio means anything for this figure.
    compare: bool = True


METRICS: tuple[Metric, ...] = (
    Metric("a_latency", "publish p50 (ms)", ("publish", "p50")),
    Metric("a_latency", "publish p99 (ms)", ("publish", "p99")),
    Metric("a_latency", "publish → receive p50 (ms)", ("receive", "p50")),
    Metric("a_latency", "publish → receive p99 (ms)", ("receive", "p99")),
    Metric("a_latency", "events lost", ("lost",)),
    Metric("b_concurrent", "acknowledged events/s", ("events_per_s",)),
    Metric("b_concurrent", "end-to-end p50 (ms)", ("end_to_end", "p50")),
    Metric("b_concurrent", "end-to-end p99 (ms)", ("end_to_end", "p99")),
    Metric("b_concurrent", "deliveries lost", ("lost",)),
    Metric("b_concurrent", "publishing process CPU (% of a core)", ("publisher_cpu_percent",), compare=False),
    Metric("b_concurrent", "machine CPU busy while publishing (%)", ("machine_cpu_percent",), compare=False),
    Metric("c_fanout", "fan-out p50, 1 subscriber (ms)", ("one", "fanout", "p50")),
    Metric("c_fanout", "fan-out p99, 1 subscriber (ms)", ("one", "fanout", "p99")),
    Metric("c_fanout", "fan-out p50, {fanout} subscribers (ms)", ("many", "fanout", "p50")),
    Metric("c_fanout", "fan-out p99, {fanout} subscribers (ms)", ("many", "fanout", "p99")),
    Metric("c_fanout", "store calls per event, 1 subscriber", ("one", "store_calls_per_event")),
    Metric("c_fanout", "store calls per event, {fanout} subscribers", ("many", "store_calls_per_event")),
    Metric("c_fanout", "deliveries lost, {fanout} subscribers", ("many", "lost")),
    Metric("d_replay", "replay events/s", ("events_per_s",)),
    Metric("d_replay", "store calls per 1,000 replayed events", ("store_calls_per_1000",)),
    Metric("d_replay", "fill events/s (batched publish)", ("fill_events_per_s",)),
    Metric("e_idle", "RSS per idle subscription (KiB)", ("bytes_per_subscription",), 1 / 1024),
    Metric("e_idle", "store calls/s while idle", ("store_calls_per_second",)),
)


def number(value: float | None) -> str:
    """A figure with as many digits as it deserves."""
    if value is None or math.isnan(value):
        return "–"
    size = abs(value)
    if size >= 100:
        return f"{value:,.0f}"
    if size >= 10:
        return f"{value:.1f}"
    if size >= 1 or size == 0:
        return f"{value:.2f}"
    return f"{value:.3f}"


def ratio(mine: float | None, theirs: float | None) -> str:
    if mine is None or theirs is None or theirs == 0:
        return "–"
    return f"{mine / theirs:.3g}x"


def _titles(results: Results) -> dict[str, str]:
    sizes = results.get("meta", {}).get("sizes", {})
    rate = round(1 / sizes["latency_interval"]) if sizes.get("latency_interval") else "?"
    return {
        "a_latency": f"(a) 1 run, {sizes.get('latency_events', '?'):,} events at {rate}/s, "
        "1 subscriber in another process",
        "b_concurrent": f"(b) {sizes.get('concurrent_runs', '?')} concurrent runs, each 1 publisher "
        f"+ 2 subscribers (another process), {sizes.get('concurrent_seconds', '?')} s",
        "c_fanout": f"(c) fan-out: 1 run, 1 then {sizes.get('fanout_subscribers', '?'):,} subscribers "
        "in another process",
        "d_replay": f"(d) replay of a {sizes.get('replay_events', '?'):,}-event run from its start",
        "e_idle": f"(e) {sizes.get('idle_subscribers', '?'):,} idle subscriptions (one per run), "
        "a process of their own",
    }


def contenders_in(results: Results) -> list[str]:
    """The contenders with figures for at least one workload (not skipped everywhere)."""
    present = {
        name
        for entries in results.get("workloads", {}).values()
        for name, entry in entries.items()
        if not (isinstance(entry, Mapping) and "skipped" in entry)
    }
    return [name for name in CONTENDER_ORDER if name in present]


def metrics_table(results: Results) -> list[str]:
    names = contenders_in(results)
    peers = [name for name in PEERS if name in names]
    fanout = results.get("meta", {}).get("sizes", {}).get("fanout_subscribers", "K")
    header = ["workload", "metric", *(LABELS[n] for n in names), *(f"pgbridge ÷ {LABELS[p]}" for p in peers)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * 2 + "---:|" * (len(header) - 2)]
    titles, previous = _titles(results), ""
    for metric in METRICS:
        values = {n: _scaled(figure(results, metric.workload, n, metric.path), metric.scale) for n in names}
        cells = [titles[metric.workload] if metric.workload != previous else "", metric.label]
        cells[1] = cells[1].format(fanout=f"{fanout:,}" if isinstance(fanout, int) else fanout)
        cells += [_cell(results, metric.workload, n, values[n]) for n in names]
        cells += [ratio(values.get("pgbridge"), values[p]) if metric.compare else "" for p in peers]
        lines.append("| " + " | ".join(cells) + " |")
        previous = metric.workload
    return lines


def _scaled(value: float | None, scale: float) -> float | None:
    return None if value is None else value * scale


def _cell(results: Results, workload: str, contender: str, value: float | None) -> str:
    if value is not None:
        return number(value)
    note = outcome_note(results, workload, contender)
    return "skipped" if note and note.startswith("skipped") else ("error" if note else "–")


# -- the targets -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Verdict:
    target: str
    measured: float | None
    required: float
    #: ">=" (at least) or "<" (under).
    comparison: str
    unit: str
    met: bool | None
    #: How far from the line: measured ÷ required for ">=", required ÷ measured for "<".
    factor: float | None
    note: str

    @property
    def summary(self) -> str:
        if self.met is None or self.factor is None:
            return "not measured"
        if self.met:
            return f"**met** (margin {self.factor:.2f}x)"
        shortfall = 1 / self.factor if self.factor else math.inf
        return f"**missed** ({shortfall:.2f}x short)"


def _verdict(
    target: str, measured: float | None, comparison: str, required: float, unit: str, note: str = ""
) -> Verdict:
    if measured is None:
        return Verdict(target, None, required, comparison, unit, None, None, note)
    if comparison == ">=":
        met, factor = measured >= required, measured / required
    else:
        met = measured <= required if comparison == "<=" else measured < required
        factor = required / measured if measured > 0 else math.inf
    return Verdict(target, measured, required, comparison, unit, met, round(factor, 4), note)


def evaluate_targets(results: Results) -> list[Verdict]:
    """The issue's targets against pgbridge's figures."""
    pg = "pgbridge"
    sizes = results.get("meta", {}).get("sizes", {})
    quick = results.get("meta", {}).get("mode") == "quick"
    scale_note = "quick mode: smaller than the target's scale, indicative only" if quick else ""
    throughput = figure(results, "b_concurrent", pg, ("events_per_s",))
    redis = figure(results, "b_concurrent", "redis", ("events_per_s",))
    batched = ceiling(results, "batched_insert_rows_per_s")
    calls_one = figure(results, "c_fanout", pg, ("one", "store_calls_per_event"))
    calls_many = figure(results, "c_fanout", pg, ("many", "store_calls_per_event"))
    fanout_subscribers = sizes.get("fanout_subscribers", 0)
    redis_note = outcome_note(results, "b_concurrent", "redis") or ""
    append_many = ceiling(results, "append_cost", "100x1", "append_us_per_event")
    append_one_run = ceiling(results, "append_cost", "1x100", "append_us_per_event")
    return [
        _verdict(
            "(b) durable throughput ≥ 2x Redis Streams",
            throughput / redis if throughput is not None and redis else None,
            ">=",
            2.0,
            "x",
            redis_note or scale_note,
        ),
        _verdict(
            "(b) durable throughput ≥ 20% of the batched-INSERT ceiling",
            100 * throughput / batched if throughput is not None and batched else None,
            ">=",
            20.0,
            "%",
            scale_note,
        ),
        _verdict(
            "(a) publish → receive p99 ≤ 2 ms (another process)",
            figure(results, "a_latency", pg, ("receive", "p99")),
            "<=",
            2.0,
            "ms",
        ),
        _verdict(
            "(a) publish p50 ≤ 0.5 ms", figure(results, "a_latency", pg, ("publish", "p50")), "<=", 0.5, "ms"
        ),
        _verdict(
            "(c) SQL statements per event ≤ 1.5, 1 subscriber",
            calls_one,
            "<=",
            1.5,
            "statements",
        ),
        _verdict(
            f"(c) SQL statements per event ≤ 1.5, {fanout_subscribers:,} subscribers",
            calls_many,
            "<=",
            1.5,
            "statements",
        ),
        _verdict(
            f"(c) SQL statements per event constant from 1 to {fanout_subscribers:,} subscribers "
            "(within 10%)",
            calls_many / calls_one if calls_one and calls_many is not None else None,
            "<",
            1.10,
            "x the 1-subscriber figure",
            f"{number(calls_one)} → {number(calls_many)} statements per event"
            if calls_one is not None
            else "pgbridge does not count its statements (no statements_run)",
        ),
        _verdict(
            f"(c) fan-out p99 < 50 ms for {fanout_subscribers:,} subscribers",
            figure(results, "c_fanout", pg, ("many", "fanout", "p99")),
            "<",
            50.0,
            "ms",
            scale_note,
        ),
        _verdict(
            "(d) replay ≥ 250,000 events/s",
            figure(results, "d_replay", pg, ("events_per_s",)),
            ">=",
            250_000.0,
            "events/s",
            scale_note,
        ),
        _verdict(
            "PostgreSQL time per event in pgbridge_append_batch, 100 runs × 1 event ≤ 15 µs",
            append_many,
            "<=",
            15.0,
            "µs",
        ),
        _verdict(
            "PostgreSQL time per event in pgbridge_append_batch, 1 run × 100 events ≤ 8 µs",
            append_one_run,
            "<=",
            8.0,
            "µs",
        ),
    ]


def targets_table(verdicts: Sequence[Verdict]) -> list[str]:
    lines = ["| target | pgbridge measured | required | verdict | note |", "|---|---:|---:|---|---|"]
    for v in verdicts:
        sign = {">=": "≥", "<=": "≤"}.get(v.comparison, v.comparison)
        required = f"{sign} {number(v.required)} {v.unit}"
        measured = f"{number(v.measured)} {v.unit}" if v.measured is not None else "–"
        lines.append(f"| {v.target} | {measured} | {required} | {v.summary} | {v.note} |")
    return lines


# -- the ceilings ---------------------------------------------------------------------------------


def ceilings_table(results: Results) -> list[str]:
    c = results.get("ceilings", {})
    if not isinstance(c, Mapping) or "error" in c:
        return [f"The ceilings could not be measured: {c.get('error') if isinstance(c, Mapping) else c}"]
    pg_rate = figure(results, "b_concurrent", "pgbridge", ("events_per_s",))
    pg_publish = figure(results, "a_latency", "pgbridge", ("publish", "p50"))
    pg_receive = figure(results, "a_latency", "pgbridge", ("receive", "p50"))
    commit, notify = c.get("single_insert_commit", {}), c.get("notify_round_trip", {})
    writers = c.get("writers")
    return [
        "| PostgreSQL ceiling (asyncpg, same server) | figure | pgbridge against it |",
        "|---|---:|---|",
        f"| batched INSERT … SELECT FROM unnest, {c.get('insert_batch_rows')} rows per statement, "
        f"{writers} connections | {number(c.get('batched_insert_rows_per_s'))} rows/s "
        f"| (b) throughput is {_percent(pg_rate, c.get('batched_insert_rows_per_s'))} of it |",
        f"| COPY (copy_records_to_table), {c.get('copy_batch_rows')} rows per COPY, {writers} connections "
        f"| {number(c.get('copy_rows_per_s'))} rows/s "
        f"| (b) throughput is {_percent(pg_rate, c.get('copy_rows_per_s'))} of it |",
        f"| single-row INSERT + commit, one at a time: p50 / p99 | {number(commit.get('p50'))} / "
        f"{number(commit.get('p99'))} ms | (a) publish p50 is {ratio(pg_publish, commit.get('p50'))} of it |",
        f"| NOTIFY round trip (LISTEN on another connection): p50 / p99 | {number(notify.get('p50'))} / "
        f"{number(notify.get('p99'))} ms "
        f"| (a) publish → receive p50 is {ratio(pg_receive, notify.get('p50'))} of it |",
        *_append_cost_rows(c),
    ]


#: (key in ``ceilings.append_cost``, the shape in words)
APPEND_SHAPES = (("100x1", "100 runs × 1 event"), ("1x100", "1 run × 100 events"))


def _append_cost_rows(c: Mapping[str, Any]) -> list[str]:
    """The append statement's PostgreSQL time per event by batch shape, next to a plain INSERT's."""
    rows = []
    samples = c.get("append_cost_samples")
    for key, shape in APPEND_SHAPES:
        append = number_at(c, ("append_cost", key, "append_us_per_event"))
        insert = number_at(c, ("append_cost", key, "insert_us_per_row"))
        rows.append(
            f"| PostgreSQL time per event inside `pgbridge_append_batch`, {shape} in one call "
            f"(round trip and parameters subtracted; median of {samples} calls) | {number(append)} µs "
            f"| a plain multi-row INSERT of the same rows: {number(insert)} µs a row; the append is "
            f"{ratio(append, insert)} of it |"
        )
    return rows


def _percent(part: float | None, whole: float | None) -> str:
    return "–" if part is None or not whole else f"{100 * part / whole:.1f}%"


# -- the whole Markdown report -----------------------------------------------------------------------


def markdown(results: Results, verdicts: Sequence[Verdict]) -> str:
    meta = results.get("meta", {})
    lines = [f"# pgbridge benchmark ({meta.get('mode', '?')} mode)", "", *_environment(meta), ""]
    if meta.get("mode") == "quick":
        lines += [
            "**Quick mode**: every workload at a fraction of its size; figures are indicative only.",
            "",
        ]
    lines += ["## Targets", "", *targets_table(verdicts), "", "## Results", ""]
    lines += [
        "Ratios are pgbridge ÷ peer: above 1 pgbridge has the larger figure, which is better for "
        "events/s and worse for latency, memory and store calls. Store calls are SQL statements for "
        "pgbridge (appends, NOTIFYs, range reads; publisher and subscriber process together) and "
        "commands for Redis; the in-process reference makes none.",
        "",
        *metrics_table(results),
        "",
        "## PostgreSQL ceilings",
        "",
        *ceilings_table(results),
        "",
        "## Notes",
        "",
        *_notes(results),
    ]
    return "\n".join(lines) + "\n"


def _environment(meta: Mapping[str, Any]) -> list[str]:
    machine, pg, redis = meta.get("machine", {}), meta.get("postgres", {}), meta.get("redis", {})
    pg_settings = ", ".join(f"{k}={v}" for k, v in pg.get("settings", {}).items())
    if "skipped" in redis:
        redis_line = f"Redis: skipped ({redis['skipped']})"
    else:
        redis_settings = ", ".join(f"{k}={v!r}" for k, v in redis.get("settings", {}).items())
        redis_line = f"Redis {redis.get('version')} ({redis_settings or 'settings unreadable'})"
    code = meta.get("pgbridge", {})
    code_line = f"- pgbridge {code.get('version')}"
    if code.get("commit"):
        dirty = code.get("uncommitted")
        code_line += f", commit {code['commit']}" + (f" plus uncommitted {', '.join(dirty)}" if dirty else "")
    return [
        code_line,
        f"- run {meta.get('started_at', '?')}, {meta.get('seconds', '?')} s; {machine.get('cpus')} CPUs, "
        f"{machine.get('platform')}, Python {machine.get('python')}",
        f"- PostgreSQL {pg.get('version')} ({meta.get('server', '?')}; {pg_settings})",
        f"- {redis_line}",
        f"- payload: {meta.get('payload_bytes')} bytes of JSON per token event, the same for every contender",
    ]


def _notes(results: Results) -> list[str]:
    meta = results.get("meta", {})
    notes = [
        "- (a) and (c) pace the publisher (one event every "
        f"{1000 * meta.get('sizes', {}).get('latency_interval', 0):g} ms in (a), "
        f"{1000 * meta.get('sizes', {}).get('fanout_interval', 0):g} ms in (c)); (b) publishes back to back, "
        "each publisher waiting for its previous acknowledgement. Latencies run from just before the "
        "publish call (the publisher's clock, in the payload) to the subscriber's receipt.",
        "- The in-process reference keeps events in memory and subscribes in the publishing process: "
        "it is the ceiling of a bridge with no I/O, not a durable log.",
        "- pgbridge runs with its default options (pool of 10, poll every 1 s); Redis with "
        "redis-py's asyncio client, XADD MAXLEN ~ 100000, XREAD BLOCK 15000 COUNT 1000.",
        "- Each Redis subscription runs its own blocking XREAD on its own connection (the plain design); "
        "pgbridge shares one read per run per process among its subscriptions. A Redis bridge that "
        "shared reads the same way would fan out differently.",
        "- The database, Redis, the publishing process and the subscriber process share this machine's "
        "cores: where the machine CPU row is near 100%, throughput is bounded by the machine, not by one "
        "component.",
    ]
    redis = meta.get("redis", {})
    persistence = redis.get("settings", {})
    if persistence.get("appendonly") == "no" and not persistence.get("save"):
        notes.append(
            "- This Redis has no persistence (appendonly=no, no save points): its acknowledged events "
            "are not durable, unlike pgbridge's committed ones."
        )
    for contender, info in meta.get("contenders", {}).items():
        if info.get("fill_method"):
            notes.append(f"- (d) {LABELS.get(contender, contender)} was filled with {info['fill_method']}.")
    if not meta.get("contenders", {}).get("pgbridge", {}).get("store_calls_counted", True):
        notes.append("- This pgbridge has no `statements_run`: its store calls are not reported.")
    for workload in WORKLOAD_KEYS:
        for contender in CONTENDER_ORDER:
            note = outcome_note(results, workload, contender)
            if note and note.startswith("error"):
                notes.append(f"- {workload} / {LABELS[contender]}: {note}")
    return notes


# -- the chart ------------------------------------------------------------------------------------------


def chart(results: Results, path: Path) -> None:
    """Six panels: throughput, latencies, store calls, replay, idle memory, idle calls."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = contenders_in(results)
    colours = {"pgbridge": "#336791", "inprocess": "#8c8c8c", "redis": "#d82c20"}
    fig, axes = plt.subplots(2, 3, figsize=(16, 9))
    fanout = results.get("meta", {}).get("sizes", {}).get("fanout_subscribers", "K")

    def bars(ax: Any, title: str, workload: str, path: tuple[str, ...], scale: float = 1.0) -> None:
        values = [_scaled(figure(results, workload, n, path), scale) for n in names]
        heights = [v or 0.0 for v in values]
        ax.bar([LABELS[n] for n in names], heights, color=[colours[n] for n in names])
        for x, (v, h) in enumerate(zip(values, heights, strict=True)):
            ax.annotate(number(v) if v is not None else "n/a", (x, h), ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)

    bars(axes[0][0], "(b) acknowledged events/s (log)", "b_concurrent", ("events_per_s",))
    axes[0][0].set_yscale("log")
    for key, style in (("batched_insert_rows_per_s", "--"), ("copy_rows_per_s", ":")):
        value = ceiling(results, key)
        if value:
            axes[0][0].axhline(
                value, linestyle=style, color="black", linewidth=1, label=key.replace("_", " ")
            )
    axes[0][0].legend(fontsize=7)
    _latency_panel(axes[0][1], results, names, colours, fanout)
    _calls_panel(axes[0][2], results, names, colours, fanout)
    bars(axes[1][0], "(d) replay events/s (log)", "d_replay", ("events_per_s",))
    axes[1][0].set_yscale("log")
    axes[1][0].axhline(250_000, linestyle="--", color="black", linewidth=1, label="target 250,000/s")
    axes[1][0].legend(fontsize=7)
    bars(axes[1][1], "(e) KiB of RSS per idle subscription", "e_idle", ("bytes_per_subscription",), 1 / 1024)
    bars(axes[1][2], "(e) store calls/s while idle", "e_idle", ("store_calls_per_second",))
    mode = results.get("meta", {}).get("mode", "?")
    fig.suptitle(f"pgbridge benchmark ({mode} mode)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _latency_panel(
    ax: Any, results: Results, names: list[str], colours: Mapping[str, str], fanout: object
) -> None:
    groups = (
        ("publish (a)", "a_latency", ("publish",)),
        ("receive (a)", "a_latency", ("receive",)),
        ("end-to-end (b)", "b_concurrent", ("end_to_end",)),
        (f"fan-out {fanout} (c)", "c_fanout", ("many", "fanout")),
    )
    width = 0.8 / max(len(names), 1)
    for i, name in enumerate(names):
        xs = [g + (i - (len(names) - 1) / 2) * width for g in range(len(groups))]
        p99 = [figure(results, w, name, (*p, "p99")) or 0.0 for _, w, p in groups]
        p50 = [figure(results, w, name, (*p, "p50")) or 0.0 for _, w, p in groups]
        ax.bar(xs, p99, width, color=colours[name], alpha=0.35)
        ax.bar(xs, p50, width * 0.6, color=colours[name], label=LABELS[name])
    ax.set_xticks(range(len(groups)), [g[0] for g in groups], fontsize=8)
    ax.set_yscale("log")
    ax.set_title("latency ms (log): p50 solid, p99 pale", fontsize=10)
    ax.legend(fontsize=7)


def _calls_panel(
    ax: Any, results: Results, names: list[str], colours: Mapping[str, str], fanout: object
) -> None:
    counted = [
        n for n in names if figure(results, "c_fanout", n, ("one", "store_calls_per_event")) is not None
    ]
    width = 0.8 / max(len(counted), 1)
    for i, name in enumerate(counted):
        values = [
            figure(results, "c_fanout", name, (p, "store_calls_per_event")) or 0.0 for p in ("one", "many")
        ]
        xs = [g + (i - (len(counted) - 1) / 2) * width for g in range(2)]
        ax.bar(xs, values, width, color=colours[name], label=LABELS[name])
        for x, v in zip(xs, values, strict=True):
            ax.annotate(number(v), (x, v), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(2), ["1 subscriber", f"{fanout} subscribers"])
    ax.set_yscale("log")
    ax.set_title("(c) store calls per published event (log)", fontsize=10)
    ax.legend(fontsize=7)


# -- writing it all -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReportFiles:
    markdown: Path
    json: Path
    chart: Path


def write_report(results: Mapping[str, Any], out_dir: Path) -> ReportFiles:
    """Write ``results.md``, ``results.json`` (with the verdicts) and ``results.png`` to *out_dir*."""
    out_dir.mkdir(parents=True, exist_ok=True)
    verdicts = evaluate_targets(results)
    full = {**results, "targets": [{**asdict(v), "summary": v.summary} for v in verdicts]}
    files = ReportFiles(out_dir / "results.md", out_dir / "results.json", out_dir / "results.png")
    files.json.write_text(json.dumps(full, indent=1, default=str) + "\n")
    files.markdown.write_text(markdown(full, verdicts))
    chart(full, files.chart)
    return files
