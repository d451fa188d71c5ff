"""``pgbridge bench --durable-streams``: pgbridge's Durable Streams endpoint against the reference server.

Both servers run in the same benchmark run, one after the other, on the
same machine, driven by the same load client:

* pgbridge: ``pgbridge serve`` (one uvicorn process, access log off) on a
  scratch database of a real PostgreSQL;
* the reference: ``@durable-streams/server`` (one Node process), file-backed
  in a temporary folder, started with ``conformance/reference-server.mjs``
  from ``conformance/node_modules`` (``npm ci`` there first).

Workloads, all JSON-mode streams and ~200-byte JSON messages (the token
payload of every other workload, stamped with the sender's clock):

(1) ``throughput``: N streams, N concurrent producers (one per stream),
    each POSTing one message after the previous one was answered, for a
    fixed time: acknowledged appends per second;
(2) ``append_latency``: one producer, one stream, sequential POSTs: p50/p99;
(3) ``sse_latency``: one SSE reader (``live=sse``) on a stream, one paced
    producer: append sent to message received;
(4) ``catch_up``: a long stream (filled in batches of JSON arrays) read
    from ``offset=-1`` to its tail, following ``Stream-Next-Offset``.

The load client is aiohttp (httpx caps the reference server at a fraction
of what it can do; see ``../shared/durable-streams/README.md``). A 2xx
counts as an append only after both servers made it durable: pgbridge
commits it in PostgreSQL, the reference ``fdatasync``\\ s the stream's
segment file before answering. The report records both guarantees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

import pgbridge
from pgbridge.bench.payload import payload_bytes, token_payload
from pgbridge.bench.stats import Summary, summarize

#: What each side guarantees when it answers an append with a 2xx.
DURABILITY = {
    "pgbridge": (
        "the append's transaction has committed in PostgreSQL (synchronous_commit and fsync as "
        "recorded under postgres: WAL flushed to disk at commit when both are on)"
    ),
    "reference": (
        "@durable-streams/server file-backed: the message is written to the stream's segment file and "
        "fdatasync'ed before the answer (concurrent appends to one file share one fdatasync); "
        "stream metadata goes to LMDB"
    ),
}
CONTENDERS = ("pgbridge", "reference")
LABELS = {"pgbridge": "pgbridge serve", "reference": "@durable-streams/server (file)"}
REFERENCE_SCRIPT = Path(pgbridge.__file__).resolve().parent.parent / "conformance" / "reference-server.mjs"
REFERENCE_PACKAGE = REFERENCE_SCRIPT.parent / "node_modules" / "@durable-streams" / "server"
JSON_TYPE = "application/json"


@dataclass(frozen=True, slots=True)
class DsSizes:
    """How big each workload is: the defaults are the full run's sizes; quick mode keeps
    the pacing and shrinks the counts."""

    streams: int = 100
    throughput_seconds: float = 10.0
    latency_appends: int = 2000
    sse_messages: int = 1000
    sse_interval: float = 0.005
    catch_up_messages: int = 100_000
    catch_up_batch: int = 1000
    #: Rounds of the throughput and catch-up workloads per server (the median is reported).
    rounds: int = 3

    @classmethod
    def full(cls) -> DsSizes:
        return cls()

    @classmethod
    def quick(cls) -> DsSizes:
        return cls(
            streams=10,
            throughput_seconds=1.0,
            latency_appends=50,
            sse_messages=30,
            catch_up_messages=2000,
            catch_up_batch=500,
            rounds=1,
        )


# -- the servers ---------------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Served:
    """A server under test: its base URL (streams under ``/v1/stream/``) and its process id."""

    url: str
    pid: int
    description: dict[str, Any]


def reference_unavailable_reason() -> str | None:
    """Why the reference server cannot run here, or None."""
    if shutil.which("node") is None:
        return "Node.js is not installed"
    if not REFERENCE_PACKAGE.is_dir():
        return f"@durable-streams/server is not installed: run `npm ci` in {REFERENCE_SCRIPT.parent}"
    return None


async def _stop(process: asyncio.subprocess.Process) -> None:
    if process.returncode is None:
        process.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(process.wait(), 15)
        except TimeoutError:
            process.kill()
            await process.wait()


@contextlib.asynccontextmanager
async def pgbridge_server(dsn: str) -> AsyncIterator[Served]:
    """``pgbridge serve`` on *dsn*: one process, no token, access log off (as the reference logs none)."""
    import aiohttp

    port = _free_port()
    package_root = str(REFERENCE_SCRIPT.parent.parent)
    path = os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH", "")) if p)
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "pgbridge.cli", "serve", "--dsn", dsn, "--port", str(port), "--token", ""),
        *("--log-level", "warning"),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONPATH": path, "PGBRIDGE_DSN": dsn},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        async with aiohttp.ClientSession() as session:
            while True:
                if process.returncode is not None:
                    raise RuntimeError(f"pgbridge serve exited ({process.returncode})")
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(url + "/health") as response:
                        if response.status == 200:
                            break
                if time.monotonic() > deadline:
                    raise RuntimeError("pgbridge serve did not answer within 60 s")
                await asyncio.sleep(0.1)
        yield Served(url, process.pid, {"processes": 1, **_http_stack()})
    finally:
        await _stop(process)


def _http_stack() -> dict[str, Any]:
    """What uvicorn runs on: it picks uvloop and httptools when they are installed."""
    from importlib.util import find_spec

    return {
        "command": "pgbridge serve --log-level warning",
        "event_loop": "uvloop" if find_spec("uvloop") else "asyncio",
        "http_parser": "httptools" if find_spec("httptools") else "h11",
    }


@contextlib.asynccontextmanager
async def reference_server() -> AsyncIterator[Served]:
    """The reference server, file-backed in a temporary folder; one Node process."""
    node = shutil.which("node")
    assert node is not None
    with tempfile.TemporaryDirectory(prefix="pgbridge-bench-ds-") as folder:
        process = await asyncio.create_subprocess_exec(
            node,
            str(REFERENCE_SCRIPT),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            cwd=REFERENCE_SCRIPT.parent,
            env={**os.environ, "DS_DATA_DIR": folder, "DS_PORT": "0"},
        )
        drain: asyncio.Task[None] | None = None
        try:
            url = await asyncio.wait_for(_reference_url(process), 60)
            drain = asyncio.create_task(_drain(process))  # its log lines must not fill the pipe
            version = json.loads((REFERENCE_PACKAGE / "package.json").read_text()).get("version")
            yield Served(
                url,
                process.pid,
                {"processes": 1, "package": f"@durable-streams/server {version}", "storage": "file"},
            )
        finally:
            await _stop(process)
            if drain is not None:
                await asyncio.gather(drain, return_exceptions=True)


async def _reference_url(process: asyncio.subprocess.Process) -> str:
    """The URL the reference server prints once listening (after its log lines)."""
    assert process.stdout is not None
    while True:
        line = await process.stdout.readline()
        if not line:
            raise RuntimeError(f"the reference server exited ({await process.wait()}) before listening")
        text = line.decode(errors="replace").strip()
        if text.startswith("http"):
            return text.rstrip("/")


async def _drain(process: asyncio.subprocess.Process) -> None:
    assert process.stdout is not None
    while await process.stdout.read(65536):
        pass


def _cpu_seconds(pid: int) -> float:
    import psutil

    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


def fdatasync_latency(folder: str, writes: int = 200) -> dict[str, float]:
    """How long an 8 KiB write and ``fdatasync`` take in *folder* (microseconds).

    Both servers' appends wait for such a flush: the reference one per stream
    file (concurrent appends to one file share it), pgbridge one per group
    commit. When the disk flushes in tens of microseconds, CPU decides the
    append race; when a flush takes milliseconds (a busy or a real disk),
    flushes do. The report records it so the throughput ratio can be read.
    """
    block = os.urandom(8192)
    took: list[float] = []
    with tempfile.NamedTemporaryFile(dir=folder, prefix="fdatasync-probe-") as handle:
        for _ in range(writes):
            started = time.perf_counter()
            os.write(handle.fileno(), block)
            os.fdatasync(handle.fileno())
            took.append(time.perf_counter() - started)
    took.sort()
    return {
        "writes": writes,
        "p50_us": round(took[len(took) // 2] * 1e6, 1),
        "p99_us": round(took[min(len(took) - 1, int(len(took) * 0.99))] * 1e6, 1),
    }


# -- the workloads ----------------------------------------------------------------------------------------


def _message(index: int) -> bytes:
    return json.dumps(token_payload(index), separators=(",", ":")).encode()


class _Client:
    """One aiohttp session on one server's ``/v1/stream/``."""

    def __init__(self, session: Any, base: str) -> None:
        self.session = session
        self.base = base + "/v1/stream/"

    async def create(self, path: str) -> None:
        async with self.session.put(self.base + path, headers={"Content-Type": JSON_TYPE}) as response:
            await response.read()
            if response.status not in (200, 201):
                raise RuntimeError(f"PUT {path}: {response.status}")

    async def append(self, path: str, body: bytes) -> None:
        async with self.session.post(
            self.base + path, data=body, headers={"Content-Type": JSON_TYPE}
        ) as response:
            await response.read()
            if response.status not in (200, 204):
                raise RuntimeError(f"POST {path}: {response.status} {(await response.text())[:200]}")


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    streams: int
    producers: int
    seconds: float
    appends: int
    appends_per_s: float
    latency: Summary
    server_cpu_percent: float
    #: The load client's own CPU (this process), % of one core: near 100 means it was the limit.
    client_cpu_percent: float


