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

(1) ``throughput``: N streams, N connections of ``wrk`` (a native load
    client, so the client costs little CPU and does not hide the servers),
    each POSTing one message after the previous one was answered, the
    streams taken in turn (``pgbridge/bench/wrk/append.lua``), for a fixed
    time: acknowledged appends per second, and the servers' CPU per append
    (pgbridge serve and PostgreSQL apart);
(2) ``append_latency``: one producer, one stream, sequential POSTs: p50/p99;
(3) ``sse_latency``: one SSE reader (``live=sse``) on a stream, one paced
    producer: append sent to message received;
(4) ``catch_up``: a long stream (filled in batches of JSON arrays) read
    from ``offset=-1`` to its tail, following ``Stream-Next-Offset``.

Throughput is driven by ``wrk`` (Debian package ``wrk``: ``apt-get install
wrk``; without it that workload fails, saying so, and the others still
run). The other workloads need the response bodies (SSE, catch-up) or one
request at a time, and use aiohttp (httpx caps the reference server at a
fraction of what it can do; see ``../shared/durable-streams/README.md``).
A 2xx counts as an append only after both servers made it durable:
pgbridge commits it in PostgreSQL, the reference ``fdatasync``\\ s the
stream's segment file before answering. The report records both guarantees.
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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

import pgbridge
from pgbridge.bench.payload import payload_bytes, token_payload
from pgbridge.bench.stats import Summary, summarize
from pgbridge.exceptions import BenchError

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
    #: wrk's threads for the throughput workload (each a core's worth of client at most).
    wrk_threads: int = 1
    #: An unmeasured wrk run before each measured one (connections opened, Node's JIT warm).
    throughput_warmup_seconds: float = 1.0
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
            throughput_warmup_seconds=0.0,
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
    """A server under test: its base URL (streams under ``/v1/stream/``) and its process id;
    for pgbridge also the PostgreSQL processes whose CPU is counted beside it."""

    url: str
    pid: int
    description: dict[str, Any]
    postgres: PostgresCpu | None = None


class PostgresCpu:
    """CPU seconds of the PostgreSQL processes that serve the benchmark, as psutil sees them.

    ``whole_server`` (a server of the benchmark's own, the embedded one): the
    postmaster and every process under it (backends, WAL writer, checkpointer,
    background writer, autovacuum), exited children included (the kernel adds
    a reaped child's CPU to its parent's children times). Otherwise (a server
    given with ``--dsn``, which others may use): only the backends connected
    to the benchmark's scratch database, found in ``pg_stat_activity`` and
    read with psutil when they run on this machine; the server's shared
    processes are not counted, and a backend that exits mid-run loses its CPU.
    """

    def __init__(self, dsn: str, *, whole_server: bool) -> None:
        self.dsn = dsn
        self.whole_server = whole_server
        self.postmaster: int | None = None
        self.measured = ""

    async def start(self) -> str | None:
        """Find the processes; None, or why PostgreSQL's CPU cannot be measured here."""
        import asyncpg
        import psutil

        conn = await asyncpg.connect(self.dsn)
        try:
            backend = int(await conn.fetchval("SELECT pg_backend_pid()"))
            process = psutil.Process(backend)  # while the backend is there
            if "postgres" not in process.name() and "postgres" not in " ".join(process.cmdline()):
                raise psutil.NoSuchProcess(backend)  # that pid is something else: another machine's
            postmaster = process.ppid()
        except psutil.Error:
            return "PostgreSQL's processes are not visible from this process (another machine?)"
        finally:
            await conn.close()
        if self.whole_server:
            self.postmaster = postmaster
            self.measured = (
                "the embedded server's postmaster and all its processes (backends, WAL writer, "
                "checkpointer, background writer, autovacuum; exited ones included)"
            )
        else:
            self.measured = (
                "the backends of the benchmark's scratch database (pg_stat_activity); not the "
                "server's shared processes (WAL writer, checkpointer, ...), which others use too"
            )
        return None

    def between(self, before: Mapping[int, float], after: Mapping[int, float]) -> float:
        """CPU seconds spent between two samples."""
        if self.postmaster is not None:  # an exited process's CPU moved into the postmaster's entry
            return sum(after.values()) - sum(before.values())
        # Backends: new ones count whole; exited ones are gone with their CPU.
        return sum(seconds - before.get(pid, 0.0) for pid, seconds in after.items())

    async def sample(self) -> dict[int, float]:
        """CPU seconds so far by process (the postmaster's entry includes its reaped children)."""
        import psutil

        if self.postmaster is not None:
            return await asyncio.to_thread(_tree_cpu, self.postmaster)
        import asyncpg

        conn = await asyncpg.connect(self.dsn)
        try:
            pids = await conn.fetch(
                "SELECT pid FROM pg_stat_activity"
                " WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        finally:
            await conn.close()
        found: dict[int, float] = {}
        for row in pids:
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(int(row["pid"])).cpu_times()
                found[int(row["pid"])] = float(times.user + times.system)
        return found


def _tree_cpu(postmaster: int) -> dict[int, float]:
    import psutil

    root = psutil.Process(postmaster)
    found: dict[int, float] = {}
    for child in root.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            times = child.cpu_times()
            found[child.pid] = float(times.user + times.system)
    # Read after the children: one that exits in between is counted twice (rare, and
    # small: an autovacuum worker), never lost.
    times = root.cpu_times()
    found[postmaster] = float(times.user + times.system + times.children_user + times.children_system)
    return found


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
            async with asyncio.timeout(15):
                await process.wait()
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
            async with asyncio.timeout(60):
                url = await _reference_url(process)
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


#: The Lua script wrk runs for the throughput workload (shipped as package data).
WRK_SCRIPT = Path(__file__).resolve().parent / "wrk" / "append.lua"
WRK_MISSING = (
    "wrk is not installed: the append-throughput workload needs it as its load client "
    "(Debian/Ubuntu: `apt-get install wrk`; macOS: `brew install wrk`)"
)


def wrk_unavailable_reason() -> str | None:
    """Why wrk cannot drive the throughput workload here, or None."""
    return None if shutil.which("wrk") else WRK_MISSING


def wrk_version() -> str | None:
    import subprocess

    wrk = shutil.which("wrk")
    if wrk is None:
        return None
    done = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" [")[0] if first else None  # "wrk 4.2.0 [epoll] Copyright ..."


