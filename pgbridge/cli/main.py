"""The ``pgbridge`` command: a thin layer over functions you can call.

With no ``--dsn`` (and neither ``PGBRIDGE_DSN`` nor ``DATABASE_URL``) every
command uses the embedded PostgreSQL and says where its data lives.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shlex
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from pgbridge.cli import inspect as inspect_cli
from pgbridge.cli import retention as retention_cli
from pgbridge.cli import tokens as tokens_cli
from pgbridge.cli.retention import parse_duration
from pgbridge.cli.signals import until_signalled
from pgbridge.exceptions import (
    ConfigurationError,
    InvalidEventError,
    SchemaNotMigratedError,
    StreamBridgeError,
)
from pgbridge.retention.policy import RetentionPolicy, RetentionReport
from pgbridge.sql import DEFAULT_SCHEMA

if TYPE_CHECKING:
    from pgbridge.inspection import RetentionPreview

TOKEN_ENV = "PGBRIDGE_TOKEN"
CORS_ENV = "PGBRIDGE_CORS_ORIGINS"


def _add_connection_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dsn",
        help="postgresql:// URI (default: $PGBRIDGE_DSN, $DATABASE_URL, else the embedded server)",
    )
    parser.add_argument("--schema", default=DEFAULT_SCHEMA, help="PostgreSQL schema of the tables")
    parser.add_argument(
        "--data-dir", type=Path, help="data folder of the embedded server (default: $PGBRIDGE_DATA_DIR)"
    )


def resolve_dsn(args: argparse.Namespace) -> str:
    """The DSN to use, starting the embedded server when none is configured."""
    from pgbridge.embedded import default_data_dir, dsn_from_environment, start_embedded

    dsn: str | None = args.dsn or dsn_from_environment()
    if dsn:
        return dsn
    folder = args.data_dir or default_data_dir()
    print(f"using the embedded PostgreSQL in {folder}", file=sys.stderr)
    args.embedded_folder = folder  # for the hint of an unmigrated schema (_explain)
    dsn = start_embedded(folder)
    print(f"  (psql '{dsn.replace(':@', '@', 1)}' reaches it while this command runs)", file=sys.stderr)
    return dsn


def _explain(exc: StreamBridgeError, args: argparse.Namespace) -> str:
    """*exc* as one line; on the embedded server, a hint that works once this process has
    stopped it (``--data-dir``, not a DSN of its socket)."""
    folder = getattr(args, "embedded_folder", None)
    if not isinstance(exc, SchemaNotMigratedError) or folder is None:
        return str(exc)
    command = f"pgbridge migrate --data-dir {shlex.quote(str(folder))}"
    schema = getattr(args, "schema", DEFAULT_SCHEMA)
    if schema != DEFAULT_SCHEMA:
        command += f" --schema {shlex.quote(schema)}"
    return f"the embedded PostgreSQL in {folder} is not migrated for this pgbridge: run `{command}` first"


def policy_from_args(args: argparse.Namespace) -> RetentionPolicy:
    return retention_cli.policy_from_args(args)


def format_report(report: RetentionReport, seconds: float) -> str:
    fields = " ".join(f"{name}={value}" for name, value in asdict(report).items())
    return f"retention pass: {fields} ({seconds:.3f} s)"


def _pass_progress(report: RetentionReport) -> str:
    return (
        f"{report.events_deleted:,} events deleted, {report.runs_deleted:,} runs deleted, "
        f"{report.runs_dead_lettered:,} dead-lettered, {report.streams_expired:,} expired streams removed"
    )


async def run_retention_passes(
    dsn: str, schema: str, policy: RetentionPolicy, every: float | None, *, ask: bool = False
) -> int:
    """One pass (or one every *every* seconds, until interrupted), printing each report.

    On a terminal, a bar shows what the running pass has deleted so far (a
    pass does not know its total before it ends). With *ask*, what the pass
    would do is shown first and it runs only if the user says yes.
    """
    from pgbridge.bridge import PostgresStreamBridge
    from pgbridge.cli.progress import progress_bars

    print(f"policy: {retention_cli.describe_policy(policy)}", flush=True)
    if ask:
        preview = await _preview(dsn, schema, policy)
        print("a pass now would:", *retention_cli.preview_lines(preview), sep="\n", flush=True)
        if not retention_cli.confirm("run this pass?"):
            print("nothing was deleted", file=sys.stderr)
            return 1
    async with PostgresStreamBridge(dsn, schema=schema, pool_min_size=1, pool_max_size=2) as bridge:
        with progress_bars() as bars:
            bar = bars.add("retention pass")
            while True:
                started = time.perf_counter()
                bar.update(detail="")
                report = await bridge.run_retention(
                    policy, progress=lambda r: bar.update(detail=_pass_progress(r))
                )
                bar.update(detail=_pass_progress(report))
                print(format_report(report, time.perf_counter() - started), flush=True)
                if every is None:
                    return 0
                await asyncio.sleep(every)


async def _preview(dsn: str, schema: str, policy: RetentionPolicy) -> RetentionPreview:
    from pgbridge.inspection import Inspector

    async with Inspector(dsn, schema=schema) as inspector:
        return await inspector.retention_preview(policy)


async def run_dry_run(dsn: str, schema: str, policy: RetentionPolicy) -> int:
    """``retention --dry-run``: what a pass would delete now, per rule; nothing is deleted."""
    print(f"policy: {retention_cli.describe_policy(policy)}", flush=True)
    preview = await _preview(dsn, schema, policy)
    print("dry run, nothing was deleted; a pass now would:", *retention_cli.preview_lines(preview), sep="\n")
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (the command's --help has the rest), exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="pgbridge", description="A durable, resumable event log for agent runs, on PostgreSQL."
    )
    parser.add_argument("--version", action="version", version=f"pgbridge {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or upgrade pgbridge's tables")
    _add_connection_options(migrate)
    demo = commands.add_parser(
        "demo", help="stream a simulated run, kill its reader midway, resume in a new process"
    )
    _add_connection_options(demo)
    demo.add_argument("--events", type=int, default=300, help="token events to publish")
    retention = commands.add_parser(
        "retention",
        help="run a retention pass (dead-letter stale runs, delete old events and runs) and print it",
    )
    _add_connection_options(retention)
    retention_cli.add_options(retention)
    verify = commands.add_parser(
        "verify", help="recompute runs' hash chains; exit 1 if any is broken (or check an export offline)"
    )
    _add_connection_options(verify)
    verify.add_argument("runs", nargs="*", metavar="RUN", help="run ids to verify")
    verify.add_argument("--all", action="store_true", help="verify every run")
    verify.add_argument("--file", type=Path, help="check an export made by `pgbridge export`, offline")
    verify.add_argument("--json", action="store_true", help="one JSON object per run instead of a table")
    export = commands.add_parser("export", help="write a run's events and hashes as JSON lines, for auditors")
    _add_connection_options(export)
    export.add_argument("run", metavar="RUN")
    export.add_argument("--format", choices=["jsonl"], default="jsonl")
    export.add_argument("--output", "-o", type=Path, help="file to write (default: standard output)")
    inspect_cli.add_parsers(commands, connection_options=_add_connection_options, duration=parse_duration)
    bench = commands.add_parser(
        "bench", help="benchmark pgbridge against Redis Streams, an in-process bridge and raw PostgreSQL"
    )
    bench.add_argument("--dsn", help="a server where databases can be created (default: an embedded one)")
    bench.add_argument("--quick", action="store_true", help="small sizes: a smoke run of every workload")
    bench.add_argument(
        "--out", type=Path, default=Path("bench-results"), help="folder for results.md/.json/.png"
    )
    bench.add_argument(
        "--durable-streams",
        action="store_true",
        help="instead: the Durable Streams endpoint (pgbridge serve) against the reference server",
    )
    serve = commands.add_parser(
        "serve", help="serve runs over HTTP: SSE streams, status, a live viewer, Durable Streams"
    )
    _add_connection_options(serve)
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument(
        "--token",
        default=os.environ.get(TOKEN_ENV),
        help=f"require this bearer token (default: ${TOKEN_ENV}); needed on a non-loopback --host",
    )
    tokens_cli.add_key_option(serve, "; a read token of either reads its run")
    serve.add_argument(
        "--insecure",
        action="store_true",
        help="serve on a non-loopback --host without a token or keys (anyone who can reach it can write)",
    )
    serve.add_argument(
        "--cors-origin",
        action="append",
        default=[o for o in os.environ.get(CORS_ENV, "").split(",") if o],
        metavar="ORIGIN",
        help=f"let browsers on ORIGIN call the API; repeat, or '*' (default: ${CORS_ENV}, comma-separated)",
    )
    serve.add_argument(
        "--heartbeat", type=parse_duration, default=15.0, metavar="SECONDS", help="heartbeat comment interval"
    )
    serve.add_argument(
        "--retry-ms", type=int, default=2000, help="the SSE retry hint, in ms (default: %(default)s)"
    )
    serve.add_argument(
        "--metrics", action="store_true", help="serve Prometheus metrics at /metrics (the metrics extra)"
    )
    serve.add_argument(
        "--chat-stream-path",
        default="/chat/{chat_id}/stream",
        metavar="PATH",
        help="where the AI SDK's useChat resume request is answered (docs/ai-sdk.md; default: %(default)s)",
    )
    scale = serve.add_argument_group("past one machine (docs/scaling.md)")
    scale.add_argument(
        "--listen-dsn",
        default=os.environ.get("PGBRIDGE_LISTEN_DSN"),
        help="a direct connection for LISTEN when --dsn is a transaction-mode pooler "
        "(default: $PGBRIDGE_LISTEN_DSN)",
    )
    scale.add_argument(
        "--replica-dsn",
        default=os.environ.get("PGBRIDGE_REPLICA_DSN"),
        help="a hot standby for catch-up and replay reads (default: $PGBRIDGE_REPLICA_DSN)",
    )
    scale.add_argument(
        "--statement-cache-size",
        type=int,
        default=None,
        help="asyncpg's prepared statement cache per connection; 0 behind PgBouncer in transaction mode",
    )
    scale.add_argument("--pool-max-size", type=int, default=None, help="connections in the pool (default 10)")
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug"],
        help="uvicorn's log level; below info there is no access log line per request (default: %(default)s)",
    )
    serve.add_argument(
        "--long-poll-timeout",
        type=parse_duration,
        default=10.0,
        metavar="SECONDS",
        help="Durable Streams: how long a long-poll waits for data (default: %(default)s)",
    )
    serve.add_argument(
        "--max-append-bytes",
        type=int,
        default=8 * 1024 * 1024,
        metavar="BYTES",
        help="Durable Streams: the largest append body; 413 beyond (default: %(default)s)",
    )
    serve.add_argument(
        "--allow-run-deletion",
        action="store_true",
        help="Durable Streams: let DELETE remove runs published through the bridge (audit history; "
        "refused with 403 by default). Every deletion is recorded (docs/audit.md)",
    )
    tokens_cli.add_parser(commands)
    return parser


def serve_bridge_options(args: argparse.Namespace) -> dict[str, object]:
    """The bridge options `pgbridge serve` was given (unset ones keep the bridge's defaults)."""
    options: dict[str, object] = {
        "listen_dsn": args.listen_dsn or None,
        "replica_dsn": args.replica_dsn or None,
        "statement_cache_size": args.statement_cache_size,
        "pool_max_size": args.pool_max_size,
    }
    if args.pool_max_size is not None:
        options["pool_min_size"] = min(1, args.pool_max_size)
    return {name: value for name, value in options.items() if value is not None}


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("pgbridge")
    except PackageNotFoundError:  # pragma: no cover - a source tree that is not installed
        return "(version unknown)"


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "migrate":
            from pgbridge.migrate import migrate

            dsn = resolve_dsn(args)
            print(asyncio.run(migrate(dsn, schema=args.schema)).describe())
            return 0
        if args.command == "demo":
            from pgbridge.cli.demo import run_demo

            return asyncio.run(run_demo(resolve_dsn(args), schema=args.schema, events=args.events))
        if args.command == "verify":
            from pgbridge.cli.audit import run_verify

            return run_verify(args, resolve_dsn)
        if args.command == "export":
            from pgbridge.cli.audit import run_export

            return run_export(args, resolve_dsn)
        if args.command in inspect_cli.COMMANDS:
            return inspect_cli.run_command(args, resolve_dsn)
        if args.command == "token":
            return tokens_cli.run_token(args)
        if args.command == "bench":
            from pgbridge.bench.run import run_benchmark
            from pgbridge.embedded import dsn_from_environment

            server: str | None = args.dsn or dsn_from_environment()
            return asyncio.run(
                run_benchmark(
                    server, quick=args.quick, out_dir=args.out, durable_streams=args.durable_streams
                )
            )
        if args.command == "serve":
            from pgbridge.durable_streams.http import DurableStreamSettings
            from pgbridge.embedded import dsn_from_environment
            from pgbridge.http.app import StreamSettings
            from pgbridge.http.server import exposure_warning, run_server

            keyring = tokens_cli.keyring_from(args)
            warning = exposure_warning(
                args.host, args.port, token=args.token, insecure=args.insecure, keys=keyring is not None
            )
            if warning:
                print(f"pgbridge: {warning}", file=sys.stderr)
            if keyring is not None:
                print(f"pgbridge: read tokens: {tokens_cli.describe(keyring)}", file=sys.stderr)
            embedded = not (args.dsn or dsn_from_environment())
            run_server(
                resolve_dsn(args),
                host=args.host,
                port=args.port,
                schema=args.schema,
                token=args.token or None,
                cors_origins=args.cors_origin,
                settings=StreamSettings(
                    heartbeat_interval=args.heartbeat,
                    retry_ms=args.retry_ms,
                    chat_stream_path=args.chat_stream_path,
                ),
                metrics=args.metrics,
                log_level=args.log_level,
                bridge_options={**serve_bridge_options(args), "token_secrets": keyring},
                stream_settings=DurableStreamSettings(
                    long_poll_timeout=args.long_poll_timeout,
                    max_append_bytes=args.max_append_bytes,
                    allow_run_deletion=args.allow_run_deletion,
                ),
                migrate=embedded,  # the user's own throwaway server: migrated on its first start
            )
            return 0
        if args.command == "retention":
            policy = policy_from_args(args)
            if args.dry_run:
                return asyncio.run(run_dry_run(resolve_dsn(args), args.schema, policy))
            ask = retention_cli.wants_confirmation(args)
            passes = run_retention_passes(resolve_dsn(args), args.schema, policy, args.every, ask=ask)
            return asyncio.run(until_signalled(passes))
    except (InvalidEventError, ConfigurationError) as exc:  # bad input: as argparse's usage errors
        print(f"pgbridge: {exc}", file=sys.stderr)
        return 2
    except StreamBridgeError as exc:
        print(f"pgbridge: {_explain(exc, args)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
