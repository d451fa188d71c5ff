"""A real scale-out topology on loopback: primary, hot standby, PgBouncer.

Built from Debian's packages (PostgreSQL 15 server binaries, ``pgbouncer``)
in a temporary folder, in a few seconds, and torn down after:

* a primary (``initdb``; ``wal_level=replica``; ``pg_stat_statements``
  preloaded, for the sharding-plan test),
* a hot standby made with ``pg_basebackup -R``, streaming from it,
* PgBouncer in transaction pooling mode in front of the primary, with a
  small server pool (``POOL_SIZE`` server connections per database)
  (``running_topology(bouncer=False)`` leaves it out).

For failover tests (tests/faults/test_failover.py) the topology can make
its replication synchronous (:func:`make_synchronous`), cut the standby off
the primary's WAL (:func:`stop_replication`), SIGKILL the primary with every
process it started (:meth:`Topology.kill_primary`: a machine that died) and
promote the standby (:meth:`Topology.promote_standby`); :meth:`Topology.both`
is the multi-host DSN clients use to find whichever is the primary.

PostgreSQL and PgBouncer refuse to run as root, so when the tests run as
root every server command runs as the ``postgres`` user. Without the
binaries the topology tests skip, saying what to install; in CI
(``CI=true``) they fail instead, so a missing install step cannot pass as
a green run.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: Server connections PgBouncer opens per (database, user): the "small server pool".
POOL_SIZE = 4
#: The user servers run as when the tests run as root.
SERVER_USER = "postgres"


class TopologyUnavailable(Exception):
    """The binaries for the topology are not on this machine."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def find_pg_bindir() -> Path:
    """Where initdb, pg_ctl and pg_basebackup are: ``PGBRIDGE_PG_BINDIR``, ``pg_config``, Debian's path."""
    candidates: list[str] = []
    if os.environ.get("PGBRIDGE_PG_BINDIR"):
        candidates.append(os.environ["PGBRIDGE_PG_BINDIR"])
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True)
            candidates.append(found.stdout.strip())
    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)
    for folder in candidates:
        if all((Path(folder) / tool).exists() for tool in ("initdb", "pg_ctl", "pg_basebackup", "postgres")):
            return Path(folder)
    raise TopologyUnavailable(
        "PostgreSQL server binaries (initdb, pg_ctl, pg_basebackup) not found: "
        "apt-get install postgresql, or set PGBRIDGE_PG_BINDIR"
    )


def find_pgbouncer() -> str:
    found = shutil.which("pgbouncer")
    if found is None and Path("/usr/sbin/pgbouncer").exists():
        found = "/usr/sbin/pgbouncer"
    if found is None:
        raise TopologyUnavailable("pgbouncer not found: apt-get install pgbouncer")
    return found


def _server_user_kwargs() -> dict[str, Any]:
    """subprocess arguments that drop root to the ``postgres`` user (servers refuse root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam(SERVER_USER)
    except KeyError as exc:
        raise TopologyUnavailable(f"running as root, and no {SERVER_USER!r} user to run servers as") from exc
    return {"user": SERVER_USER, "group": SERVER_USER, "extra_groups": []}


@dataclass
class Topology:
    """Addresses of the three servers; every DSN names the ``postgres`` user."""

    folder: Path
    bindir: Path
    primary_port: int
    standby_port: int
    bouncer_port: int
    pool_size: int = POOL_SIZE
    with_bouncer: bool = True
    _bouncer: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def primary(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.primary_port}/{database}"

    def standby(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.standby_port}/{database}"

    def bouncer(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.bouncer_port}/{database}"

    def both(self, database: str = "postgres") -> str:
        """A multi-host DSN naming both servers, that connects to whichever accepts writes."""
        return (
            f"postgresql://postgres@127.0.0.1:{self.primary_port},127.0.0.1:{self.standby_port}/{database}"
            "?target_session_attrs=read-write"
        )

    # -- failover ---------------------------------------------------------------------

    def kill_primary(self) -> None:
        """SIGKILL the primary's postmaster and every process it started, at once: no shutdown
        checkpoint, no goodbye to clients or to the standby (a machine that died)."""
        pid = int((self.folder / "primary" / "postmaster.pid").read_text().split()[0])
        for victim in [pid, *_children_of(pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.01)

    def promote_standby(self) -> None:
        """``pg_ctl promote``: the standby becomes a primary on the next timeline (waits until it is)."""
        self._pg_ctl(self.folder / "standby", "standby.log", "promote")

    # -- building -----------------------------------------------------------------

    def _run(self, *args: str | Path, timeout: float = 120) -> None:
        result = subprocess.run(
            [str(a) for a in args], capture_output=True, text=True, timeout=timeout, **_server_user_kwargs()
        )
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(map(str, args))} failed:\n{result.stdout}\n{result.stderr}")

    def build(self) -> None:
        primary, standby = self.folder / "primary", self.folder / "standby"
        self._run(
            self.bindir / "initdb", "-D", primary, "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        with open(primary / "postgresql.conf", "a") as conf:
            conf.write(
                f"""
