"""No credential in a log line: ``?token=pgb1.k1...`` is logged as ``?token=***``.

uvicorn's access log prints each request's path with its query string, and a
browser's ``EventSource`` (the viewer) can only send a token there: a read
token as ``?token=``, the global token as ``?access_token=`` (discouraged).
:class:`RedactCredentials` is a logging filter for handlers: it rewrites every
record that reaches the handler (message, arguments, traceback) with
:func:`redact`, which masks credential query parameters and ``key=value``
pairs, a read token wherever it appears (under any name, or none),
``Bearer``/``Basic`` credentials (an ``Authorization`` header) and
the password of a URL (``postgresql://app:***@db/app``, as psql shows it).
``pgbridge serve`` puts it on every handler it logs through
(:func:`log_config`).
"""

from __future__ import annotations

import copy
import logging
import re
from collections.abc import Mapping
from typing import Any

from pgbridge.http.shutdown import INCOMPLETE_RESPONSE_MESSAGE, OPEN_READS
from pgbridge.tokens import TOKEN_PATTERN

MASK = "***"

_SECRET_PARAMETER = re.compile(
    r"(?i)(?<![\w-])((?:access|refresh|id)_token|token|api[_-]?key|password|passwd|secret|client_secret)"
    r"(=)([^&;#\s\"'<>]+)"
)
_SCHEME_CREDENTIALS = re.compile(r"(?i)\b(bearer|basic)(\s+)([A-Za-z0-9._~+/=-]+)")
_URL_PASSWORD = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/?#@\s]*:)([^@/?#\s]+)@")


def redact(text: str) -> str:
    """*text* with every credential it carries replaced by ``***``."""
    text = TOKEN_PATTERN.sub(MASK, text)
    text = _SECRET_PARAMETER.sub(rf"\1\2{MASK}", text)
    text = _SCHEME_CREDENTIALS.sub(rf"\1\2{MASK}", text)
    return _URL_PASSWORD.sub(rf"\1{MASK}@", text)


class RedactCredentials(logging.Filter):
    """A handler filter: the record's message, arguments and traceback, redacted."""

    _formatter = logging.Formatter()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.args:
            # The message is a format string; the request's path is an argument
            # (uvicorn's access formatter needs the arguments as they are: only
            # text is rewritten, numbers stay numbers).
            if isinstance(record.args, Mapping):
                record.args = {key: _redacted(value) for key, value in record.args.items()}
            else:
                record.args = tuple(_redacted(value) for value in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if record.exc_info and not record.exc_text:
            record.exc_text = self._formatter.formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


def _redacted(value: object) -> object:
    if isinstance(value, int | float) or value is None:
        return value
    text = value if isinstance(value, str) else str(value)
    clean = redact(text)
    return value if clean == text else clean


class QuietCutStreams(logging.Filter):
    """A handler filter: drops uvicorn's "returned without completing response" error while
    the server shuts down, when streams marked to be cut (pgbridge.http.shutdown) are cut
    on purpose. At any other time the line is a real error and is kept."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (OPEN_READS.shutting_down and record.getMessage() == INCOMPLETE_RESPONSE_MESSAGE)


def log_config(*, root_level: str | None = "WARNING") -> dict[str, Any]:
    """uvicorn's logging configuration with :class:`RedactCredentials` (and
    :class:`QuietCutStreams`) on every handler.

    With *root_level*, the root logger (pgbridge's own records) logs through
    uvicorn's default handler too, so nothing reaches a handler without the filter.
    """
    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    filters = config.setdefault("filters", {})
    filters["redact_credentials"] = {"()": f"{__name__}.RedactCredentials"}
    filters["quiet_cut_streams"] = {"()": f"{__name__}.QuietCutStreams"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).extend(["redact_credentials", "quiet_cut_streams"])
    if root_level is not None:
        config["root"] = {"handlers": ["default"], "level": root_level}
    return config
