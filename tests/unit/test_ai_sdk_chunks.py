"""AI SDK UI message chunks, the runs of a chat, and the UI message stream's SSE text (pure)."""

from __future__ import annotations

import json

import pytest

from pgbridge.ai_sdk.chunks import INTERRUPTED_TEXT, check_chunk, ending_chunk, ending_of, is_chunk_type
from pgbridge.ai_sdk.runs import MAX_ENCODED_CHAT_ID, MessagePointer, chat_run_id, new_response_run_id
from pgbridge.ai_sdk.sse import DONE_FRAME, SSEDataParser, data_frame
from pgbridge.contract import StreamStatus
from pgbridge.exceptions import InvalidEventError
from pgbridge.ids import validate_run_id


def test_a_chunk_is_returned_as_a_copy_with_exactly_its_own_keys() -> None:
    chunk = {"type": "text-delta", "id": "t1", "delta": "Hi", "providerMetadata": {"x": {"y": 1}}}
    checked = check_chunk(chunk)
    assert checked == chunk and checked is not chunk


@pytest.mark.parametrize("kind", ["data-weather", "data-x"])
def test_app_data_chunks_are_chunks(kind: str) -> None:
    assert check_chunk({"type": kind, "data": {"celsius": 21}})["type"] == kind


@pytest.mark.parametrize(
    ("chunk", "message"),
    [
        ("text", "must be a dict"),
        ({"delta": "x"}, "unknown UI message chunk type None"),
        ({"type": "text"}, "unknown UI message chunk type 'text'"),
        ({"type": "data-"}, "unknown UI message chunk type 'data-'"),
        ({"type": "text-delta", "id": "t1"}, "'text-delta' chunk needs 'delta'"),
        ({"type": "text-delta", "id": 1, "delta": "x"}, "'id' must be a str, not int"),
        ({"type": "error"}, "needs 'errorText'"),
        ({"type": "tool-input-available", "toolCallId": "c"}, "needs 'toolName'"),
    ],
)
def test_what_is_no_chunk_is_refused_naming_why(chunk: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        check_chunk(chunk)


@pytest.mark.parametrize(
    ("kind", "status"),
    [("finish", StreamStatus.ENDED), ("error", StreamStatus.ERRORED), ("abort", StreamStatus.CANCELLED)],
)
def test_finish_error_and_abort_end_a_message_with_their_status(kind: str, status: StreamStatus) -> None:
    assert ending_of({"type": kind}) is status


@pytest.mark.parametrize("kind", ["start", "finish-step", "text-end", "data-finish"])
def test_other_chunks_do_not_end_a_message(kind: str) -> None:
    assert ending_of({"type": kind}) is None


def test_an_ending_chunk_stored_as_terminal_data_is_sent_as_it_is() -> None:
    chunk = {"type": "finish", "finishReason": "stop"}
    assert ending_chunk("end", chunk) is chunk


@pytest.mark.parametrize(
    ("event", "data", "chunk"),
    [
        ("cancel", None, {"type": "abort"}),
        ("end", None, {"type": "finish"}),
        ("dead_letter", {"reason": "no publish"}, {"type": "error", "errorText": INTERRUPTED_TEXT}),
        ("error", {"type": "text-delta"}, {"type": "error", "errorText": INTERRUPTED_TEXT}),
    ],
)
def test_a_run_ended_without_an_ending_chunk_ends_on_the_chunk_its_status_means(
    event: str, data: object, chunk: dict[str, str]
) -> None:
    assert ending_chunk(event, data) == chunk  # type: ignore[arg-type]


def test_chunk_type_names_are_the_known_types_and_data_parts() -> None:
    assert is_chunk_type("tool-output-available") and is_chunk_type("data-x")
    assert not is_chunk_type("end") and not is_chunk_type("dead_letter") and not is_chunk_type("data-")


# -- the runs of a chat ------------------------------------------------------------


def test_a_usechat_id_names_its_chat_run_unchanged() -> None:
    assert chat_run_id("Xy3kP0q9aBcD1eFg") == "chat:Xy3kP0q9aBcD1eFg"


def test_separators_in_a_chat_id_are_encoded_so_no_chat_run_is_another_chats_response_run() -> None:
    assert chat_run_id("a:b/c d") == "chat:a%3Ab%2Fc%20d"
    response = new_response_run_id("a")
    assert response.startswith("chat:a:") and response != chat_run_id(response.removeprefix("chat:"))


def test_each_response_gets_a_run_of_its_own() -> None:
    assert new_response_run_id("c") != new_response_run_id("c")


def test_the_longest_chat_id_still_makes_response_run_ids_that_fit() -> None:
    longest = "x" * MAX_ENCODED_CHAT_ID
    assert validate_run_id(new_response_run_id(longest))
    with pytest.raises(InvalidEventError, match="at most"):
        chat_run_id(longest + "x")


@pytest.mark.parametrize(
    ("chat_id", "message"), [("", "must not be empty"), ("a\x00", "NUL"), (3, "must be a str")]
)
def test_a_chat_id_that_names_no_run_is_refused(chat_id: object, message: str) -> None:
    with pytest.raises(InvalidEventError, match=message):
        chat_run_id(chat_id)  # type: ignore[arg-type]


def test_a_pointer_reads_back_from_its_event_data_and_nothing_else_is_one() -> None:
    pointer = MessagePointer("chat:a:0123", "msg-1")
    assert MessagePointer.from_json(pointer.to_json()) == pointer
    for data in (
        None,
        [],
        {"run_id": "x"},
        {"run_id": "", "message_id": "m"},
        {"run_id": 1, "message_id": "m"},
    ):
        assert MessagePointer.from_json(data) is None  # type: ignore[arg-type]


# -- the stream's text -----------------------------------------------------------------


def test_a_chunk_frame_is_one_data_line_and_the_stream_ends_with_done() -> None:
    text = json.dumps({"type": "text-delta", "id": "t", "delta": "a\nb"}, separators=(",", ":"))
    assert data_frame(text) == 'data: {"type":"text-delta","id":"t","delta":"a\\nb"}\n\n'
    assert DONE_FRAME == "data: [DONE]\n\n"


def parse(*pieces: bytes) -> list[str]:
    parser = SSEDataParser()
    return [data for piece in pieces for data in parser.feed(piece)]


def test_the_parser_gives_each_events_data_and_skips_comments_and_other_fields() -> None:
    text = b': stream-open\n\ndata: {"type":"start"}\n\nid: 1\nevent: x\ndata: [DONE]\n\n'
    assert parse(text) == ['{"type":"start"}', "[DONE]"]


def test_the_parser_joins_pieces_split_anywhere_even_inside_a_utf8_character() -> None:
    text = 'data: {"delta":"ü"}\n\ndata: two\n\n'.encode()
    expected = ['{"delta":"ü"}', "two"]
    for cut in range(1, len(text)):
        assert parse(text[:cut], text[cut:]) == expected, cut


@pytest.mark.parametrize("newline", [b"\r\n", b"\r", b"\n"])
def test_the_parser_takes_every_line_ending_sse_allows(newline: bytes) -> None:
    text = b"data: a" + newline + b"data:b" + newline + newline + b"data: c" + newline + newline
    assert parse(text) == ["a\nb", "c"]


def test_a_crlf_split_between_two_pieces_is_one_line_end() -> None:
    assert parse(b"data: a\r", b"\ndata: b\r", b"\n\r\n") == ["a\nb"]


def test_an_event_not_yet_ended_by_a_blank_line_is_not_given() -> None:
    assert parse(b"data: a\n") == []
