"""``pgbridge token`` and ``pgbridge serve --token-secret-file`` as an operator runs them:
a token from the command reads its run on the server, keys rotate across restarts, and bad
input is one line with exit status 2 that never shows a secret."""

from __future__ import annotations

import asyncio
import signal
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

from pgbridge import PostgresStreamBridge, TokenKeyring
from pgbridge.tokens import check_read_token
from tests.support.cli import cli, cli_env, start_cli
from tests.support.http_server import ServerProcess, free_port, write_keys

K1 = "k1:" + "1" * 40
K2 = "k2:" + "2" * 40


def env(**extra: str) -> dict[str, str]:
    clean = {
        k: v
        for k, v in cli_env().items()
        if k not in ("PGBRIDGE_TOKEN", "PGBRIDGE_TOKEN_SECRET_FILE", "PGBRIDGE_TOKEN_SECRETS")
    }
    return {**clean, **extra}


async def token_from_cli(*args: str, environ: dict[str, str] | None = None) -> str:
    code, out, err = await cli("token", *args, env=environ or env())
    assert code == 0 and err == "", err
    (line,) = out.splitlines()
    return line


# -- pgbridge token ------------------------------------------------------------------------


async def test_token_prints_one_token_that_reads_the_run_for_the_ttl(tmp_path: Path) -> None:
    keys = write_keys(tmp_path, f"{K2}\n{K1}")
    before = int(time.time())
    token = await token_from_cli("agent/run 42", "--ttl", "10m", "--token-secret-file", str(keys))
    after = int(time.time())
    assert token.startswith("pgb1.k2.")  # the first key signs
    expires_at = check_read_token(TokenKeyring.from_file(keys), token, "agent/run 42")
    assert expires_at is not None and before + 600 <= expires_at <= after + 600
    assert check_read_token(TokenKeyring.from_file(keys), token, "agent/run 43") is None


async def test_token_takes_its_keys_from_the_environment(tmp_path: Path) -> None:
    keys = write_keys(tmp_path, K1)
    from_file_env = await token_from_cli("r", environ=env(PGBRIDGE_TOKEN_SECRET_FILE=str(keys)))
    from_text_env = await token_from_cli("r", environ=env(PGBRIDGE_TOKEN_SECRETS=K1))
    ring = TokenKeyring.parse(K1)
    assert check_read_token(ring, from_file_env, "r") is not None
    assert check_read_token(ring, from_text_env, "r") is not None


async def test_token_url_prints_the_viewer_of_the_run_with_the_token(tmp_path: Path) -> None:
    keys = write_keys(tmp_path, K1)
    url = await token_from_cli(
        "agent/run 42", "--url", "http://127.0.0.1:8000/", "--token-secret-file", str(keys)
    )
    prefix = "http://127.0.0.1:8000/runs/agent%2Frun%2042/view?token="
    assert url.startswith(prefix)
    assert check_read_token(TokenKeyring.parse(K1), url.removeprefix(prefix), "agent/run 42") is not None


@pytest.mark.parametrize(
    ("args", "extra_env", "message"),
    [
        (("r",), {}, "no read-token keys: give --token-secret-file"),
        (("r", "--token-secret-file", "{keys}"), {"PGBRIDGE_TOKEN_SECRETS": K2}, "given twice"),
        (("r", "--token-secret-file", "{missing}"), {}, "cannot read the token secret file"),
        (("r", "--token-secret-file", "{short}"), {}, "line 1: key 'k1': the secret must be at least 32"),
        (("r", "--ttl", "0", "--token-secret-file", "{keys}"), {}, "--ttl: must be more than 0s"),
        (
            ("r", "--ttl", "8d", "--token-secret-file", "{keys}"),
            {},
            "at most 604800 seconds (7 days), not 691200",
        ),
        (("", "--token-secret-file", "{keys}"), {}, "run_id must not be empty"),
    ],
)
async def test_token_refuses_bad_input_in_one_line_without_showing_a_secret(
    tmp_path: Path, args: tuple[str, ...], extra_env: dict[str, str], message: str
) -> None:
    keys = write_keys(tmp_path, K1)
    short = tmp_path / "short"
    short.write_text("k1:too-short-a-secret\n")
    paths = {"keys": str(keys), "missing": str(tmp_path / "missing"), "short": str(short)}
    code, out, err = await cli("token", *(a.format(**paths) for a in args), env=env(**extra_env))
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and message in err, err
    for secret in ("1" * 40, "2" * 40, "too-short-a-secret"):
        assert secret not in err


