"""Per-run read tokens: signed, short-lived, checked without a database (docs/security.md).

A read token lets whoever holds it read one run until it expires, and nothing
else. It is ``pgb1.<kid>.<expiry>.<mac>``:

* ``pgb1``: the format (a new one gets a new prefix);
* ``kid``: the id of the key that signed it (``[A-Za-z0-9_-]``, 1 to 32);
* ``expiry``: when it stops working, in Unix seconds (decimal, no leading zero);
* ``mac``: HMAC-SHA256, keyed with that key's secret, over the format, the
  kid, the expiry and the run id, as unpadded URL-safe base64 (43 characters).

The run id is signed but not carried: a token is checked against the run its
URL names, so a token for another run fails exactly like a tampered one, and a
token that leaks does not tell which run it reads. Every character is
URL-safe, so it travels in a query string (``?token=``) as it is. The MAC is
compared in constant time (:func:`hmac.compare_digest`).

Keys come as text, one ``kid:secret`` per line (or separated by commas), at
most two: the first signs, both verify, which is how keys rotate. Pure: the
standard library only, no I/O but :meth:`TokenKeyring.from_file`.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from pgbridge.exceptions import ConfigurationError, InvalidEventError
from pgbridge.ids import validate_run_id

#: What every read token starts with.
TOKEN_PREFIX = "pgb1"
#: The longest text that can be a read token (a 32-character kid, a 12-digit expiry).
MAX_TOKEN_LENGTH = len(TOKEN_PREFIX) + 1 + 32 + 1 + 12 + 1 + 43
#: The longest a read token may live: longer-lived grants belong to the app's own sessions.
MAX_TTL_SECONDS = 7 * 86400
#: How far a token's expiry may lie past ``now + MAX_TTL_SECONDS`` (issuers' clocks differ).
CLOCK_SLACK_SECONDS = 300
#: The shortest secret accepted, in characters.
MIN_SECRET_LENGTH = 32
#: Keys active at once: the one that signs, and the one being rotated out.
MAX_KEYS = 2

#: A token, whole: prefix, kid, expiry, MAC.
_TOKEN = re.compile(r"pgb1\.([A-Za-z0-9_-]{1,32})\.([1-9][0-9]{0,11})\.([A-Za-z0-9_-]{43})", re.ASCII)
#: A read token anywhere in a text (for redacting logs).
TOKEN_PATTERN = re.compile(r"\bpgb1\.[A-Za-z0-9_-]{1,32}\.[0-9]{1,12}\.[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])")
_KID = re.compile(r"[A-Za-z0-9_-]{1,32}", re.ASCII)
#: A secret: printable ASCII without spaces or commas (hex, base64, token_urlsafe all fit).
_SECRET = re.compile(r"[\x21-\x2b\x2d-\x7e]+", re.ASCII)
#: What the MAC covers first: the format and what the token grants, so it can mean nothing else.
_MAC_CONTEXT = b"pgbridge read token v1\n"


@dataclass(frozen=True, slots=True)
class TokenKey:
    """One signing key: its id, which tokens carry, and its secret, which they never do."""

    kid: str
    secret: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.kid, str) or not _KID.fullmatch(self.kid):
            raise ConfigurationError(
                f"a token key id is 1 to 32 of A-Z, a-z, 0-9, '_' and '-', not {self.kid!r}"
            )
        if not isinstance(self.secret, bytes) or len(self.secret) < MIN_SECRET_LENGTH:
            raise ConfigurationError(
                f"token key {self.kid!r}: the secret must be at least {MIN_SECRET_LENGTH} characters "
                "(e.g. `openssl rand -hex 32`)"
            )

    def mac(self, expires_at: int, run_id: str) -> str | None:
        """The MAC of a token for *run_id* expiring at *expires_at*; None for a run id that
        cannot be encoded (no token can name it)."""
        try:
            run = run_id.encode("utf-8")
        except UnicodeEncodeError:
            return None
        message = b"%s%s\n%d\n%s" % (_MAC_CONTEXT, self.kid.encode("ascii"), expires_at, run)
        digest = hmac.new(self.secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


@dataclass(frozen=True, slots=True)
class TokenKeyring:
    """The active keys, one or two: the first signs, each verifies the tokens it signed."""

    keys: tuple[TokenKey, ...]

    def __post_init__(self) -> None:
        if not 1 <= len(self.keys) <= MAX_KEYS:
            raise ConfigurationError(
                f"give one or two token keys (the first signs, both verify), not {len(self.keys)}"
            )
        kids = [key.kid for key in self.keys]
        if len(set(kids)) != len(kids):
            raise ConfigurationError(f"two token keys share the id {kids[0]!r}: give each its own")

    def __repr__(self) -> str:
        return f"TokenKeyring(kids={self.kids!r})"

    @property
    def kids(self) -> tuple[str, ...]:
        """The key ids, the signing one first (what is safe to show)."""
        return tuple(key.kid for key in self.keys)

    @property
    def signing(self) -> TokenKey:
        return self.keys[0]

    def find(self, kid: str) -> TokenKey | None:
        return next((key for key in self.keys if key.kid == kid), None)

    @classmethod
    def parse(cls, text: str, *, source: str = "the token secrets") -> TokenKeyring:
        """Keys from text: ``kid:secret`` entries, one a line or separated by commas; blank
        lines and lines starting with ``#`` are skipped. Errors name the line, never the secret."""
        if not isinstance(text, str):
            raise ConfigurationError(f"{source} must be text of kid:secret lines")
        keys = []
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue
            for entry in filter(None, (part.strip() for part in stripped.split(","))):
                keys.append(_parse_entry(entry, f"{source}, line {number}"))
        if not keys:
            raise ConfigurationError(f"{source} hold no key: write one kid:secret a line")
        return cls(tuple(keys))

    @classmethod
    def from_file(cls, path: str | Path) -> TokenKeyring:
        """Keys from a file in the format of :meth:`parse`."""
        try:
            text = Path(path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigurationError(f"cannot read the token secret file {str(path)!r}: {exc}") from None
        return cls.parse(text, source=f"token secret file {str(path)!r}")


def _parse_entry(entry: str, where: str) -> TokenKey:
    kid, colon, secret = entry.partition(":")
    if not colon:
        raise ConfigurationError(f"{where}: expected kid:secret (a key id, a colon, the secret)")
    kid, secret = kid.strip(), secret.strip()
    if not _KID.fullmatch(kid):
        raise ConfigurationError(f"{where}: a key id is 1 to 32 of A-Z, a-z, 0-9, '_' and '-'")
    if not _SECRET.fullmatch(secret):
        raise ConfigurationError(
            f"{where}: key {kid!r}: the secret must be printable ASCII, no space or comma"
        )
    if len(secret) < MIN_SECRET_LENGTH:
        raise ConfigurationError(
            f"{where}: key {kid!r}: the secret must be at least {MIN_SECRET_LENGTH} characters "
            "(e.g. `openssl rand -hex 32`)"
        )
    return TokenKey(kid, secret.encode("ascii"))


def as_keyring(secrets: TokenKeyring | str | None) -> TokenKeyring | None:
    """*secrets* as a keyring: itself, parsed from text (:meth:`TokenKeyring.parse`), or None."""
    if secrets is None or isinstance(secrets, TokenKeyring):
        return secrets
    if isinstance(secrets, str):
        return TokenKeyring.parse(secrets, source="token_secrets")
    raise ConfigurationError(
        f"token_secrets must be kid:secret text or a TokenKeyring, not {type(secrets).__name__}"
    )


def ttl_seconds(ttl: float | timedelta) -> int:
    """*ttl* in whole seconds (rounded up), 1 s to :data:`MAX_TTL_SECONDS`; else InvalidEventError."""
    seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else ttl
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
        raise InvalidEventError(f"ttl must be a number of seconds or a timedelta, not {ttl!r}")
    if not 0 < seconds <= MAX_TTL_SECONDS:
        raise InvalidEventError(
            f"ttl must be more than 0 and at most {MAX_TTL_SECONDS} seconds (7 days), not {seconds:g}"
        )
    return math.ceil(seconds)


def issue_read_token(
    keyring: TokenKeyring, run_id: str, ttl: float | timedelta, *, now: float | None = None
) -> str:
    """A token reading *run_id* for *ttl* from *now* (default: this clock), signed with the first key."""
    validate_run_id(run_id)
    expires_at = math.floor(time.time() if now is None else now) + ttl_seconds(ttl)
    key = keyring.signing
    mac = key.mac(expires_at, run_id)
    if mac is None:  # validate_run_id lets no such text through
        raise InvalidEventError("run_id cannot be encoded as UTF-8")
    return f"{TOKEN_PREFIX}.{key.kid}.{expires_at}.{mac}"


def check_read_token(
    keyring: TokenKeyring, token: object, run_id: str, *, now: float | None = None
) -> int | None:
    """When *token* stops reading *run_id* (Unix seconds), or None when it does not read it now.

    None for anything else: malformed text, an unknown key id, a MAC that does
    not match (tampered, or for another run), an expiry passed or too far off.
    Callers answer every None alike ("invalid token").
    """
    if not isinstance(token, str) or len(token) > MAX_TOKEN_LENGTH:
        return None
    match = _TOKEN.fullmatch(token)
    if match is None:
        return None
    kid, expiry, given = match.groups()
    key = keyring.find(kid)
    if key is None:
        return None
    expected = key.mac(int(expiry), run_id)
    if expected is None or not hmac.compare_digest(given, expected):
        return None
    expires_at = int(expiry)
    moment = time.time() if now is None else now
    if not moment < expires_at <= moment + MAX_TTL_SECONDS + CLOCK_SLACK_SECONDS:
        return None
    return expires_at


def looks_like_read_token(text: str) -> bool:
    """Whether *text* is written as a read token (to tell it from a wrong bearer token)."""
    return text.startswith(TOKEN_PREFIX + ".")