async def throughput(client: _Client, served: Served, sizes: DsSizes, prefix: str) -> ThroughputResult:
    paths = [f"{prefix}tp-{i}" for i in range(sizes.streams)]
    await asyncio.gather(*(client.create(path) for path in paths))
    loop = asyncio.get_running_loop()
    took: list[float] = []

    async def produce(path: str, deadline: float) -> int:
        count = 0
        while loop.time() < deadline:
            started = time.perf_counter()
            await client.append(path, _message(count))
            took.append(time.perf_counter() - started)
            count += 1
        return count

    cpu_before, client_before = _cpu_seconds(served.pid), time.process_time()
    started = time.perf_counter()
    deadline = loop.time() + sizes.throughput_seconds
    counts = await asyncio.gather(*(produce(path, deadline) for path in paths))
    seconds = time.perf_counter() - started
    cpu = _cpu_seconds(served.pid) - cpu_before
    client_cpu = time.process_time() - client_before
    appends = sum(counts)
    return ThroughputResult(
        streams=len(paths),
        producers=len(paths),
        seconds=round(seconds, 3),
        appends=appends,
        appends_per_s=round(appends / seconds, 1),
        latency=summarize(took),
        server_cpu_percent=round(100 * cpu / seconds, 1),
        client_cpu_percent=round(100 * client_cpu / seconds, 1),
    )


