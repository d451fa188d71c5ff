"""Which runs hold a chat (pure): the chat's run, one run per response, and the pointer.

A chat ``abc`` lives in two kinds of run, with no table of its own:

* **the chat's run** ``chat:abc``: one ``message`` event per assistant
  response, in the order they started, each naming the response's run and
  message id. Its last event is the pointer to the chat's current response.
  It is created as a JSON Durable Stream (``content_type`` set), because
  retention's reaper dead-letters only runs born from ``publish``
  (docs/behaviour.md §7, ``dead_letter_stale_runs``): a chat that is quiet
  for an hour must still take a new response. ``max_events_per_run`` trims its
  older pointers like any run's events; only the last one is ever read.
* **a response's run** ``chat:abc:<16 hex>``: the response's UI message
  chunks, one event each, named by chunk type; the ending chunk (``finish``,
  ``error``, ``abort``) is its terminal event. A run per response, not per
  message id: a response that continues a message (after a client-side tool
  call) reuses the message's id.

The chat run id is also what a per-run read token names to let a browser
resume that chat (:func:`chat_run_id`): the resume route reads the chat's
run and then the response run it points to, and nothing else.

Chat ids are percent-encoded into run ids (letters, digits and ``-._~`` stay
as they are, so a ``useChat`` id such as ``Xy3kP0q9aBcD1eFg`` is unchanged),
so no chat's run id is another chat's response run id.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from pgbridge.contract import JSONValue
from pgbridge.exceptions import InvalidEventError
from pgbridge.ids import MAX_RUN_ID_LENGTH, validate_run_id
from pgbridge.payload import check_text

CHAT_RUN_PREFIX: Final = "chat:"
#: The chat run's event that points at a response.
POINTER_EVENT: Final = "message"
#: Hex digits of a response run's own part.
RESPONSE_KEY_LENGTH: Final = 16
#: Longest encoded chat id: a response run id (chat run id, ":", key) must fit a run id.
MAX_ENCODED_CHAT_ID: Final = MAX_RUN_ID_LENGTH - len(CHAT_RUN_PREFIX) - 1 - RESPONSE_KEY_LENGTH


def chat_run_id(chat_id: str) -> str:
    """The chat's run: where its pointer lives, and what a read token for the chat names."""
    if not isinstance(chat_id, str):
        raise InvalidEventError(f"chat_id must be a str, not {type(chat_id).__name__}")
    if not chat_id:
        raise InvalidEventError("chat_id must not be empty")
    check_text("chat_id", chat_id)
    encoded = quote(chat_id, safe="")
    if len(encoded) > MAX_ENCODED_CHAT_ID:
        raise InvalidEventError(
            f"chat_id is {len(encoded)} characters long percent-encoded; "
            f"at most {MAX_ENCODED_CHAT_ID} fit a run id"
        )
    return validate_run_id(CHAT_RUN_PREFIX + encoded)


def new_response_run_id(chat_id: str) -> str:
    """A new run for one response of the chat: ``chat:<chat id>:<16 random hex digits>``."""
    return f"{chat_run_id(chat_id)}:{uuid.uuid4().hex[:RESPONSE_KEY_LENGTH]}"


@dataclass(frozen=True, slots=True)
class MessagePointer:
    """The chat's current response: its run, and the message id its ``start`` chunk carries."""

    run_id: str
    message_id: str

    def to_json(self) -> dict[str, JSONValue]:
        """The pointer event's data."""
        return {"run_id": self.run_id, "message_id": self.message_id}

    @classmethod
    def from_json(cls, data: JSONValue) -> MessagePointer | None:
        """The pointer a ``message`` event holds; None for data that is not one."""
        if not isinstance(data, dict):
            return None
        run_id, message_id = data.get("run_id"), data.get("message_id")
        if not isinstance(run_id, str) or not isinstance(message_id, str) or not run_id:
            return None
        return cls(run_id, message_id)
