"""The AI SDK's UI message stream on the wire (pure): its headers, its frames, and a parser.

The format, from the ``ai`` package's ``json-to-sse-transform-stream.ts`` and
``ui-message-stream-headers.ts``: one ``data: <chunk JSON>\\n\\n`` frame per
chunk, then ``data: [DONE]\\n\\n``, then the body closes. Comments (``: ...``)
are allowed: the client's SSE parser skips them. No ``id:`` or ``event:``
lines: the client resumes by chat, not by event ID, and reads only ``data``.

:class:`SSEDataParser` reads such a stream back (the tee adapter stores what an
app's own server sends), following the SSE rules of
https://html.spec.whatwg.org/multipage/server-sent-events.html: lines end in
CRLF, LF or CR, ``data`` lines of one event join with LF, a blank line
dispatches, anything after ``:`` on a line is a comment.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterator
from typing import Final

#: The response headers of a UI message stream (``x-vercel-ai-ui-message-stream: v1``
#: tells the client it is one). ``connection`` is left to the server: it is hop-by-hop.
UI_MESSAGE_STREAM_HEADERS: Final = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    "x-vercel-ai-ui-message-stream": "v1",
    "x-accel-buffering": "no",
}

#: What ends the stream; no chunk (the client's parser skips it), but every stream ends on it.
DONE: Final = "[DONE]"
DONE_FRAME: Final = f"data: {DONE}\n\n"
#: Sent while a reader waits for the next chunk, so proxies keep the connection.
KEEPALIVE_FRAME: Final = ": keep-alive\n\n"


def data_frame(json_text: str) -> str:
    """One chunk's frame. *json_text* is one line (``json`` escapes line breaks in strings;
    stored chunk text is compact JSON with none between tokens)."""
    return f"data: {json_text}\n\n"


class SSEDataParser:
    """Incremental: feed bytes as they arrive, get each event's data as it completes."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""
        self._data: list[str] = []
        self._skip_lf = False  # the last text ended in CR: an LF first in the next is its pair

    def feed(self, chunk: bytes) -> Iterator[str]:
        """The data of every event *chunk* completes, in order."""
        text = self._decoder.decode(chunk)
        if self._skip_lf and text.startswith("\n"):
            text = text[1:]
        self._skip_lf = False
        yield from self._lines(self._pending + text)

    def _lines(self, text: str) -> Iterator[str]:
        start = 0
        length = len(text)
        while True:
            cr, lf = text.find("\r", start), text.find("\n", start)
            ends = [i for i in (cr, lf) if i != -1]
            if not ends:
                self._pending = text[start:]
                return
            end = min(ends)
            line = text[start:end]
            if text[end] == "\r":
                if end + 1 < length:
                    start = end + 2 if text[end + 1] == "\n" else end + 1
                else:
                    start, self._skip_lf = end + 1, True
            else:
                start = end + 1
            data = self._line(line)
            if data is not None:
                yield data

    def _line(self, line: str) -> str | None:
        """Take one line; the event's data when it is the blank line that dispatches it."""
        if not line:
            if not self._data:
                return None
            data, self._data = "\n".join(self._data), []
            return data
        if line.startswith(":"):
            return None
        field, _, value = line.partition(":")
        if field == "data":
            self._data.append(value[1:] if value.startswith(" ") else value)
        return None
