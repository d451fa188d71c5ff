"""Checks and encoding of what a publisher hands us: run ids, event names and data.

Everything here runs before the database is touched, so bad input raises
:class:`InvalidEventError` and writes nothing. The stored form of ``data`` is
its exact JSON text (PostgreSQL ``json``, not ``jsonb``), so replay gives back
the same value with the same dict key order.
"""

from __future__ import annotations

import json
import math
from typing import Final

import orjson

from pgbridge.contract import JSONValue
from pgbridge.exceptions import InvalidEventError

MAX_EVENT_NAME_LENGTH: Final = 255
#: Default limit on the UTF-8 size of one event's encoded data.
DEFAULT_MAX_PAYLOAD_BYTES: Final = 1024 * 1024
#: Deepest nesting of lists and dicts accepted (Python's and PostgreSQL's
#: JSON parsers both recurse; this keeps every reader far from their limits).
MAX_NESTING_DEPTH: Final = 256

_RESERVED_PREFIX: Final = "__"


def validate_name(what: str, name: object, max_length: int) -> str:
    """Return *name* (a run id, an event name) if it is a non-empty str of at most
    *max_length* characters that PostgreSQL can store, else raise naming *what* it is."""
    if not isinstance(name, str):
        raise InvalidEventError(f"{what} must be a str, not {type(name).__name__}")
    if not name:
        raise InvalidEventError(f"{what} must not be empty")
    if len(name) > max_length:
        raise InvalidEventError(f"{what} is {len(name)} characters long; at most {max_length} are allowed")
    check_text(what, name)
    return name


def validate_event_name(event: object) -> str:
    """Return *event* if it can name an ordinary event, else raise."""
    name = validate_name("event", event, MAX_EVENT_NAME_LENGTH)
    if name.startswith(_RESERVED_PREFIX):
        raise InvalidEventError(
            f"event {name!r} starts with '__', which is reserved for sentinels and markers"
        )
    return name


def encode_data(data: object, *, max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES) -> str:
    """Check *data* is a JSON value and return its JSON text.

    Raises :class:`InvalidEventError` naming the problem: a non-JSON type, a
    non-str dict key, NaN or Infinity, a NUL character, a lone surrogate,
    nesting deeper than :data:`MAX_NESTING_DEPTH`, or an encoded size over
    *max_bytes*. Tuples are accepted and encode as lists, as :mod:`json` does.

    A publish's hot path: most data is checked and encoded by orjson in well
    under a microsecond (:func:`_encode_fast`); anything it cannot vouch for
    takes the full check, which decides alone what is accepted.
    """
    raw = _encode_fast(data)
    if raw is not None:
        if len(raw) > max_bytes:
            raise InvalidEventError(
                f"data is {len(raw)} bytes as JSON; the limit is {max_bytes} bytes (max_payload_bytes)"
            )
        return raw.decode()
    _check_value(data, "data", 0)
    try:
        text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except ValueError as exc:  # e.g. an int beyond Python's str conversion limit
        raise InvalidEventError(f"data cannot be encoded as JSON: {exc}") from None
    size = len(text.encode("utf-8"))
    if size > max_bytes:
        raise InvalidEventError(
            f"data is {size} bytes as JSON; the limit is {max_bytes} bytes (max_payload_bytes)"
        )
    return text


#: orjson hands these to ``default`` (absent: it refuses them), so the full check judges them:
#: subclasses of str, int, dict and list, dates and times, dataclasses.
_FAST_OPTIONS: Final = (
    orjson.OPT_PASSTHROUGH_SUBCLASS | orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
)


def _encode_fast(data: object) -> bytes | None:
    """*data*'s JSON as UTF-8 when orjson alone shows it is a JSON value pgbridge accepts;
    None when the full check must decide.

    orjson refuses non-str keys, lone surrogates, ints beyond 64 bits and deep nesting
    (None here: the full check refuses or accepts them with its own words). What it accepts
    but :func:`encode_data` must not (NaN and Infinity become ``null``, enums and UUIDs
    their values) does not decode back to an equal value, and a NUL shows as ``\\u0000``:
    both go to the full check too. The text equals :mod:`json`'s (compact, UTF-8) but for
    the spelling of some floats (``1e16`` for ``1e+16``), the same numbers.
    """
    try:
        raw = orjson.dumps(data, option=_FAST_OPTIONS)
    except (TypeError, orjson.JSONEncodeError):
        return None
    if b"\\u0000" in raw or orjson.loads(raw) != data:
        return None
    return raw


def decode_data(text: str) -> JSONValue:
    """Turn stored JSON text back into the value that was published."""
    value: JSONValue = json.loads(text)
    return value


def _check_value(value: object, path: str, depth: int) -> None:
    if depth > MAX_NESTING_DEPTH:
        raise InvalidEventError(f"data nests deeper than {MAX_NESTING_DEPTH} levels at {path}")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidEventError(f"{path} is {value!r}; JSON has no NaN or Infinity")
        return
    if isinstance(value, str):
        check_text(path, value)
        return
    if isinstance(value, list | tuple):
        for index, item in enumerate(value):
            _check_value(item, f"{path}[{index}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidEventError(
                    f"{path} has a key of type {type(key).__name__} ({key!r}); JSON object keys must be str"
                )
            check_text(f"key {key!r} of {path}", key)
            _check_value(item, f"{path}[{key!r}]", depth + 1)
        return
    raise InvalidEventError(f"{path} is a {type(value).__name__}, which is not a JSON value")


def check_text(path: str, text: str) -> None:
    """Raise unless PostgreSQL can store *text* (no NUL, no lone surrogate); *path* names it."""
    if "\x00" in text:
        raise InvalidEventError(f"{path} contains a NUL character, which PostgreSQL cannot store")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidEventError(
            f"{path} is not valid Unicode (lone surrogate at index {exc.start})"
        ) from None
