"""JSON-mode bodies: the fast encoding keeps every check of ``encode_data``."""

from __future__ import annotations

import pytest

from pgbridge.durable_streams.messages import json_messages
from pgbridge.exceptions import InvalidEventError
from pgbridge.payload import MAX_NESTING_DEPTH, encode_data


def test_messages_are_stored_as_compact_json_text_in_order() -> None:
    body = '[{"a": 1, "b": [true, null, 2.5]}, "é", {"k": {"z": 0, "a": -1}}]'.encode()
    texts = json_messages(body, max_bytes=1000, allow_empty=False)
    assert texts == ['{"a":1,"b":[true,null,2.5]}', '"é"', '{"k":{"z":0,"a":-1}}']
    assert texts == [
        encode_data(v) for v in ({"a": 1, "b": [True, None, 2.5]}, "é", {"k": {"z": 0, "a": -1}})
    ]


@pytest.mark.parametrize(
    "body",
    [
        b'[{"a": "x\\u0000y"}]',  # NUL: PostgreSQL cannot store it
        b'{"\\u0000": 1}',
        b'["\\ud800"]',  # a lone surrogate
        b"[" * (MAX_NESTING_DEPTH + 2) + b"]" * (MAX_NESTING_DEPTH + 2),
        b'["' + b"x" * 200 + b'"]',  # over max_bytes
    ],
)
def test_bad_messages_are_refused(body: bytes) -> None:
    with pytest.raises(InvalidEventError):
        json_messages(body, max_bytes=100, allow_empty=False)


def test_a_deep_but_allowed_message_and_brackets_inside_strings_are_kept() -> None:
    deep = b"[" * MAX_NESTING_DEPTH + b"]" * MAX_NESTING_DEPTH
    assert json_messages(deep, max_bytes=10_000, allow_empty=False) == [
        "[" * (MAX_NESTING_DEPTH - 1) + "]" * (MAX_NESTING_DEPTH - 1)
    ]
    text = '"' + "[{" * 300 + "\\\\u0000" + '"'
    assert json_messages(text.encode(), max_bytes=10_000, allow_empty=False) == [text]
