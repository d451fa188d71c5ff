"""DSNs: showing one without its password (the one place pgbridge redacts connection strings),
and taking out libpq's ``connect_timeout``, which asyncpg does not accept.

Pure (no I/O). Every message, log line and hint that names a DSN passes it
through :func:`redact_dsn` first, so ``pgbridge runs --dsn
postgresql://app:hunter2@host/db`` never prints ``hunter2``, whatever fails.
Like psql, which never echoes a password, the rest of the DSN (user, hosts,
ports, database, options) is kept: it is what a user needs to see which
server was meant.
"""

from __future__ import annotations

import re
from typing import Final

#: What a password is replaced with.
MASK: Final = "***"

#: libpq parameters whose values are secrets (in a URI's query or a key=value string).
SECRET_PARAMETERS: Final = ("password", "sslpassword")

_URI = re.compile(r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<rest>.*)$", re.DOTALL)
_QUERY_SECRET = re.compile(
    r"(?P<key>(?:^|[?&;])(?:" + "|".join(SECRET_PARAMETERS) + r")=)(?P<value>[^&#;]*)", re.IGNORECASE
)
# key = value pairs of a libpq conninfo string: a value is 'quoted (with \' and \\)' or a bare word.
_CONNINFO_SECRET = re.compile(
    r"(?P<key>(?<![\w])(?:" + "|".join(SECRET_PARAMETERS) + r")\s*=\s*)"
    r"(?P<value>'(?:[^'\\]|\\.)*'?|[^\s]*)",
    re.IGNORECASE,
)


def redact_dsn(dsn: str) -> str:
    """*dsn* with every password replaced by ``***``.

    Handles ``postgresql://user:password@host/db`` (also percent-encoded, and
    with several hosts: ``@h1:5432,h2:5433``), ``?password=...`` and
    ``?sslpassword=...`` in the query, and libpq ``key=value`` strings
    (``host=h password=secret``). A DSN with no password comes back unchanged.
    """
    match = _URI.match(dsn)
    if match is None:
        return _CONNINFO_SECRET.sub(lambda m: m.group("key") + MASK, dsn)
    scheme, rest = match.group("scheme"), match.group("rest")
    # The authority ends at the first '/', '?' or '#' after its last '@' (a password may hold them).
    start = max(rest.rfind("@"), 0)
    stops = [found for found in (rest.find(stop, start) for stop in "/?#") if found != -1]
    end = min(stops, default=len(rest))
    authority, tail = rest[:end], rest[end:]
    userinfo, separator, hosts = authority.rpartition("@")
    if separator:
        user, colon, password = userinfo.partition(":")
        if colon and password:  # an empty password (the embedded server's "postgres:@") hides nothing
            authority = f"{user}:{MASK}@{hosts}"
    query_start = tail.find("?")
    if query_start != -1:
        tail = tail[:query_start] + _QUERY_SECRET.sub(lambda m: m.group("key") + MASK, tail[query_start:])
    return scheme + authority + tail


#: libpq's parameter for how long to wait while connecting, in seconds.
CONNECT_TIMEOUT_PARAMETER: Final = "connect_timeout"

_QUERY_CONNECT_TIMEOUT = re.compile(r"(?P<sep>[?&])connect_timeout=(?P<value>[^&#]*)", re.IGNORECASE)


def take_connect_timeout(dsn: str) -> tuple[str, float | None]:
    """*dsn* without libpq's ``connect_timeout`` query parameter, and its value in seconds
    (None when the DSN has none).

    psql and libpq-based drivers accept ``?connect_timeout=5``; asyncpg does not know it and
    would send it to the server as a setting, which refuses it. So pgbridge takes it out of
    the URI and uses it as its own ``connect_timeout`` (how long one connection attempt may
    take, and how long ``start()`` keeps trying while the server is away). It must be a
    positive number of seconds: libpq's "0 waits forever" has no equivalent here.
    Raises ValueError naming the parameter for anything else.
    """
    match = _URI.match(dsn)
    if match is None:
        return dsn, None
    # The query starts at the first '?' after the authority's last '@' (a password may hold '?').
    query_start = dsn.find("?", match.start("rest") + max(match.group("rest").rfind("@"), 0))
    if query_start == -1:
        return dsn, None
    found = list(_QUERY_CONNECT_TIMEOUT.finditer(dsn, query_start))
    if not found:
        return dsn, None
    text = found[-1].group("value")
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not seconds > 0 or seconds == float("inf"):
        raise ValueError(f"connect_timeout in the DSN must be a positive number of seconds, not {text!r}")
    head, query = dsn[:query_start], dsn[query_start + 1 :]
    kept = [part for part in query.split("&") if not part.lower().startswith("connect_timeout=")]
    return (f"{head}?{'&'.join(kept)}" if kept else head), seconds
