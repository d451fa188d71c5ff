"""No credential in a log line (pgbridge.http.logs): the redaction, and the filter on records
as uvicorn's access log and an exception's traceback make them."""

from __future__ import annotations

import logging

import pytest

from pgbridge.http.logs import RedactCredentials, log_config, redact
from pgbridge.tokens import TokenKeyring, issue_read_token

READ_TOKEN = issue_read_token(TokenKeyring.parse("k1:" + "s" * 40), "agent/run-42", 600, now=1_764_000_000)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("GET /runs/r/view?access_token=s3cret HTTP/1.1", "GET /runs/r/view?access_token=*** HTTP/1.1"),
        ("/runs?limit=1&access_token=s3cret&x=1", "/runs?limit=1&access_token=***&x=1"),
        ("/health?token=abc;api_key=def", "/health?token=***;api_key=***"),
        ("Authorization: Bearer s3cret.tok-en", "Authorization: Bearer ***"),
        ("(b'authorization', b'Basic dXNlcjpwYXNz')", "(b'authorization', b'Basic ***')"),
        (
            "cannot connect to postgresql://app:hunter2@db:5432/app",
            "cannot connect to postgresql://app:***@db:5432/app",
        ),
        ("host=db password=hunter2 dbname=app", "host=db password=*** dbname=app"),
        # Read tokens: as ?token=, under any other name, in a header, or alone.
        (
            f"GET /runs/r/stream?token={READ_TOKEN}&envelope=1 HTTP/1.1",
            "GET /runs/r/stream?token=***&envelope=1 HTTP/1.1",
        ),
        (f"/v1/stream/r?offset=-1&t={READ_TOKEN}", "/v1/stream/r?offset=-1&t=***"),
        (f"Authorization: Bearer {READ_TOKEN}", "Authorization: Bearer ***"),
        (f"refused {READ_TOKEN}.", "refused ***."),
        # Not credentials: left alone.
        ("/runs?limit=10&my_token_count=3", "/runs?limit=10&my_token_count=3"),
        ("postgresql://app@db/app", "postgresql://app@db/app"),
    ],
)
def test_redact_masks_credentials_and_nothing_else(text: str, expected: str) -> None:
    assert redact(text) == expected


def _record(msg: str, args: tuple[object, ...] | None, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, exc.__traceback__) if exc else None
    return logging.LogRecord("uvicorn.access", logging.INFO, __file__, 1, msg, args, exc_info)


def test_the_filter_redacts_an_access_log_record_keeping_its_arguments_types() -> None:
    record = _record('%s - "%s %s HTTP/%s" %d', ("127.0.0.1:5", "GET", "/x?access_token=s3cret", "1.1", 200))
    assert RedactCredentials().filter(record)
    assert record.args == ("127.0.0.1:5", "GET", "/x?access_token=***", "1.1", 200)
    assert record.getMessage() == '127.0.0.1:5 - "GET /x?access_token=*** HTTP/1.1" 200'


def test_the_filter_redacts_a_message_and_a_traceback() -> None:
    try:
        raise RuntimeError("cannot connect to postgresql://app:hunter2@db/app")
    except RuntimeError as exc:
        record = _record("failed with Bearer s3cret", None, exc)
    RedactCredentials().filter(record)
    line = logging.Formatter().format(record)
    assert "hunter2" not in line and "s3cret" not in line
    assert "postgresql://app:***@db/app" in line and "Bearer ***" in line


def test_every_handler_of_the_serve_log_config_redacts() -> None:
    config = log_config()
    assert all("redact_credentials" in handler["filters"] for handler in config["handlers"].values())
    assert config["root"]["handlers"] == ["default"]
