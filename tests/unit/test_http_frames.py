"""SSE framing (pure: no server, no database)."""

from __future__ import annotations

import json

import pytest

from pgbridge import GAP_EVENT, StreamEvent
from pgbridge.http.frames import (
    event_frame,
    gap_frame,
    heartbeat_frame,
    history_changed_frame,
    retry_line,
    stored_event_frame,
)
from pgbridge.payload import encode_data


def test_an_event_frame_has_id_event_and_one_line_of_json_data() -> None:
    frame = event_frame(StreamEvent(id="17-3", event="token", data={"text": "a\nb", "n": 1}))
    assert frame == 'id: 17-3\nevent: token\ndata: {"text":"a\\nb","n":1}\n\n'


def test_non_ascii_data_is_sent_as_utf8_text() -> None:
    assert 'data: "héllo ✓"\n' in event_frame(StreamEvent(id="1-1", event="t", data="héllo ✓"))


def test_line_breaks_in_an_event_name_cannot_break_the_frame() -> None:
    frame = event_frame(StreamEvent(id="1-1", event="two\r\nlines\rhere\nnow", data=None))
    assert frame == "id: 1-1\nevent: two lines here now\ndata: null\n\n"


def test_an_envelope_frame_has_no_event_line_and_names_the_event_in_its_data() -> None:
    frame = event_frame(StreamEvent(id="1-1", event="token", data=[1]), envelope=True)
    assert frame == 'id: 1-1\ndata: {"event":"token","data":[1]}\n\n'


def test_a_gap_frame_is_named_gap_and_has_no_id() -> None:
    marker = StreamEvent(id="", event=GAP_EVENT, data={"gap_count": 2})
    assert gap_frame(marker) == 'event: gap\ndata: {"gap_count":2}\n\n'


def test_a_heartbeat_is_a_comment() -> None:
    assert heartbeat_frame().startswith(":") and heartbeat_frame().endswith("\n\n")


def test_the_retry_hint_is_one_field_line() -> None:
    assert retry_line(1500) == "retry: 1500\n"


def test_every_run_status_has_a_langgraph_status_the_sdk_understands() -> None:
    from pgbridge.http.app import LANGGRAPH_STATUS
    from pgbridge.sql import RUN_STATUSES

    assert set(LANGGRAPH_STATUS) == set(RUN_STATUSES)
    assert set(LANGGRAPH_STATUS.values()) <= {
        "pending",
        "running",
        "error",
        "success",
        "timeout",
        "interrupted",
    }
    # The SDK reconnects a dropped stream only while the run is pending or running.
    assert {k for k, v in LANGGRAPH_STATUS.items() if v in ("pending", "running")} == {
        "active",
        "awaiting_input",
    }


@pytest.mark.parametrize(
    "data",
    [{"text": "a\nb", "n": 1, "f": 0.1}, "héllo ✓ \u2028", None, [1, [2, {"k": True}]], 2**70, 1e16],
)
@pytest.mark.parametrize("envelope", [False, True])
def test_a_stored_event_frame_is_the_event_frame_of_its_decoded_data(data: object, envelope: bool) -> None:
    # The stored text is what publish wrote (encode_data): sent as it is, the frame is the same.
    stored = stored_event_frame("17-3", "to\nken", encode_data(data), envelope=envelope)
    assert stored == event_frame(StreamEvent(id="17-3", event="to\nken", data=data), envelope=envelope)  # type: ignore[arg-type]


def test_line_breaks_between_the_tokens_of_stored_json_cannot_break_the_frame() -> None:
    frame = stored_event_frame("1-1", "t", '{\n  "a": "x\\ny",\r\n  "b": [1,\r2]\n}')
    data_line = frame.split("\n")[2]
    assert frame.count("\n") == 4 and data_line.startswith("data: ")
    assert json.loads(data_line[len("data: ") :]) == {"a": "x\ny", "b": [1, 2]}


def test_a_history_changed_frame_is_named_has_no_id_and_says_why_in_one_line() -> None:
    frame = history_changed_frame("run 'r' no longer stores\nevent 5-1")
    assert frame.startswith("event: history_changed\ndata: ") and frame.endswith("\n\n")
    assert "id:" not in frame and frame.count("\n") == 3
    data = json.loads(frame.split("data: ", 1)[1])
    assert data == {"error": "history_changed", "message": "run 'r' no longer stores\nevent 5-1"}
