"""docs/security.md: its FastAPI example, run as written, issues a token that reads its run
through ``create_app`` (and refuses another user's run); its table is the code's table."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from pgbridge import PostgresStreamBridge
from pgbridge.ai_sdk.routes import DEFAULT_PATH as CHAT_STREAM_PATH
from pgbridge.http.access import READ_TOKEN_ACCESS
from pgbridge.http.app import create_app

DOC = Path(__file__).resolve().parents[2] / "docs" / "security.md"
KEYS = "k1:" + "1" * 40


def python_block() -> str:
    (block,) = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.DOTALL)
    return block


async def test_the_fastapi_example_issues_a_token_that_reads_only_the_users_run(
    dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", dsn)
    monkeypatch.setenv("PGBRIDGE_TOKEN_SECRETS", KEYS)
    monkeypatch.setenv("PGBRIDGE_URL", "http://pgbridge")
    example: dict[str, object] = {"__name__": "security_example"}
    exec(compile(python_block(), str(DOC), "exec"), example)
    owners = {"alice/run 1": "alice", "bob/run 2": "bob"}

    async def owner_of(run_id: str) -> str | None:
        return owners.get(run_id)

    example["owner_of"] = owner_of
    app = example["app"]
    app.dependency_overrides[example["current_user"]] = lambda: "alice"  # type: ignore[attr-defined]

    async with PostgresStreamBridge(dsn, token_secrets=KEYS) as server_bridge:
        for run_id in owners:
            await server_bridge.publish(run_id, "token", {"run": run_id})
            await server_bridge.publish_end(run_id)
        served = create_app(server_bridge, token="global-s3cret", manage_bridge=False)
        async with (
            httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://app") as app_http,  # type: ignore[arg-type]
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=served), base_url="http://pgbridge"
            ) as pgbridge,
        ):
            mine = await app_http.get(f"/api/runs/{quote('alice/run 1', safe='')}/read-token")
            theirs = await app_http.get(f"/api/runs/{quote('bob/run 2', safe='')}/read-token")
            assert mine.status_code == 200 and theirs.status_code == 404
            answer = mine.json()
            stream = await pgbridge.get(answer["stream"])
            viewer = await pgbridge.get(answer["viewer"])
            other = await pgbridge.get(f"/runs/bob%2Frun%202/stream?token={answer['token']}")
    assert stream.status_code == 200 and '"run":"alice/run 1"' in stream.text and "event: end" in stream.text
    assert viewer.status_code == 200
    assert other.status_code == 401


def documented_table() -> set[tuple[str, str, bool]]:
    """(route, method, whether a read token for the run reads it) from the page's table."""
    rows = set()
    for line in DOC.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[0].startswith("`/"):
            continue
        route = cells[0].split("`")[1]
        for method in cells[1].split(", "):
            rows.add((route, method, cells[3] == "✓"))
    return rows


def code_table() -> set[tuple[str, str, bool]]:
    rows = set()
    for template, methods in READ_TOKEN_ACCESS.items():
        route = re.sub(r":\w+}", "}", template).replace("{path}", "{run_id}")
        rows |= {(route, method, run is not None) for method, run in methods.items()}
    # The route whose endpoint names the run it reads (run_read_by): AI SDK resume, default path.
    rows |= {(CHAT_STREAM_PATH, method, True) for method in ("GET", "HEAD")}
    return rows


def test_the_documented_table_is_the_code_s_table() -> None:
    assert documented_table() == code_table()
