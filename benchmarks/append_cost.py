"""What ``pgbridge_append_batch`` costs PostgreSQL per event, by the shape of the batch.

    python benchmarks/append_cost.py                       # embedded PostgreSQL
    python benchmarks/append_cost.py --dsn URI             # another server (a scratch database is made on it)
    python benchmarks/append_cost.py --candidate FILE.sql  # and a candidate function, side by side
    python benchmarks/append_cost.py --against 0009        # head against a database at revision 0009

Server time per event of one call of the append function, as the publisher
sends it, for three batch shapes: 100 runs x 1 event (many publishers at
once), 1 run x 100 events (a burst into one run) and 1 run x 1 event (a lone
publish: the fixed cost of a call). Each sample is one call inside a
transaction, minus a statement that receives the same five arrays and does
nothing with them, so the round trip and the parameters' transfer are not
counted; the commit is not counted either. The median of ``--samples`` calls
after a warm-up is reported, and beside it a plain multi-row INSERT of the
same rows measured the same way. The measuring code is
``pgbridge/bench/append_cost.py``, which ``pgbridge bench`` runs too (a row
of its PostgreSQL ceilings).

With ``--candidate``, the file's ``CREATE OR REPLACE FUNCTION`` (``__SCHEMA__``
for the schema, as in the revisions) replaces the head function, and the two
are measured in alternating rounds in the same session, so machine noise hits
both alike: compare the ratio, not the absolute figures. With ``--against
REV``, head is measured against a second database migrated only to revision
REV, its function and its indexes both, in alternating rounds (revision 0010
changed both: ``--against 0009`` shows what it moved).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import statistics
from pathlib import Path

import asyncpg

from pgbridge.bench.append_cost import insert_per_row_us, per_event_us
from pgbridge.bench.servers import embedded_server, scratch_database
from pgbridge.embedded import dsn_from_environment
from pgbridge.migrate import migrate
from pgbridge.sql.queries import Queries

VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"

#: (runs, events per run) of a batch.
SHAPES = ((100, 1), (1, 100), (1, 1))
#: A scratch table shaped like run_events, for the plain INSERT.
INSERT_TABLE = "append_cost_plain_insert"


def head_function_sql() -> str:
    """``CREATE FUNCTION pgbridge_append_batch`` as the newest revision that creates it."""
    pattern = re.compile(
        r"^CREATE (?:OR REPLACE )?FUNCTION __SCHEMA__\.pgbridge_append_batch\(.*?\$body\$;$", re.S | re.M
    )
    for path in sorted(VERSIONS.glob("[0-9]*_*.sql"), reverse=True):
        upgrade = path.read_text(encoding="utf-8").split("\n-- migrate:upgrade\n", 1)[1]
        upgrade = upgrade.split("\n-- migrate:downgrade\n", 1)[0]
        if match := pattern.search(upgrade):
            return match.group().replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1)
    raise LookupError(f"no revision in {VERSIONS} creates pgbridge_append_batch")


async def measure(
    dsn: str, functions: dict[str, str], args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    await migrate(dsn)
    append = Queries.for_schema().append_events
    results: dict[str, dict[str, list[float]]] = {
        name: {f"{r}x{e}": [] for r, e in SHAPES} for name in functions
    }
    results["plain INSERT"] = {f"{r}x{e}": [] for r, e in SHAPES}
    setup = await asyncpg.connect(dsn)
    try:
        await setup.execute(
            f"CREATE TABLE {INSERT_TABLE} (LIKE run_events INCLUDING DEFAULTS INCLUDING INDEXES)"
        )
    finally:
        await setup.close()
    for number in range(args.rounds):
        conn = await asyncpg.connect(dsn)
        try:
            for runs, per_run in SHAPES:
                figure = await insert_per_row_us(
                    conn,
                    INSERT_TABLE,
                    (runs, per_run),
                    args.samples,
                    prefix=f"insert-{number}-{runs}x{per_run}-",
                )
                results["plain INSERT"][f"{runs}x{per_run}"].append(figure)
        finally:
            await conn.close()
        for name, sql in functions.items():
            conn = await asyncpg.connect(dsn)  # a new session: the function's plans are its own
            try:
                await conn.execute(sql.replace("__SCHEMA__", '"public"'))
                await conn.close()
                conn = await asyncpg.connect(dsn)
                for runs, per_run in SHAPES:
                    figure = await per_event_us(conn, append, (runs, per_run), args.samples)
                    results[name][f"{runs}x{per_run}"].append(figure)
            finally:
                await conn.close()
    return {name: {k: statistics.median(v) for k, v in shapes.items()} for name, shapes in results.items()}


def report(server: str, figures: dict[str, dict[str, float]]) -> str:
    lines = [
        f"\n## pgbridge_append_batch: PostgreSQL time per event ({server})\n",
        "| function | 100 runs x 1 event | 1 run x 100 events | 1 run x 1 event (a call's fixed cost) |",
        "|---|---:|---:|---:|",
    ]
    for name, shapes in figures.items():
        lines.append(
            f"| {name} | {shapes['100x1']:.1f} µs | {shapes['1x100']:.1f} µs | {shapes['1x1']:.0f} µs |"
        )
    for name in figures:
        if name in ("head", "plain INSERT"):
            continue
        head, other = figures["head"], figures[name]
        ratios = ", ".join(f"{shape} {other[shape] / head[shape]:.2f}" for shape in head)
        lines.append(f"\n{name} / head: {ratios}")
    return "\n".join(lines)


async def measure_against(
    head_dsn: str, old_dsn: str, revision: str, args: argparse.Namespace
) -> dict[str, dict[str, float]]:
    """Head and *revision* (each in its own database), in alternating rounds."""
    append = Queries.for_schema().append_events
    databases = {"head": head_dsn, f"revision {revision}": old_dsn}
    results: dict[str, dict[str, list[float]]] = {
        name: {f"{r}x{e}": [] for r, e in SHAPES} for name in databases
    }
    for number in range(args.rounds):
        for name, dsn in databases.items():
            conn = await asyncpg.connect(dsn)
            try:
                for runs, per_run in SHAPES:
                    figure = await per_event_us(
                        conn, append, (runs, per_run), args.samples, prefix=f"r{number}-"
                    )
                    results[name][f"{runs}x{per_run}"].append(figure)
            finally:
                await conn.close()
    return {name: {k: statistics.median(v) for k, v in shapes.items()} for name, shapes in results.items()}


async def benchmark(args: argparse.Namespace, functions: dict[str, str]) -> dict[str, dict[str, float]]:
    with contextlib.ExitStack() as servers:
        admin_dsn = args.dsn or dsn_from_environment() or servers.enter_context(embedded_server())
        async with scratch_database(admin_dsn) as dsn:
            if args.against:
                async with scratch_database(admin_dsn, revision=args.against) as old_dsn:
                    figures = await measure_against(dsn, old_dsn, args.against, args)
            else:
                figures = await measure(dsn, functions, args)
            conn = await asyncpg.connect(dsn)
            server = f"PostgreSQL {await conn.fetchval('SHOW server_version')}"
            await conn.close()
    print(report(server, figures))
    return figures


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="an existing server (default: $PGBRIDGE_DSN, else an embedded one)")
    parser.add_argument(
        "--candidate", help="a CREATE OR REPLACE FUNCTION pgbridge_append_batch file to compare"
    )
    parser.add_argument(
        "--against", metavar="REV", help="measure head against a database at revision REV instead"
    )
    parser.add_argument("--samples", type=int, default=40, help="calls measured per shape and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds of head and candidate")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()
    functions = {"head": head_function_sql()}
    if args.candidate:
        functions["candidate"] = Path(args.candidate).read_text(encoding="utf-8")
    figures = asyncio.run(benchmark(args, functions))
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
