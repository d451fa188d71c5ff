"""The ``pgbridge`` command: a thin layer over functions you can call.

With no ``--dsn`` (and neither ``PGBRIDGE_DSN`` nor ``DATABASE_URL``) every
command uses the embedded PostgreSQL and says where its data lives.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

from pgbridge.errors import StreamBridgeError
from pgbridge.schema import DEFAULT_SCHEMA


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
    return start_embedded(folder)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pgbridge", description="A durable, resumable event log for agent runs, on PostgreSQL."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    migrate = commands.add_parser("migrate", help="create or upgrade pgbridge's tables")
    _add_connection_options(migrate)
    demo = commands.add_parser(
        "demo", help="stream a simulated run, kill its reader midway, resume in a new process"
    )
    _add_connection_options(demo)
    demo.add_argument("--events", type=int, default=300, help="token events to publish")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    args = build_parser().parse_args(argv)
    try:
        if args.command == "migrate":
            from pgbridge.migrate import migrate

            dsn = resolve_dsn(args)
            asyncio.run(migrate(dsn, schema=args.schema))
            print(f"schema {args.schema!r} is up to date")
            return 0
        if args.command == "demo":
            from pgbridge.demo import run_demo

            return asyncio.run(run_demo(resolve_dsn(args), schema=args.schema, events=args.events))
    except StreamBridgeError as exc:
        print(f"pgbridge: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 2


if __name__ == "__main__":
    sys.exit(main())
