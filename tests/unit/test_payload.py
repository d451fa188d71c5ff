"""Event names and data checks (docs/behaviour.md §5), without a database."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid

import pytest

from pgbridge import InvalidEventError, StreamBridgeError
from pgbridge.payload import MAX_NESTING_DEPTH, decode_data, encode_data, validate_event_name


class Colour(enum.Enum):
    RED = "red"


class Name(str):
    """A str subclass: a JSON string all the same."""


class Count(enum.IntEnum):
    ONE = 1


@dataclasses.dataclass
class Point:
    x: int
    y: int


@pytest.mark.parametrize(
    "value",
    [None, True, False, 0, -1, 2**70, 1.5, "", "text ✓", [], {}, [1, "a", None], {"a": {"b": [1.0]}}],
)
def test_json_values_round_trip(value: object) -> None:
    assert decode_data(encode_data(value)) == value


@pytest.mark.parametrize(
    "value",
    [
        {"t": (1, 2)},
        {Name("k"): Name("v")},
        {"n": Count.ONE},
        {"big": 2**64},
        {"f": 1e16, "g": -0.0, "h": 5e-324},
        {"null": None, "text": "a\\u0000b"},
        "line\nbreak \u2028 \x1f",
    ],
)
def test_every_accepted_value_encodes_to_what_json_makes_of_it(value: object) -> None:
    """The fast path (orjson) and the full check (json) accept alike and store equal values."""
    expected = json.loads(json.dumps(value, ensure_ascii=False, allow_nan=False))
    assert decode_data(encode_data(value)) == expected


def test_dict_key_order_survives() -> None:
    data = {"z": 1, "a": 2, "m": {"y": 0, "b": 1}}
    assert list(decode_data(encode_data(data))) == ["z", "a", "m"]
    assert list(decode_data(encode_data(data))["m"]) == ["y", "b"]  # type: ignore[index]


def test_tuples_replay_as_lists() -> None:
    assert decode_data(encode_data({"t": (1, (2, 3))})) == {"t": [1, [2, 3]]}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (float("nan"), "NaN"),
        (float("inf"), "Infinity"),
        ({"x": [float("-inf")]}, "Infinity"),
        ("a\x00b", "NUL"),
        ({"k\x00": 1}, "NUL"),
        ({1: "int key"}, "key"),
        ({None: "none key"}, "key"),
        ({"s": {1, 2}}, "set"),
        (b"bytes", "bytes"),
        (object(), "object"),
        ("\ud83d", "surrogate"),
        ({"\udfff": 1}, "surrogate"),
        # orjson (the fast path) would encode these; the full check refuses them.
        ({"when": datetime.datetime(2026, 1, 1)}, "datetime"),
        ({"id": uuid.UUID(int=1)}, "UUID"),
        ({"colour": Colour.RED}, "Colour"),
        ({"point": Point(1, 2)}, "Point"),
        ({"deep": [[{"x": float("nan")}]]}, "NaN"),
    ],
)
def test_non_json_data_is_rejected_naming_the_problem(value: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        encode_data(value)


def test_invalid_event_error_is_a_value_error_and_a_bridge_error() -> None:
    with pytest.raises(ValueError):
        encode_data(float("nan"))
    with pytest.raises(StreamBridgeError):
        encode_data(float("nan"))


def test_data_over_the_size_limit_is_rejected() -> None:
    encode_data("x" * 98, max_bytes=100)  # 100 bytes with its quotes
    with pytest.raises(InvalidEventError, match="limit"):
        encode_data("x" * 99, max_bytes=100)


def test_size_limit_counts_utf8_bytes() -> None:
    with pytest.raises(InvalidEventError, match="limit"):
        encode_data("é" * 50, max_bytes=100)


def test_nesting_deeper_than_the_limit_is_rejected() -> None:
    ok: object = []
    for _ in range(MAX_NESTING_DEPTH):
        ok = [ok]
    encode_data(ok)
    with pytest.raises(InvalidEventError, match="nests deeper"):
        encode_data([ok])


def test_integer_too_long_for_python_to_print_is_rejected() -> None:
    with pytest.raises(InvalidEventError):
        encode_data(10**5000)


def test_encoding_is_compact_json() -> None:
    assert encode_data({"a": [1, 2]}) == json.dumps({"a": [1, 2]}, separators=(",", ":"))


@pytest.mark.parametrize("name", ["", "x" * 256, "__reserved", "__gap__", "nul\x00", "\ud800", 3, None])
def test_bad_event_names_are_rejected(name: object) -> None:
    with pytest.raises(InvalidEventError):
        validate_event_name(name)


@pytest.mark.parametrize("name", ["token", "error", "end", "_single", "x" * 255, "a__b"])
def test_ordinary_event_names_are_accepted(name: str) -> None:
    assert validate_event_name(name) == name
