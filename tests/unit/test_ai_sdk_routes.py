"""The resume route's seam for per-run read tokens: which run a request reads, from its path alone."""

from __future__ import annotations

from typing import Any

import pytest

from pgbridge.ai_sdk.routes import ChatResume
from pgbridge.exceptions import ConfigurationError


def no_bridge() -> Any:
    raise AssertionError("deciding which run a request reads needs no bridge")


def scope(path: str, method: str = "GET") -> dict[str, Any]:
    """An ASGI HTTP scope as a middleware sees it, before routing (*path* percent-decoded)."""
    return {"type": "http", "method": method, "path": path, "root_path": "", "path_params": {}}


@pytest.mark.parametrize(
    ("path", "run"),
    [
        ("/chat/Xy3kP0q9aBcD1eFg/stream", "chat:Xy3kP0q9aBcD1eFg"),
        ("/chat/team/42/stream", "chat:team%2F42"),  # the client sent team%2F42
        ("/chat/a:b/stream", "chat:a%3Ab"),
    ],
)
def test_a_resume_request_reads_the_chats_run(path: str, run: str) -> None:
    assert ChatResume(no_bridge).run_read_by(scope(path)) == run


@pytest.mark.parametrize(
    "request_scope",
    [
        scope("/chat/abc/stream", method="POST"),
        scope("/chat/abc/stream", method="DELETE"),
        scope("/runs/chat:abc/stream"),
        scope("/chat/abc"),
        {"type": "websocket", "path": "/chat/abc/stream", "root_path": ""},
    ],
)
def test_any_other_request_reads_no_chat(request_scope: dict[str, Any]) -> None:
    assert ChatResume(no_bridge).run_read_by(request_scope) is None


def test_a_chat_id_that_can_name_no_run_reads_no_run() -> None:
    assert ChatResume(no_bridge).run_read_by(scope("/chat/a\x00b/stream")) is None


def test_a_route_mounted_elsewhere_maps_its_own_path() -> None:
    resume = ChatResume(no_bridge, path="/api/chat/{chat_id}/stream")
    assert resume.run_read_by(scope("/api/chat/abc/stream")) == "chat:abc"
    assert resume.run_read_by(scope("/chat/abc/stream")) is None


@pytest.mark.parametrize(
    "path", ["chat/{chat_id}/stream", "/chat/stream", "/chat/{chat_id}/{chat_id}", "/{team}/{chat_id}/stream"]
)
def test_a_path_without_exactly_the_chat_id_is_refused(path: str) -> None:
    with pytest.raises(ConfigurationError, match="chat stream path"):
        ChatResume(no_bridge, path=path)