listen_addresses = '127.0.0.1'
port = {self.primary_port}
unix_socket_directories = '{self.folder}'
wal_level = replica
max_wal_senders = 4
hot_standby = on
max_connections = 200
shared_buffers = 32MB
fsync = off
shared_preload_libraries = 'pg_stat_statements'
pg_stat_statements.track = all
log_min_messages = warning
"""
            )
        self._pg_ctl(primary, "primary.log", "start")
        self._run(
            self.bindir / "pg_basebackup", "-h", "127.0.0.1", "-p", str(self.primary_port), "-U", "postgres",
            "-D", standby, "-R", "-X", "stream", "-c", "fast", "--no-sync",
        )  # fmt: skip
        with open(standby / "postgresql.conf", "a") as conf:
            conf.write(f"\nport = {self.standby_port}\nhot_standby_feedback = on\n")
            conf.write("wal_receiver_status_interval = 1s\n")
        self._pg_ctl(standby, "standby.log", "start")
        if self.with_bouncer:
            self._start_bouncer()

    def _pg_ctl(self, data: Path, log: str, action: str, *extra: str) -> None:
        log_file = self.folder / log
        self._run(self.bindir / "pg_ctl", "-D", data, "-l", log_file, "-w", "-t", "60", action, *extra)

    def _start_bouncer(self) -> None:
        (self.folder / "userlist.txt").write_text('"postgres" ""\n')
        config = self.folder / "pgbouncer.ini"
        config.write_text(
            f"""[databases]
