"""Durable Streams message encoding (PROTOCOL.md section 9): bodies to stored events and back.

Pure functions. Every message is stored as one run_events row, so the hash
chain, the append-only guard and retention treat protocol messages like any
event:

* a JSON-mode stream (``application/json``) stores each message's JSON text
  as the event's data; a POST body that is an array is flattened one level;
* any other content type stores the body's bytes as a JSON string of their
  base64 (the data column is ``json``, which keeps the exact text);
* a run born from ``publish`` (no content type) is a JSON stream whose
  messages are envelopes ``{"id", "event", "data"}`` of its events.

Reads are rendered by PostgreSQL (``read_stream_page`` in
:mod:`pgbridge.sql.queries`: the envelopes, the comma-joined JSON texts);
the functions here finish the body.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from typing import Final

import orjson

from pgbridge.exceptions import InvalidEventError
from pgbridge.payload import MAX_NESTING_DEPTH, encode_data

JSON_TYPE: Final = "application/json"
DEFAULT_TYPE: Final = "application/octet-stream"
#: The event name of a message appended over the protocol.
MESSAGE_EVENT: Final = "message"


def normalize_content_type(header: str | None) -> str | None:
    """The media type of a Content-Type header, lowercased, without parameters."""
    if header is None:
        return None
    media = header.split(";", 1)[0].strip().lower()
    return media or None


def is_json(content_type: str | None) -> bool:
    """Whether a stream of *content_type* is in JSON mode (None: a run born from publish)."""
    return content_type is None or content_type == JSON_TYPE


def is_text(content_type: str | None) -> bool:
    """Whether SSE sends the stream's data as text (else base64)."""
    return is_json(content_type) or (content_type or "").startswith("text/")


def json_messages(body: bytes, *, max_bytes: int, allow_empty: bool) -> list[str]:
    """The JSON texts of a JSON-mode body: an array is flattened one level.

    Raises :class:`InvalidEventError` for invalid JSON, an empty array (unless
    *allow_empty*, as on create), or a message over *max_bytes*.
    """
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        try:  # orjson refuses integers beyond 64 bits, which JSON allows
            value = json.loads(body, parse_constant=_reject_constant)
        except (ValueError, RecursionError) as exc:
            raise InvalidEventError(f"the body is not valid JSON: {exc}") from None
    values = value if isinstance(value, list) else [value]
    if not values and not allow_empty:
        raise InvalidEventError("an empty JSON array appends nothing; send at least one message")
    return [_encoded(item, max_bytes) for item in values]


def _encoded(item: object, max_bytes: int) -> str:
    """*item*'s JSON text, as :func:`encode_data` checks it, quickly for the usual message.

    A value orjson parsed is already JSON (str keys, no NaN or Infinity); what
    is left to check is NUL characters, lone surrogates (orjson will not encode
    them), nesting and size, and a message that might fail any of these goes
    through :func:`encode_data`, which names the problem.
    """
    try:
        text = orjson.dumps(item).decode()
    except orjson.JSONEncodeError:
        return encode_data(item, max_bytes=max_bytes)
    if (
        "\\u0000" in text
        or text.count("[") + text.count("{") > MAX_NESTING_DEPTH
        or (len(text) * 4 > max_bytes and len(text.encode()) > max_bytes)
    ):
        return encode_data(item, max_bytes=max_bytes)
    return text


def _reject_constant(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def bytes_message(body: bytes) -> str:
    """The stored JSON text of a non-JSON body: its base64, as a JSON string."""
    return '"' + base64.b64encode(body).decode("ascii") + '"'


def stored_bytes(data_text: str) -> bytes:
    """The bytes a non-JSON message stored (:func:`bytes_message`), or the text of any other event."""
    if len(data_text) >= 2 and data_text[0] == '"' and data_text[-1] == '"':
        try:
            return base64.b64decode(data_text[1:-1], validate=True)
        except (binascii.Error, ValueError):
            pass
    return data_text.encode("utf-8")


def json_array(texts: Iterable[str]) -> bytes:
    """Messages' JSON texts as one JSON array body."""
    return ("[" + ",".join(texts) + "]").encode("utf-8")


def json_array_of_joined(joined: str) -> bytes:
    """Messages' JSON texts joined with commas (as PostgreSQL's ``string_agg`` gives them)
    as one JSON array body."""
    return ("[" + joined + "]").encode("utf-8")
