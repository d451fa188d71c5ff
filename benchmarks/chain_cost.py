"""What the hash chain costs a publish, measured on a real PostgreSQL.

    python benchmarks/chain_cost.py                  # embedded PostgreSQL
    python benchmarks/chain_cost.py --dsn URI        # another server (a scratch database is made on it)

Runs the bridge's own append (the ``pgbridge_append_batch`` function, one
event per call, as a lone publisher sends it) against the same scratch
database two ways, in alternating rounds so machine noise hits both alike:

* ``chained``: the function as shipped (``pgbridge_link_hash``: SHA-256 over
  the previous hash and the event);
* ``unchained``: a copy of the function with the hash replaced by a
  constant, so the only difference is computing the chain (both store 32
  bytes).

``--concurrency`` publishers (one connection each) append to ``--runs`` runs.
It prints appends per second for each and the ratio, and the bytes the hash
adds per stored event. Compare the ratio, not absolute figures.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import re
import statistics
import sys
import time
from pathlib import Path

import asyncpg

from pgbridge.audit.chain import GENESIS
from pgbridge.bench.servers import embedded_server, scratch_database
from pgbridge.embedded import dsn_from_environment
from pgbridge.sql.queries import Queries

VERSIONS = Path(__file__).resolve().parent.parent / "migrations" / "versions"

#: The hash a run's first event chains from, as a SQL literal.
GENESIS_SQL = f"'\\x{GENESIS.hex()}'::bytea"


def append_function_sql() -> str:
    """``CREATE FUNCTION pgbridge_append_batch`` in schema public, as the newest revision that creates it."""
    pattern = re.compile(
        r"^CREATE (?:OR REPLACE )?FUNCTION __SCHEMA__\.pgbridge_append_batch\(.*?\$body\$;$", re.S | re.M
    )
    for path in sorted(VERSIONS.glob("[0-9]*_*.sql"), reverse=True):
        upgrade = path.read_text(encoding="utf-8").split("\n-- migrate:upgrade\n", 1)[1]
        upgrade = upgrade.split("\n-- migrate:downgrade\n", 1)[0]
        if match := pattern.search(upgrade):
            return match.group().replace("__SCHEMA__", '"public"')
    raise LookupError(f"no revision in {VERSIONS} creates pgbridge_append_batch")


def unchained(statement: str) -> str:
    """*statement* with every link-hash call replaced by the constant genesis hash."""
    out, marker = [], '"public".pgbridge_link_hash('
    rest = statement
    while marker in rest:
        before, _, after = rest.partition(marker)
        depth, index = 1, 0
        while depth:
            depth += {"(": 1, ")": -1}.get(after[index], 0)
            index += 1
        out.append(before + GENESIS_SQL)
        rest = after[index:]
    out.append(rest)
    return "".join(out)


async def round_of(pool: asyncpg.Pool, sql: str, appends: int, runs: int, concurrency: int) -> float:
    """Appends per second for one round of *appends* spread over *concurrency* workers."""
    per_worker = appends // concurrency

    async def worker() -> None:
        rng = random.Random()
        async with pool.acquire() as conn:
            for _ in range(per_worker):
                run_id = f"run-{rng.randrange(runs)}"
                data = '{"text":"a token of an agent run"}'
                await conn.fetch(sql, [run_id], ["token"], [data], [False], ["active"])

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return per_worker * concurrency / (time.perf_counter() - started)


async def benchmark(args: argparse.Namespace) -> None:
    with contextlib.ExitStack() as servers:
        admin_dsn = args.dsn or dsn_from_environment() or servers.enter_context(embedded_server())
        async with scratch_database(admin_dsn) as dsn:
            await measure(dsn, args)


async def measure(dsn: str, args: argparse.Namespace) -> None:
    chained_sql = Queries.for_schema().append_events
    unchained_sql = chained_sql.replace("pgbridge_append_batch(", "pgbridge_append_batch_unchained(")
    variants = {"chained": chained_sql, "unchained": unchained_sql}
    pool = await asyncpg.create_pool(dsn, min_size=args.concurrency, max_size=args.concurrency)
    create = unchained(append_function_sql())
    assert "pgbridge_link_hash" not in create
    await pool.execute(create.replace("pgbridge_append_batch(", "pgbridge_append_batch_unchained("))
    server = f"PostgreSQL {await pool.fetchval('SHOW server_version')}"
    rates: dict[str, list[float]] = {name: [] for name in variants}
    await round_of(pool, chained_sql, 2000, args.runs, args.concurrency)  # warm up
    for _ in range(args.rounds):
        for name, sql in variants.items():
            rates[name].append(await round_of(pool, sql, args.appends, args.runs, args.concurrency))
    hash_bytes = await pool.fetchval("SELECT avg(pg_column_size(hash)) FROM run_events")
    await pool.close()
    chained, plain = statistics.median(rates["chained"]), statistics.median(rates["unchained"])
    print(f"\n## The hash chain's cost on {server}\n")
    print(
        f"{args.rounds} alternating rounds of {args.appends:,} appends, "
        f"{args.concurrency} publishers, {args.runs:,} runs\n"
    )
    print("| append statement | appends/s (median) | µs per append |")
    print("|---|---:|---:|")
    for name, rate in (("unchained", plain), ("chained", chained)):
        print(f"| {name} | {rate:,.0f} | {1e6 / rate:.0f} |")
    print(f"\nchained / unchained throughput: {chained / plain:.3f}")
    print(f"hash column: {hash_bytes:.0f} bytes per stored event (plus 32 in run_streams per run)")


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="an existing server (default: $PGBRIDGE_DSN, else an embedded one)")
    parser.add_argument("--appends", type=int, default=20_000, help="appends per round and variant")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--runs", type=int, default=1_000)
    parser.add_argument("--concurrency", type=int, default=8)
    asyncio.run(benchmark(parser.parse_args()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