@dataclass(frozen=True, slots=True)
class LatencyResult:
    appends: int
    latency: Summary


async def append_latency(client: _Client, served: Served, sizes: DsSizes, prefix: str) -> LatencyResult:
    path = prefix + "latency"
    await client.create(path)
    took = []
    for index in range(sizes.latency_appends):
        body = _message(index)
        started = time.perf_counter()
        await client.append(path, body)
        took.append(time.perf_counter() - started)
    return LatencyResult(appends=sizes.latency_appends, latency=summarize(took))


@dataclass(frozen=True, slots=True)
class SseResult:
    messages: int
    received: int
    messages_per_s_offered: float
    latency: Summary


async def _read_sse(response: Any, expected: int, latencies: list[float]) -> int:
    """Data events' messages from an SSE response until *expected* were seen; their latencies."""
    received = 0
    event: str | None = None
    data: list[str] = []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if event == "data" and data:
                now = time.time()
                for message in json.loads("\n".join(data)):
                    if isinstance(message, dict) and isinstance(message.get("t"), float):
                        latencies.append(now - message["t"])
                    received += 1
                if received >= expected:
                    return received
            event, data = None, []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            value = line[5:]
            data.append(value[1:] if value.startswith(" ") else value)
    return received


async def sse_latency(client: _Client, served: Served, sizes: DsSizes, prefix: str) -> SseResult:
    path = prefix + "sse"
    await client.create(path)
    latencies: list[float] = []
    url = client.base + path + "?offset=-1&live=sse"
    async with client.session.get(url, timeout=None) as response:
        if response.status != 200:
            raise RuntimeError(f"SSE GET: {response.status}")
        reader = asyncio.create_task(_read_sse(response, sizes.sse_messages, latencies))
        await asyncio.sleep(0.2)  # the subscription is open before the first append
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        for index in range(sizes.sse_messages):
            await client.append(path, _message(index))
            next_at += sizes.sse_interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        received = await asyncio.wait_for(reader, 60)
    return SseResult(
        messages=sizes.sse_messages,
        received=received,
        messages_per_s_offered=round(1 / sizes.sse_interval),
        latency=summarize(latencies),
    )


