"""``pgbridge token`` and where the commands find the read-token keys (docs/security.md).

The keys come from ``--token-secret-file PATH`` (default
``$PGBRIDGE_TOKEN_SECRET_FILE``), or from ``$PGBRIDGE_TOKEN_SECRETS`` (the
same text: ``kid:secret`` lines or comma-separated); both at once is refused,
so no one wonders which keys a server holds. ``pgbridge serve`` verifies
with them and ``pgbridge token`` signs with them; neither prints a secret.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from pgbridge.cli.retention import positive_duration
from pgbridge.exceptions import ConfigurationError
from pgbridge.tokens import TokenKeyring, issue_read_token

SECRET_FILE_ENV = "PGBRIDGE_TOKEN_SECRET_FILE"
SECRETS_ENV = "PGBRIDGE_TOKEN_SECRETS"


def add_key_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--token-secret-file",
        default=os.environ.get(SECRET_FILE_ENV) or None,
        metavar="PATH",
        help=f"a file of read-token keys, one kid:secret a line, at most two, the first signs{what} "
        f"(default: ${SECRET_FILE_ENV}, or the keys themselves in ${SECRETS_ENV})",
    )


def keyring_from(args: argparse.Namespace, environ: Mapping[str, str] = os.environ) -> TokenKeyring | None:
    """The keys the command was given, or None."""
    text = environ.get(SECRETS_ENV) or None
    path = args.token_secret_file
    if path and text:
        raise ConfigurationError(
            f"read-token keys given twice (a secret file and ${SECRETS_ENV}): give one of them"
        )
    if path:
        return TokenKeyring.from_file(path)
    if text:
        return TokenKeyring.parse(text, source=f"${SECRETS_ENV}")
    return None


def describe(keyring: TokenKeyring) -> str:
    """Which keys are active, by id (the secrets never leave the process)."""
    signing, *others = keyring.kids
    return f"key {signing!r} signs" + "".join(f", {kid!r} verifies" for kid in others)


def add_parser(commands: argparse._SubParsersAction[Any]) -> None:
    token = commands.add_parser(
        "token", help="print a read token: read access to one run, for a while (for a browser)"
    )
    token.add_argument("run", metavar="RUN", help="the run the token reads")
    token.add_argument(
        "--ttl",
        type=positive_duration,
        default=600.0,
        metavar="DURATION",
        help="how long it reads: 90s, 10m, 12h, at most 7d (default: 10m)",
    )
    add_key_option(token, "")
    token.add_argument(
        "--url",
        metavar="BASE",
        help="print the run's viewer URL on the server at BASE (http://host:port), token included",
    )


def run_token(args: argparse.Namespace) -> int:
    """Print the token (or the viewer's URL with it): no database is involved."""
    keyring = keyring_from(args)
    if keyring is None:
        raise ConfigurationError(
            f"no read-token keys: give --token-secret-file (or set ${SECRET_FILE_ENV} or ${SECRETS_ENV})"
        )
    token = issue_read_token(keyring, args.run, args.ttl)
    if args.url:
        print(f"{args.url.rstrip('/')}/runs/{quote(args.run, safe='')}/view?token={token}")
    else:
        print(token)
    return 0
