"""``pgbridge serve`` (and ``--version``) as a user runs them: exposure without a token,
a fresh embedded data folder, a wrong DSN, and Ctrl-C with clients connected."""

from __future__ import annotations

import asyncio
import contextlib
import shlex
import signal
import time
from importlib.metadata import version
from pathlib import Path

import httpx
import pytest

from pgbridge import PostgresStreamBridge
from tests.support.cli import cli, cli_env, start_cli
from tests.support.http_server import ServerProcess, free_port
from tests.support.postgres_server import DatabaseFactory

#: What a clean shutdown never prints.
SHUTDOWN_NOISE = (
    "Traceback",
    "Exception in ASGI application",
    "timeout graceful shutdown exceeded",
    "Cancel ",
)


def serve_env() -> dict[str, str]:
    env = cli_env()
    env.pop("PGBRIDGE_TOKEN", None)
    return env


async def test_version_prints_one_line_from_the_package_metadata() -> None:
    code, out, err = await cli("--version")
    assert (code, out, err) == (0, f"pgbridge {version('pgbridge')}\n", "")


# -- exposure ----------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "example.internal"])
async def test_serve_refuses_a_non_loopback_host_without_a_token(host: str) -> None:
    started = time.monotonic()
    code, _out, err = await cli(
        "serve", "--host", host, "--dsn", "postgresql://postgres@127.0.0.1:1/x", env=serve_env()
    )
    assert code == 2
    assert time.monotonic() - started < 10  # refused before connecting to anything
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pgbridge: ") and "--token" in lines[0] and "--insecure" in lines[0]
    assert host in lines[0]


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1"])
async def test_serve_on_a_loopback_host_needs_no_token(host: str, dsn: str) -> None:
    port = free_port()
    process = await start_cli("serve", "--host", host, "--port", str(port), "--dsn", dsn, env=serve_env())
    try:
        url_host = f"[{host}]" if ":" in host else host
        await _wait_for_health(process, f"http://{url_host}:{port}")
    finally:
        await _interrupt(process)


async def test_serve_insecure_starts_open_on_any_host_and_says_so_loudly(dsn: str) -> None:
    port = free_port()
    process = await start_cli(
        "serve", "--host", "0.0.0.0", "--insecure", "--port", str(port), "--dsn", dsn, env=serve_env()
    )
    try:
        await _wait_for_health(process, f"http://127.0.0.1:{port}")
    finally:
        _, err = await _interrupt(process)
    (warning,) = [line for line in err.splitlines() if "WARNING" in line and "no token" in line]
    assert "0.0.0.0" in warning and "anyone" in warning


# -- starting up -------------------------------------------------------------------------


async def test_serve_with_an_unreachable_dsn_says_one_line_and_exits_non_zero() -> None:
    started = time.monotonic()
    code, _out, err = await cli(
        "serve", "--dsn", "postgresql://postgres@127.0.0.1:1/nothing?connect_timeout=1", env=serve_env()
    )
    assert code == 1
    assert time.monotonic() - started < 25  # the DSN's connect_timeout bounds the ride through blips
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("pgbridge: cannot connect to PostgreSQL")


async def test_serve_on_a_database_not_migrated_says_one_line_naming_the_command(
    databases: DatabaseFactory,
) -> None:
    dsn = await databases.create_empty()
    try:
        code, _out, err = await cli("serve", "--dsn", dsn, env=serve_env())
    finally:
        await databases.drop(dsn)
    assert code == 1
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert "has no pgbridge tables" in lines[0] and "pgbridge migrate --dsn" in lines[0]


@pytest.mark.own_server
async def test_serve_migrates_a_fresh_embedded_data_folder_on_its_first_start(tmp_path: Path) -> None:
    port = free_port()
    process = await start_cli(
        "serve", "--data-dir", str(tmp_path / "pg"), "--port", str(port), "--token", "", env=serve_env()
    )
    try:
        await _wait_for_health(process, f"http://127.0.0.1:{port}", timeout=120)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as http:
            assert (await http.get("/runs")).json() == {"runs": []}
    finally:
        code, err = await _interrupt(process)
    assert code == 0
    assert "Traceback" not in err
    assert "migrated" in err and str(tmp_path / "pg") in err


@pytest.mark.own_server
async def test_a_command_on_a_fresh_embedded_data_folder_names_migrate_with_data_dir(tmp_path: Path) -> None:
    folder = tmp_path / "pg"
    code, _out, err = await cli("runs", "--data-dir", str(folder), env=serve_env())
    assert code == 1
    assert f"pgbridge migrate --data-dir {shlex.quote(str(folder))}" in err
    assert "--dsn" not in err and "Traceback" not in err


# -- Ctrl-C ------------------------------------------------------------------------------


async def test_ctrl_c_with_open_streams_shuts_down_cleanly_and_promptly(dsn: str, tmp_path: Path) -> None:
    log = tmp_path / "serve.log"
    server = ServerProcess(dsn, log=log, extra_args=("--heartbeat", "30"))  # silence on the streams
    await server.start()
    async with PostgresStreamBridge(dsn) as publisher:
        await publisher.publish("live-sse", "token", 1)
        await publisher.publish("live-ds", "token", 1)
    ended: dict[str, int] = {}

    async def read(name: str, path: str, params: dict[str, str]) -> None:
        async with server.client() as http, http.stream("GET", path, params=params) as response:
            async for _ in response.aiter_bytes():
                pass
        ended[name] = response.status_code

    readers = [
        asyncio.ensure_future(read("sse", "/runs/live-sse/stream", {})),
        asyncio.ensure_future(read("ds-sse", "/v1/stream/live-ds", {"offset": "-1", "live": "sse"})),
        asyncio.ensure_future(
            read("long-poll", "/v1/stream/live-ds", {"offset": "now", "live": "long-poll"})
        ),
    ]
    await asyncio.sleep(1.0)  # every reader is connected and waiting
    assert server.process is not None
    started = time.monotonic()
    server.process.send_signal(signal.SIGINT)
    code = await asyncio.wait_for(server.process.wait(), 30)
    took = time.monotonic() - started
    await asyncio.wait_for(asyncio.gather(*readers), 5)  # every response ended without an error
    text = log.read_text()
    assert code == 0, text
    assert took < 3.0, (took, text)  # not uvicorn's 2 s grace, then cancelled tasks
    # The streams had started: they end like any response (their clients resume
    # elsewhere); the long-poll had not answered yet: 503 with Retry-After.
    assert ended == {"sse": 200, "ds-sse": 200, "long-poll": 503}
    for noise in SHUTDOWN_NOISE:
        assert noise not in text, text


async def _wait_for_health(process: asyncio.subprocess.Process, url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=2) as http:
        while True:
            if process.returncode is not None:
                assert process.stderr is not None
                raise AssertionError(f"serve exited: {(await process.stderr.read()).decode()}")
            with contextlib.suppress(httpx.TransportError):
                if (await http.get("/health")).status_code == 200:
                    return
            assert time.monotonic() < deadline, "serve did not answer in time"
            await asyncio.sleep(0.1)


async def _interrupt(process: asyncio.subprocess.Process) -> tuple[int, str]:
    """Ctrl-C: the exit status and standard error."""
    if process.returncode is None:
        process.send_signal(signal.SIGINT)
    try:
        _, err = await asyncio.wait_for(process.communicate(), 30)
    except TimeoutError:
        process.kill()
        _, err = await process.communicate()
    assert process.returncode is not None
    return process.returncode, err.decode()
