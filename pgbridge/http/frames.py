"""Server-Sent Events framing: a bridge's stream items as ``text/event-stream`` text.

Pure functions, so every frame is tested without a server. The rules of the
format (https://html.spec.whatwg.org/multipage/server-sent-events.html): a
frame is ``field: value`` lines ended by a blank line; a line starting with
``:`` is a comment (a heartbeat); ``id:`` sets what the client sends back as
``Last-Event-ID`` when it reconnects; ``retry:`` sets its reconnection delay.
No field value may hold a line break, so data is one line of JSON (``json``
escapes line breaks inside strings) and line breaks in an event name (which
publish allows) become spaces.
"""

from __future__ import annotations

import json
import re

from pgbridge.contract import StreamEvent

#: The SSE event name of the gap marker (the bridge's ``__gap__``).
GAP_FRAME_EVENT = "gap"
#: The SSE event name of the frame that ends a stream whose run's history changed under it.
HISTORY_CHANGED_FRAME_EVENT = "history_changed"

_LINE_BREAKS = re.compile(r"\r\n|\r|\n")


def _one_line(text: str) -> str:
    return _LINE_BREAKS.sub(" ", text)


def _json(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def retry_line(milliseconds: int) -> str:
    """Tell the client how long to wait before reconnecting (to put before a frame)."""
    return f"retry: {milliseconds}\n"


def heartbeat_frame() -> str:
    """A comment line: keeps proxies and clients from timing the stream out."""
    return ": heartbeat\n\n"


def event_frame(event: StreamEvent, *, envelope: bool = False) -> str:
    """One stored event: its ID, its name and its data as JSON.

    With *envelope*, the frame has no ``event:`` line (so a browser's
    ``EventSource.onmessage`` gets every event whatever its name) and the
    data is ``{"event": name, "data": data}``.
    """
    if envelope:
        return f"id: {event.id}\ndata: {_json({'event': event.event, 'data': event.data})}\n\n"
    return f"id: {event.id}\nevent: {_one_line(event.event)}\ndata: {_json(event.data)}\n\n"


def stored_event_frame(event_id: str, name: str, data_text: str, *, envelope: bool = False) -> str:
    """:func:`event_frame` of an event whose data is its stored JSON text, sent as it is
    (publish stored it as ``json.dumps`` of the data with these same settings, so the
    frame is the same, without decoding and encoding it again on every delivery).

    Valid JSON holds a raw line break only as whitespace between tokens (inside a
    string it is escaped), so text that has one (a Durable Streams append stored as
    sent) gets spaces instead, which keep it the same JSON value.
    """
    if "\n" in data_text or "\r" in data_text:
        data_text = _one_line(data_text)
    if envelope:
        return f'id: {event_id}\ndata: {{"event":{_json(name)},"data":{data_text}}}\n\n'
    return f"id: {event_id}\nevent: {_one_line(name)}\ndata: {data_text}\n\n"


def gap_frame(marker: StreamEvent) -> str:
    """The gap marker: ``event: gap`` with the counts, and no ``id:`` (it is not an event)."""
    return f"event: {GAP_FRAME_EVENT}\ndata: {_json(marker.data)}\n\n"


def history_changed_frame(message: str) -> str:
    """The last frame of a stream whose run's history changed under it (an asynchronous failover
    lost events it sent, or the run was published anew): ``event: history_changed`` with the
    reason, and no ``id:``, so a client's cursor stays on the last event it got (which now
    resolves ``unknown``: docs/behaviour.md §3)."""
    data = _json({"error": "history_changed", "message": message})
    return f"event: {HISTORY_CHANGED_FRAME_EVENT}\ndata: {data}\n\n"
