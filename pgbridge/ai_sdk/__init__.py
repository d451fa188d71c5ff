"""The server side of the AI SDK's resumable chats (``useChat({ resume: true })``), on PostgreSQL.

* :class:`UIMessageWriter`: write an assistant response, chunk by chunk, into a
  run of its own, and point the chat at it (:mod:`pgbridge.ai_sdk.writer`);
* :func:`tee_response` / :func:`tee_ui_message_stream`: store a UI message
  stream your server already sends (:mod:`pgbridge.ai_sdk.tee`);
* :class:`pgbridge.ai_sdk.routes.ChatResume`: ``GET /chat/{chat_id}/stream``,
  also part of ``pgbridge serve`` (imported from its module: it needs Starlette,
  which a worker that only writes does not);
* :func:`chat_run_id`: the run a read token for a chat names (:mod:`pgbridge.ai_sdk.runs`).

The guide: docs/ai-sdk.md.
"""

from pgbridge.ai_sdk.chunks import check_chunk
from pgbridge.ai_sdk.pointer import current_response
from pgbridge.ai_sdk.runs import MessagePointer, chat_run_id
from pgbridge.ai_sdk.sse import UI_MESSAGE_STREAM_HEADERS
from pgbridge.ai_sdk.tee import UIMessageTee, tee_response, tee_ui_message_stream
from pgbridge.ai_sdk.writer import UIMessageWriter

__all__ = [
    "UI_MESSAGE_STREAM_HEADERS",
    "MessagePointer",
    "UIMessageTee",
    "UIMessageWriter",
    "chat_run_id",
    "check_chunk",
    "current_response",
    "tee_response",
    "tee_ui_message_stream",
]