* = host=127.0.0.1 port={self.primary_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.bouncer_port}
unix_socket_dir =
auth_type = trust
auth_file = {self.folder}/userlist.txt
pool_mode = transaction
default_pool_size = {self.pool_size}
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 2000
admin_users = postgres
stats_users = postgres
logfile = {self.folder}/pgbouncer.log
"""
        )
        _chown_tree(self.folder)
        self._bouncer = subprocess.Popen(
            [find_pgbouncer(), str(config)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            **_server_user_kwargs(),
        )
        _wait_for_port(self.bouncer_port, self._bouncer)

    def teardown(self) -> None:
        if self._bouncer is not None and self._bouncer.poll() is None:
            self._bouncer.terminate()
            try:
                self._bouncer.wait(10)
            except subprocess.TimeoutExpired:
                self._bouncer.kill()
                self._bouncer.wait()
        for name in ("standby", "primary"):
            data = self.folder / name
            if (data / "postmaster.pid").exists():
                with contextlib.suppress(Exception):
                    self._pg_ctl(data, f"{name}.log", "stop", "-m", "immediate")


def _children_of(pid: int) -> list[int]:
    """The processes whose parent is *pid* (from /proc)."""
    children = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            # /proc/<pid>/stat: "pid (comm) state ppid ...": comm may hold spaces, so split after ")".
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[1]) == pid:
                children.append(int(entry.name))
    return children


def _pid_alive(pid: int) -> bool:
    """Whether *pid* still runs (a zombie waiting to be reaped does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def _chown_tree(folder: Path) -> None:
    kwargs = _server_user_kwargs()
    if not kwargs:
        return
    entry = pwd.getpwnam(SERVER_USER)
    for root, dirs, files in os.walk(folder):
        for name in [root, *(os.path.join(root, d) for d in dirs), *(os.path.join(root, f) for f in files)]:
            os.chown(name, entry.pw_uid, entry.pw_gid)


def _wait_for_port(port: int, process: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"pgbouncer exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on port {port}")
        time.sleep(0.05)


def missing_reason() -> str | None:
    """Why the topology cannot be built here, or None when it can."""
    try:
        find_pg_bindir()
        find_pgbouncer()
        _server_user_kwargs()
    except TopologyUnavailable as exc:
        return str(exc)
    return None


@contextlib.contextmanager
def running_topology(*, bouncer: bool = True) -> Iterator[Topology]:
    """Build primary, standby and PgBouncer on free loopback ports; tear them down after."""
    bindir = find_pg_bindir()
    if bouncer:
        find_pgbouncer()
    folder = Path(tempfile.mkdtemp(prefix="pgbridge-topology-"))
    os.chmod(folder, 0o755)
    _chown_tree(folder)
    topology = Topology(
        folder=folder,
        bindir=bindir,
        primary_port=free_port(),
        standby_port=free_port(),
        bouncer_port=free_port(),
        with_bouncer=bouncer,
    )
    try:
        topology.build()
        yield topology
    finally:
        topology.teardown()
        shutil.rmtree(folder, ignore_errors=True)


@dataclass(frozen=True)
class ScaleDatabase:
    """One migrated database of a test, reachable on each server of the topology."""

    name: str
    primary: str
    standby: str
    bouncer: str

    def bridge_options(self, **extra: Any) -> dict[str, Any]:
        """Options of a bridge whose pool goes through PgBouncer: no statement cache, direct listener."""
        return {"statement_cache_size": 0, "listen_dsn": self.primary, **extra}


async def wait_for_standby(topology: Topology, timeout: float = 30) -> None:
    """Wait until the standby has replayed everything the primary has written so far."""
    import asyncio

    import asyncpg

    primary = await asyncpg.connect(topology.primary())
    try:
        target = await primary.fetchval("SELECT pg_current_wal_insert_lsn()")
    finally:
        await primary.close()
    standby = await asyncpg.connect(topology.standby())
    try:
        deadline = time.monotonic() + timeout
        while not await standby.fetchval("SELECT pg_last_wal_replay_lsn() >= $1::pg_lsn", target):
            if time.monotonic() > deadline:
                raise AssertionError("the standby did not catch up")
            await asyncio.sleep(0.02)
    finally:
        await standby.close()


async def make_synchronous(topology: Topology, commit: str = "on") -> None:
    """Synchronous replication from now on: the primary answers a commit only once the standby
    has it (``synchronous_commit=on``: flushed; ``remote_apply``: replayed). Set on the primary
    alone (ALTER SYSTEM, after the standby was copied): a promoted standby must not wait for a
    standby of its own."""
    import asyncio

    import asyncpg

    conn = await asyncpg.connect(topology.primary())
    try:
        await conn.execute("ALTER SYSTEM SET synchronous_standby_names = '*'")
        await conn.execute(f"ALTER SYSTEM SET synchronous_commit = '{commit}'")
        await conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 30
        while await conn.fetchval("SELECT count(*) FROM pg_stat_replication WHERE sync_state = 'sync'") == 0:
            if time.monotonic() > deadline:
                raise AssertionError("the standby never became synchronous")
            await asyncio.sleep(0.02)
    finally:
        await conn.close()


async def stop_replication(topology: Topology) -> None:
    """Cut the standby off the primary's WAL and pause its replay: it stays exactly where it is,
    whatever the primary commits from now on. (Pausing replay alone is not enough: the standby
    still receives WAL, and promotion replays everything it received.)"""
    import asyncio

    import asyncpg

    conn = await asyncpg.connect(topology.standby())
    try:
        await conn.execute("ALTER SYSTEM SET primary_conninfo = ''")
        await conn.execute("SELECT pg_reload_conf()")
        deadline = time.monotonic() + 30
        while await conn.fetchval("SELECT count(*) FROM pg_stat_wal_receiver") > 0:
            if time.monotonic() > deadline:
                raise AssertionError("the standby kept receiving WAL")
            await asyncio.sleep(0.02)
        await conn.execute("SELECT pg_wal_replay_pause()")
    finally:
        await conn.close()


async def wait_until_primary(dsn: str, timeout: float = 30) -> None:
    """Wait until *dsn*'s server accepts writes (a promotion finished)."""
    import asyncio

    import asyncpg

    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(dsn, timeout=2)
            try:
                if not await conn.fetchval("SELECT pg_is_in_recovery()"):
                    return
            finally:
                await conn.close()
        if time.monotonic() > deadline:
            raise AssertionError(f"{dsn} never became a primary")
        await asyncio.sleep(0.05)
