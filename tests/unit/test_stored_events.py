"""Stored events as the store hands them up: made cheaply, decoded only when asked (no database)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import orjson
import pytest

import pgbridge.store.events as events_module
from pgbridge import StreamEvent
from pgbridge.ids import format_event_id
from pgbridge.store.events import LoggedEvent


def test_the_event_of_a_logged_event_is_what_the_constructor_makes() -> None:
    made = LoggedEvent(3, 17, "token", '{"a":[1]}', False).event
    built = StreamEvent(id="17-3", event="token", data={"a": [1]})
    assert type(made) is StreamEvent
    assert made == built and hash(LoggedEvent(1, 1, "t", "null", False).event) == hash(
        StreamEvent("1-1", "t", None)
    )
    assert repr(made) == repr(built) and dataclasses.astuple(made) == dataclasses.astuple(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.data = 1  # type: ignore[misc]


def test_streamevent_has_only_the_fields_a_logged_event_sets() -> None:
    # LoggedEvent.event sets the slots itself: it must stay in step with StreamEvent's fields.
    assert [f.name for f in dataclasses.fields(StreamEvent)] == ["id", "event", "data"]
    assert not hasattr(StreamEvent, "__post_init__")


def test_a_logged_event_decodes_its_data_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []

    def counting(text: str) -> object:
        decoded.append(text)
        return orjson.loads(text)

    monkeypatch.setattr(
        events_module, "orjson", SimpleNamespace(loads=counting, JSONDecodeError=orjson.JSONDecodeError)
    )
    logged = LoggedEvent(3, 1700000000000, "token", '{"n":1}', False)
    assert decoded == [] and logged.data_text == '{"n":1}'
    assert logged.id == format_event_id(1700000000000, 3)
    event = logged.event
    assert event == StreamEvent(id=format_event_id(1700000000000, 3), event="token", data={"n": 1})
    assert type(event) is StreamEvent and repr(event) == repr(StreamEvent(event.id, "token", {"n": 1}))
    assert logged.event is event and decoded == ['{"n":1}']


def test_a_logged_event_decodes_what_orjson_refuses_but_publish_wrote() -> None:
    logged = LoggedEvent(1, 1, "token", '{"big":1180591620717411303424}', False)
    assert logged.event.data == {"big": 2**70}