async def run_wrk(
    base: str, path_prefix: str, streams: int, seconds: float, threads: int, body: bytes
) -> dict[str, Any]:
    """One wrk run of ``append.lua``: *streams* connections POSTing *body* to the streams
    ``path_prefix0`` ... for *seconds* (whole seconds, at least one); what its ``done`` printed."""
    wrk = shutil.which("wrk")
    if wrk is None:
        raise BenchError(WRK_MISSING)
    threads = max(1, min(threads, streams))
    process = await asyncio.create_subprocess_exec(
        wrk,
        *("-t", str(threads), "-c", str(streams), "-d", f"{max(1, round(seconds))}s"),
        *("--timeout", "30s", "-s", str(WRK_SCRIPT), base),
        *("--", path_prefix, str(streams), str(threads), body.decode()),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    for line in out.decode(errors="replace").splitlines():
        if line.startswith("pgbridge-wrk "):
            report: dict[str, Any] = json.loads(line.removeprefix("pgbridge-wrk "))
            return report
    raise RuntimeError(
        f"wrk exited ({process.returncode}) without its report: {(out + err).decode(errors='replace')[-500:]}"
    )


@dataclass(frozen=True, slots=True)
class ThroughputResult:
    load_client: str
    streams: int
    connections: int
    seconds: float
    #: Requests wrk saw answered with a 2xx in the measured run (it refuses any error).
    appends: int
    appends_per_s: float
    #: wrk's latencies (its percentiles; count = appends).
    latency: Summary
    #: Messages the server holds in the streams afterwards (warm-up included): at least every append.
    stored_messages: int
    #: The server process (pgbridge serve, or the reference's Node process): % of one core and µs per append.
    server_cpu_percent: float
    server_cpu_us_per_append: float
    #: PostgreSQL's processes (pgbridge only; see ``postgres_measured``): µs per append.
    postgres_cpu_us_per_append: float | None
    #: The server and PostgreSQL together: µs per append.
    total_cpu_us_per_append: float
    postgres_measured: str | None
    #: wrk's own CPU, % of one core.
    client_cpu_percent: float
    #: The whole machine's CPU busy during the run (everything else on it included), %.
    machine_cpu_percent: float


async def _count_messages(client: _Client, paths: list[str]) -> int:
    """Messages the server holds in *paths*, read from ``offset=-1`` to each stream's tail."""

    async def count(path: str) -> int:
        offset, total = "-1", 0
        while True:
            async with client.session.get(client.base + path, params={"offset": offset}) as response:
                body = await response.read()
                if response.status != 200:
                    raise RuntimeError(f"GET {path} offset={offset}: {response.status}")
                total += len(orjson.loads(body))
                offset = response.headers["Stream-Next-Offset"]
                if response.headers.get("Stream-Up-To-Date") == "true":
                    return total

    counts = []
    for first in range(0, len(paths), 20):  # a few at a time: it is a check, not a load
        counts += await asyncio.gather(*(count(path) for path in paths[first : first + 20]))
    return sum(counts)


async def throughput(client: _Client, served: Served, sizes: DsSizes, prefix: str) -> ThroughputResult:
    """wrk drives *sizes.streams* connections, one per stream, for *sizes.throughput_seconds*."""
    import psutil

    if (reason := wrk_unavailable_reason()) is not None:
        raise BenchError(reason)
    paths = [f"{prefix}tp-{i}" for i in range(sizes.streams)]
    await asyncio.gather(*(client.create(path) for path in paths))
    path_prefix = urlsplit(client.base).path + prefix + "tp-"
    body = _message(0)
    warm: dict[str, Any] = {"requests": 0}
    if sizes.throughput_warmup_seconds > 0:
        warm = await run_wrk(
            served.url, path_prefix, sizes.streams, sizes.throughput_warmup_seconds, sizes.wrk_threads, body
        )
    postgres = served.postgres
    pg_before = await postgres.sample() if postgres is not None else {}
    machine_before = psutil.cpu_times()
    server_before, client_before = _cpu_seconds(served.pid), _children_cpu_seconds()
    started = time.perf_counter()
    report = await run_wrk(
        served.url, path_prefix, sizes.streams, sizes.throughput_seconds, sizes.wrk_threads, body
    )
    elapsed = time.perf_counter() - started
    server_cpu = _cpu_seconds(served.pid) - server_before
    client_cpu = _children_cpu_seconds() - client_before
    machine = _busy_fraction(machine_before, psutil.cpu_times())
    pg_cpu = postgres.between(pg_before, await postgres.sample()) if postgres is not None else None
    errors = {kind: count for kind, count in report["errors"].items() if count}
    if errors:
        raise RuntimeError(f"wrk saw errors (status: a 4xx/5xx answer): {errors} of {report['requests']}")
    appends = int(report["requests"])
    if appends == 0:
        raise RuntimeError("wrk completed no request")
    seconds = report["duration_us"] / 1e6
    stored = await _count_messages(client, paths)
    if stored < appends + warm["requests"]:
        raise RuntimeError(f"{appends + warm['requests']} appends acknowledged, {stored} stored")
    latency = report["latency_us"]
    per_append = 1e6 / appends

    def ms(key: str) -> float:
        return round(float(latency[key]) / 1000, 3)

    return ThroughputResult(
        load_client=f"{wrk_version() or 'wrk'}, {max(1, min(sizes.wrk_threads, sizes.streams))} thread(s)",
        streams=len(paths),
        connections=len(paths),
        seconds=round(seconds, 3),
        appends=appends,
        appends_per_s=round(appends / seconds, 1),
        latency=Summary(count=appends, p50=ms("p50"), p99=ms("p99"), mean=ms("mean"), max=ms("max")),
        stored_messages=stored,
        server_cpu_percent=round(100 * server_cpu / elapsed, 1),
        server_cpu_us_per_append=round(server_cpu * per_append, 1),
        postgres_cpu_us_per_append=None if pg_cpu is None else round(pg_cpu * per_append, 1),
        total_cpu_us_per_append=round((server_cpu + (pg_cpu or 0.0)) * per_append, 1),
        postgres_measured=postgres.measured if postgres is not None else None,
        client_cpu_percent=round(100 * client_cpu / elapsed, 1),
        machine_cpu_percent=round(100 * machine, 1),
    )


def _children_cpu_seconds() -> float:
    """CPU of this process's reaped children (wrk, once it has exited)."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _busy_fraction(before: Any, after: Any) -> float:
    """Share of the machine's CPU time that was not idle between two ``psutil.cpu_times()``."""

    def total(times: Any) -> float:  # guest times are already in user and nice
        return float(sum(v for k, v in times._asdict().items() if k not in ("guest", "guest_nice")))

    idle = (after.idle + getattr(after, "iowait", 0.0)) - (before.idle + getattr(before, "iowait", 0.0))
    total_seconds = total(after) - total(before)
    return float(1 - idle / total_seconds) if total_seconds > 0 else 0.0


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
        async with asyncio.timeout(60):
            received = await reader
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


async def measure_durable_streams(
    dsn: str, sizes: DsSizes, say: Callable[[str], None], *, whole_server: bool = False
) -> dict[str, Any]:
    """Every Durable Streams workload against pgbridge serve on *dsn* and the reference server.

    *whole_server*: the PostgreSQL server is the benchmark's own (embedded), so all its
    processes' CPU counts towards pgbridge's appends; otherwise only the backends of *dsn*'s
    database do (see :class:`PostgresCpu`).
    """
    wrk_missing = wrk_unavailable_reason()
    results: dict[str, Any] = {
        "sizes": asdict(sizes),
        "payload_bytes": payload_bytes(),
        "load_client": {
            "throughput": wrk_version() or wrk_missing,
            "others": "aiohttp (in the benchmark process)",
        },
        "durability": DURABILITY,
        "contenders": {},
        "errors": [],
    }
    errors: list[str] = results["errors"]
    if wrk_missing is not None:
        say(f"the throughput workload will fail: {wrk_missing}")
    postgres = PostgresCpu(dsn, whole_server=whole_server)
    if (why := await postgres.start()) is not None:
        say(f"PostgreSQL's CPU is not measured: {why}")
        results["postgres_cpu"] = {"skipped": why}
    else:
        results["postgres_cpu"] = {"measured": postgres.measured}
    folder = tempfile.gettempdir()  # where the reference's files and the embedded PostgreSQL live
    results["disk"] = {"folder": folder, "before": await asyncio.to_thread(fdatasync_latency, folder)}
    reason = reference_unavailable_reason()
    async with contextlib.AsyncExitStack() as stack:
        servers: dict[str, Served] = {}
        try:
            servers["pgbridge"] = await stack.enter_async_context(pgbridge_server(dsn))
            servers["pgbridge"].postgres = postgres if why is None else None
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
