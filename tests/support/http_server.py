"""``pgbridge serve`` as a real process, for tests that talk HTTP to it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path

import httpx

#: Read-token keys for servers under test: the first signs, both verify.
TEST_KEYS = "k2:" + "2" * 40 + "\nk1:" + "1" * 40


def write_keys(folder: Path, keys: str = TEST_KEYS) -> Path:
    """A ``--token-secret-file`` holding *keys*, in *folder*."""
    path = folder / "token-keys"
    path.write_text(keys + "\n")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    """One ``pgbridge serve`` subprocess; can be killed and started again on the same port."""

    dsn: str
    token: str = "test-token"
    extra_args: tuple[str, ...] = ()
    port: int = field(default_factory=free_port)
    process: asyncio.subprocess.Process | None = None
    #: Where the server's standard output and error go (appended); None: nowhere.
    log: Path | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def client(self, **kwargs: object) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.auth, timeout=20, **kwargs)  # type: ignore[arg-type]

    async def start(self) -> None:
        args = ["serve", "--dsn", self.dsn, "--port", str(self.port), "--token", self.token]
        args += ["--heartbeat", "0.2", "--retry-ms", "200", *self.extra_args]
        with contextlib.ExitStack() as files:
            out = files.enter_context(self.log.open("ab")) if self.log else asyncio.subprocess.DEVNULL
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "pgbridge.cli",
                *args,
                stdout=out,
                stderr=out,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )
        await self._wait_until_ready()

    async def _wait_until_ready(self, timeout: float = 60) -> None:
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient(base_url=self.url, headers=self.auth, timeout=2) as client:
            while True:
                assert self.process is not None and self.process.returncode is None, "server exited"
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get("/health")).status_code == 200:
                        return
                if asyncio.get_running_loop().time() > deadline:
                    raise AssertionError("pgbridge serve did not answer in time")
                await asyncio.sleep(0.1)

    async def kill(self) -> None:
        """SIGKILL: no goodbye to any client."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()

    async def stop(self) -> None:
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                await self.kill()