@dataclass(frozen=True, slots=True)
class CatchUpResult:
    messages: int
    received: int
    requests: int
    bytes: int
    seconds: float
    messages_per_s: float
    mb_per_s: float
    fill_messages_per_s: float


async def catch_up(client: _Client, served: Served, sizes: DsSizes, prefix: str) -> CatchUpResult:
    path = prefix + "catch-up"
    await client.create(path)
    started = time.perf_counter()
    for first in range(0, sizes.catch_up_messages, sizes.catch_up_batch):
        last = min(first + sizes.catch_up_batch, sizes.catch_up_messages)
        body = b"[" + b",".join(_message(i) for i in range(first, last)) + b"]"
        await client.append(path, body)
    fill_seconds = time.perf_counter() - started
    offset, received, requests, size = "-1", 0, 0, 0
    started = time.perf_counter()
    while True:
        async with client.session.get(client.base + path, params={"offset": offset}) as response:
            body = await response.read()
            if response.status != 200:
                raise RuntimeError(f"GET offset={offset}: {response.status}")
            requests += 1
            size += len(body)
            received += len(orjson.loads(body))  # json.loads would make the client the limit
            offset = response.headers["Stream-Next-Offset"]
            if response.headers.get("Stream-Up-To-Date") == "true":
                break
    seconds = time.perf_counter() - started
    return CatchUpResult(
        messages=sizes.catch_up_messages,
        received=received,
        requests=requests,
        bytes=size,
        seconds=round(seconds, 3),
        messages_per_s=round(received / seconds, 1),
        mb_per_s=round(size / seconds / 1e6, 2),
        fill_messages_per_s=round(sizes.catch_up_messages / fill_seconds, 1),
    )


DsWorkload = Callable[[_Client, Served, DsSizes, str], Awaitable[Any]]
DS_WORKLOADS: dict[str, DsWorkload] = {
    "throughput": throughput,
    "append_latency": append_latency,
    "sse_latency": sse_latency,
    "catch_up": catch_up,
}


#: The figure that picks a round's median, for workloads measured in several rounds.
ROUND_FIGURE = {"throughput": "appends_per_s", "catch_up": "messages_per_s"}


def _session(sizes: DsSizes) -> Any:
    import aiohttp

    # Idle connections go before uvicorn drops them (5 s), so no request lands on a closed one.
    connector = aiohttp.TCPConnector(limit=sizes.streams + 16, keepalive_timeout=2)
    return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=120))


