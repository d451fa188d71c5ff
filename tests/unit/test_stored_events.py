"""Stored events as the store hands them up: made cheaply, decoded only when asked (no database)."""

from __future__ import annotations

import dataclasses

import pytest

import pgbridge.store.events as events_module
from pgbridge import StreamEvent
from pgbridge.ids import format_event_id
from pgbridge.store.events import LoggedEvent, stream_event


def test_stream_event_makes_what_the_constructor_makes() -> None:
    made = stream_event("17-3", "token", {"a": [1]})
    built = StreamEvent(id="17-3", event="token", data={"a": [1]})
    assert type(made) is StreamEvent
    assert made == built and hash(stream_event("1-1", "t", None)) == hash(StreamEvent("1-1", "t", None))
    assert repr(made) == repr(built) and dataclasses.astuple(made) == dataclasses.astuple(built)
    with pytest.raises(dataclasses.FrozenInstanceError):
        made.data = 1  # type: ignore[misc]


def test_stream_event_sets_every_field_and_skips_no_init_logic() -> None:
    # It sets the slots itself: it must stay in step with StreamEvent's fields.
    assert [f.name for f in dataclasses.fields(StreamEvent)] == ["id", "event", "data"]
    assert not hasattr(StreamEvent, "__post_init__")


def test_a_logged_event_decodes_its_data_once_and_only_when_asked(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded: list[str] = []
    real = events_module._decode

    def counting(text: str) -> object:
        decoded.append(text)
        return real(text)

    monkeypatch.setattr(events_module, "_decode", counting)
    logged = LoggedEvent(3, 1700000000000, "token", '{"n":1}', False)
    assert decoded == [] and logged.data_text == '{"n":1}'
    assert logged.id == format_event_id(1700000000000, 3)
    event = logged.event
    assert event == StreamEvent(id=format_event_id(1700000000000, 3), event="token", data={"n": 1})
    assert logged.event is event and decoded == ['{"n":1}']