# -- pgbridge serve --token-secret-file ----------------------------------------------------


async def reads(server: ServerProcess, run_id: str, token: str) -> int:
    async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
        return (await http.get(f"/runs/{quote(run_id, safe='')}", params={"token": token})).status_code


async def test_a_token_from_the_command_reads_its_run_on_the_server_and_nothing_else(
    dsn: str, tmp_path: Path
) -> None:
    keys = write_keys(tmp_path, K1)
    async with PostgresStreamBridge(dsn) as publisher:
        for run_id in ("mine", "theirs"):
            await publisher.publish(run_id, "token", 1)
    token = await token_from_cli("mine", "--ttl", "1m", "--token-secret-file", str(keys))
    server = ServerProcess(dsn, extra_args=("--token-secret-file", str(keys)))
    await server.start()
    try:
        async with httpx.AsyncClient(base_url=server.url, timeout=20) as http:
            stream = await http.get("/v1/stream/mine", params={"offset": "-1", "token": token})
            write = await http.post(
                "/v1/stream/mine",
                params={"token": token},
                headers={"Content-Type": "application/json"},
                content=b"[2]",
            )
        assert stream.status_code == 200 and [m["data"] for m in stream.json()] == [1]
        assert (await reads(server, "mine", token), await reads(server, "theirs", token)) == (200, 401)
        assert write.status_code == 403
    finally:
        await server.stop()


async def test_keys_rotate_across_restarts_without_breaking_tokens_in_flight(
    dsn: str, tmp_path: Path
) -> None:
    """docs/security.md, rotation: add the new key second, make it first, drop the old one
    once the longest ttl has passed. At each step the server restarts with the file, and every
    token issued so far is tried."""
    async with PostgresStreamBridge(dsn) as publisher:
        await publisher.publish("rotated", "token", 1)
    keys = tmp_path / "keys"
    server = ServerProcess(dsn, extra_args=("--token-secret-file", str(keys)))
    steps = [("k1", K1), ("k1, k2 added", f"{K1}\n{K2}"), ("k2 signs, k1", f"{K2}\n{K1}"), ("k2", K2)]
    tokens: list[str] = []
    statuses: dict[str, list[int]] = {}
    for step, text in steps:
        keys.write_text(text + "\n")
        tokens.append(await token_from_cli("rotated", "--token-secret-file", str(keys)))
        await server.start()
        try:
            statuses[step] = [await reads(server, "rotated", token) for token in tokens]
        finally:
            await server.stop()
    assert [token.split(".")[1] for token in tokens] == ["k1", "k1", "k2", "k2"]
    assert statuses == {
        "k1": [200],
        "k1, k2 added": [200, 200],
        "k2 signs, k1": [200, 200, 200],
        "k2": [401, 401, 200, 200],  # the retired key's tokens end with it
    }


async def test_serve_with_only_keys_may_listen_beyond_loopback_and_serves_only_read_tokens(
    dsn: str, tmp_path: Path
) -> None:
    """No global token: nothing is open, so no --insecure is needed; health and writes are refused."""
    keys = write_keys(tmp_path, K1)
    async with PostgresStreamBridge(dsn) as publisher:
        await publisher.publish("only-read", "token", 1)
    token = await token_from_cli("only-read", "--token-secret-file", str(keys))
    port = free_port()
    process = await start_cli(
        *("serve", "--host", "0.0.0.0", "--port", str(port), "--dsn", dsn, "--token-secret-file", str(keys)),
        env=env(),
    )
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=20) as http:
            status = await _first_answer(process, http, "/runs/only-read", {"token": token})
            health = await http.get("/health")
            put = await http.put("/v1/stream/new", params={"token": token})
    finally:
        process.send_signal(signal.SIGINT)
        _, err = await asyncio.wait_for(process.communicate(), 30)
    assert (status, health.status_code, put.status_code) == (200, 401, 403)
    assert "refusing" not in err.decode() and "read tokens: key 'k1' signs" in err.decode()
    assert "1" * 40 not in err.decode()


async def _first_answer(
    process: asyncio.subprocess.Process, http: httpx.AsyncClient, path: str, params: dict[str, str]
) -> int:
    """The status of *path* once the server answers at all."""
    for _ in range(600):
        assert process.returncode is None, "the server exited"
        try:
            return (await http.get(path, params=params)).status_code
        except httpx.TransportError:
            await asyncio.sleep(0.1)
    raise AssertionError("pgbridge serve did not answer in time")