async def _measure(
    servers: dict[str, Served], sizes: DsSizes, errors: list[str], say: Callable[[str], None]
) -> dict[str, dict[str, Any]]:
    """Every workload on every server, the servers taking turns: round after round, in
    alternating order, so noise from the rest of a shared machine falls on both alike.
    Throughput and catch-up keep the median round (every round's figure is kept too)."""
    figures: dict[str, dict[str, Any]] = {name: {"server": s.description} for name, s in servers.items()}
    tag = uuid.uuid4().hex[:6]
    async with contextlib.AsyncExitStack() as stack:
        clients = {
            name: _Client(await stack.enter_async_context(_session(sizes)), served.url)
            for name, served in servers.items()
        }
        for key, workload in DS_WORKLOADS.items():
            rounds = sizes.rounds if key in ROUND_FIGURE else 1
            results: dict[str, list[dict[str, Any]]] = {name: [] for name in servers}
            for number in range(rounds):
                order = list(servers) if number % 2 == 0 else list(reversed(servers))
                for name in order:
                    if results[name] and "error" in results[name][-1]:
                        continue
                    say(f"durable streams {key} (round {number + 1}/{rounds}): {name} ...")
                    try:
                        result = await workload(
                            clients[name], servers[name], sizes, f"b-{tag}/{key}{number}/"
                        )
                        results[name].append(asdict(result))
                    except Exception as exc:
                        message = f"{type(exc).__name__}: {exc}"
                        errors.append(f"durable_streams/{key}/{name}: {message}")
                        results[name].append({"error": message})
            for name, measured in results.items():
                figures[name][key] = _median_round(key, measured)
    return figures


def _median_round(key: str, measured: list[dict[str, Any]]) -> dict[str, Any]:
    failed = [m for m in measured if "error" in m]
    if failed:
        return failed[0]
    if key not in ROUND_FIGURE or len(measured) == 1:
        return measured[0]
    name = ROUND_FIGURE[key]
    ordered = sorted(measured, key=lambda m: float(m[name]))
    return {**ordered[(len(ordered) - 1) // 2], "rounds": [m[name] for m in measured]}


async def measure_durable_streams(dsn: str, sizes: DsSizes, say: Callable[[str], None]) -> dict[str, Any]:
    """Every Durable Streams workload against pgbridge serve on *dsn* and the reference server."""
    results: dict[str, Any] = {
        "sizes": asdict(sizes),
        "payload_bytes": payload_bytes(),
        "load_client": "aiohttp (in the benchmark process)",
        "durability": DURABILITY,
        "contenders": {},
        "errors": [],
    }
    errors: list[str] = results["errors"]
    folder = tempfile.gettempdir()  # where the reference's files and the embedded PostgreSQL live
    results["disk"] = {"folder": folder, "before": await asyncio.to_thread(fdatasync_latency, folder)}
    reason = reference_unavailable_reason()
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, Served] = {}
        try:
            servers["pgbridge"] = await stack.enter_async_context(pgbridge_server(dsn))
        except Exception as exc:
            errors.append(f"durable_streams/pgbridge: {type(exc).__name__}: {exc}")
            results["contenders"]["pgbridge"] = {"error": str(exc)}
        if reason is not None:
            say(f"the reference server is skipped: {reason}")
            results["contenders"]["reference"] = {"skipped": reason}
        else:
            try:
                servers["reference"] = await stack.enter_async_context(reference_server())
            except Exception as exc:
                errors.append(f"durable_streams/reference: {type(exc).__name__}: {exc}")
                results["contenders"]["reference"] = {"error": str(exc)}
        results["contenders"].update(await _measure(servers, sizes, errors, say))
    results["disk"]["after"] = await asyncio.to_thread(fdatasync_latency, folder)
    return results
