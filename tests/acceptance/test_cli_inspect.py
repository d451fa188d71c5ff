"""``pgbridge runs``, ``events``, ``tail`` and ``stats`` as a user runs them, on a real database."""

from __future__ import annotations

import asyncio
import json
import re
import shlex
import signal

import pytest

from pgbridge import PostgresStreamBridge, RetentionPolicy, StreamStatus, migrate
from tests.support.catalog import EVENTS_VIEW_COLUMNS, RUNS_VIEW_COLUMNS
from tests.support.cli import ANSI, cli, cli_env, on_a_terminal, start_cli, terminal_session
from tests.support.run_seeds import seed_agent_runs
from tests.support.sql_helpers import evict_prefix

#: An event line: time (UTC), event ID, event name, data.
EVENT_LINE = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z)  (\d+-\d+)  (\S+)  (.*)$")


def event_ids(out: str) -> list[str]:
    ids = []
    for line in out.splitlines():
        match = EVENT_LINE.match(line)
        assert match, f"not an event line: {line!r}"
        ids.append(match.group(2))
    return ids


async def publish_tokens(bridge: PostgresStreamBridge, run_id: str, count: int, start: int = 0) -> list[str]:
    return [await bridge.publish(run_id, "token", {"i": i}) for i in range(start, start + count)]


# -- every command ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["runs", "events", "tail", "stats"])
async def test_each_command_explains_itself_with_help(command: str) -> None:
    code, out, _ = await cli(command, "--help")
    assert code == 0
    assert "--json" in out and "--dsn" in out and "--schema" in out


@pytest.mark.parametrize("variable", ["PGBRIDGE_DSN", "DATABASE_URL"])
async def test_commands_find_the_database_in_the_environment(
    bridge: PostgresStreamBridge, dsn: str, variable: str
) -> None:
    await publish_tokens(bridge, "run", 1)
    code, out, err = await cli("runs", "--json", env=cli_env(**{variable: dsn}))
    assert code == 0, err
    assert [json.loads(line)["run_id"] for line in out.splitlines()] == ["run"]


async def test_a_command_on_an_unreachable_server_fails_without_a_traceback() -> None:
    code, _, err = await cli("stats", "--dsn", "postgresql://postgres@127.0.0.1:1/nothing")
    assert code == 1
    assert err.startswith("pgbridge: ") and "Traceback" not in err


# -- runs -------------------------------------------------------------------------------------


async def test_runs_prints_a_table_of_runs_newest_activity_first(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await seed_agent_runs(bridge, dsn)
    code, out, err = await cli("runs", "--dsn", dsn)
    assert code == 0, err
    header, *rows = out.splitlines()
    assert header.split() == [
        "RUN",
        "STATUS",
        "EVENTS",
        "FIRST",
        "ID",
        "LAST",
        "ID",
        "STARTED",
        "ENDED",
        "DURATION",
    ]
    assert [row.split()[0] for row in rows[:4]] == ["run-live", "run-dead", "run-waiting-2", "run-42"]
    assert ANSI not in out
    by_run = {row.split()[0]: row for row in rows}
    assert "errored (dead letter)" in by_run["run-dead"]
    assert "10 (+40 deleted)" in by_run["run-trimmed"]
    assert "1m 30s" in by_run["run-42"]


def visible(terminal_output: str) -> list[str]:
    """The lines a terminal shows: colours removed, line ends as written."""
    return [re.sub(r"\x1b\[[0-9;]*m", "", line).rstrip() for line in terminal_output.splitlines()]


async def test_runs_on_an_80_column_terminal_fits_it_and_never_cuts_a_run_id(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await seed_agent_runs(bridge, dsn)
    long_id = "run-e90eff0c-5d2b-4bd0-9a36-8f2f0b1b2e7c"
    await bridge.publish(long_id, "token", 0)
    code, out, err = await terminal_session("runs", "--dsn", dsn, columns=80)
    assert code == 0, err
    lines = visible(out)
    assert all(len(line) <= 80 for line in lines), lines
    assert "…" not in out
    assert lines[0].split()[:3] == ["RUN", "STATUS", "EVENTS"]  # the rest as fits
    assert any(line.startswith(long_id + " ") for line in lines)
    firsts = {line.split()[0] for line in lines[1:] if line and not line.startswith(" ")}
    assert {"run-live", "run-dead", "run-42", "run-trimmed", long_id} <= firsts
    assert "--wide shows every column" in err


async def test_runs_wide_on_an_80_column_terminal_shows_every_column_whole(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await seed_agent_runs(bridge, dsn)
    out = await on_a_terminal("runs", "--dsn", dsn, "--wide", columns=80)
    lines = visible(out)
    assert lines[0].split() == [
        "RUN",
        "STATUS",
        "EVENTS",
        "FIRST",
        "ID",
        "LAST",
        "ID",
        "STARTED",
        "ENDED",
        "DURATION",
    ]
    assert "…" not in out and len(lines[0]) > 80  # one line per run: the terminal wraps it


async def test_runs_json_gives_one_object_per_run_with_the_views_columns(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 2)
    code, out, _ = await cli("runs", "--dsn", dsn, "--json")
    assert code == 0
    (run,) = [json.loads(line) for line in out.splitlines()]
    assert list(run) == [*RUNS_VIEW_COLUMNS, "fork_of", "events_inherited", "deleted", "expired"]
    streams_facts = (run["fork_of"], run["events_inherited"], run["deleted"], run["expired"])
    assert streams_facts == (None, 0, False, False)
    assert (run["status"], run["first_event_id"], run["last_event_id"]) == ("active", ids[0], ids[1])
    assert isinstance(run["duration"], float)


async def test_runs_status_and_since_select_the_runs(bridge: PostgresStreamBridge, dsn: str) -> None:
    await seed_agent_runs(bridge, dsn)
    code, out, _ = await cli("runs", "--dsn", dsn, "--json", "--status", "errored", "--since", "1d")
    assert code == 0
    assert [json.loads(line)["run_id"] for line in out.splitlines()] == ["run-dead", "run-errored-recent"]


async def test_runs_limit_caps_the_number_of_runs(bridge: PostgresStreamBridge, dsn: str) -> None:
    for i in range(3):
        await publish_tokens(bridge, f"run-{i}", 1)
    code, out, _ = await cli("runs", "--dsn", dsn, "--json", "--limit", "2")
    assert code == 0 and len(out.splitlines()) == 2


async def test_runs_says_so_when_no_run_matches(dsn: str) -> None:
    code, out, err = await cli("runs", "--dsn", dsn, "--status", "errored")
    assert (code, out) == (0, "")
    assert "no runs match" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--since", "soon"], "not a duration: 'soon'"),
        (["--status", "dead"], "invalid choice: 'dead'"),
        (["--limit", "0"], "must be 1 or more"),
    ],
)
async def test_runs_refuses_bad_options_with_exit_status_2(dsn: str, args: list[str], message: str) -> None:
    code, out, err = await cli("runs", "--dsn", dsn, *args)
    assert (code, out) == (2, "")
    assert message in err and "Traceback" not in err


# -- events -----------------------------------------------------------------------------------


async def test_events_prints_one_line_per_event_oldest_first(bridge: PostgresStreamBridge, dsn: str) -> None:
    ids = await publish_tokens(bridge, "run", 2)
    ids.append(await bridge.publish_terminal("run", StreamStatus.ERRORED, {"message": "boom"}))
    code, out, _ = await cli("events", "run", "--dsn", dsn)
    assert code == 0
    assert event_ids(out) == ids
    assert out.splitlines()[-1].endswith(f'{ids[-1]}  error  {{"message": "boom"}}')


async def test_events_json_gives_one_object_per_line_with_the_views_columns(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 1)
    ids.append(await bridge.publish_end("run"))
    code, out, _ = await cli("events", "run", "--dsn", dsn, "--json")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [list(e) for e in events] == [list(EVENTS_VIEW_COLUMNS)] * 2
    assert [(e["event_id"], e["seq"], e["event"], e["data"], e["terminal"]) for e in events] == [
        (ids[0], 1, "token", {"i": 0}, False),
        (ids[1], 2, "end", None, True),
    ]


async def test_events_from_an_id_starts_after_it_and_limit_caps_the_count(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 5)
    code, out, _ = await cli("events", "run", "--dsn", dsn, "--from", ids[1], "--limit", "2")
    assert code == 0 and event_ids(out) == ids[2:4]


async def test_events_from_a_deleted_id_says_how_many_were_deleted_and_lists_the_rest(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 5)
    await evict_prefix(dsn, "run", keep_from_seq=4)
    code, out, err = await cli("events", "run", "--dsn", dsn, "--from", ids[0])
    assert code == 0 and event_ids(out) == ids[3:]
    assert f"2 event(s) after {ids[0]} were deleted by retention" in err


async def test_events_are_coloured_on_a_terminal(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_tokens(bridge, "run", 1)
    await bridge.publish_end("run")
    out = await on_a_terminal("events", "run", "--dsn", dsn)
    assert ANSI in out
    assert "token" in out and "end" in out


async def test_events_are_plain_when_not_on_a_terminal(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_tokens(bridge, "run", 1)
    await bridge.publish_end("run")
    code, out, _ = await cli("events", "run", "--dsn", dsn)
    assert code == 0 and ANSI not in out


async def test_events_of_an_unknown_run_fail_with_exit_status_1(dsn: str) -> None:
    code, out, err = await cli("events", "nothing", "--dsn", dsn)
    assert (code, out) == (1, "")
    assert "no run 'nothing'" in err and "Traceback" not in err


@pytest.mark.parametrize("cursor", ["abc", "12", "1-2-3"])
async def test_events_from_a_malformed_id_fail_with_exit_status_2(
    bridge: PostgresStreamBridge, dsn: str, cursor: str
) -> None:
    await publish_tokens(bridge, "run", 1)
    code, out, err = await cli("events", "run", "--dsn", dsn, "--from", cursor)
    assert (code, out) == (2, "")
    assert f"not an event ID: {cursor!r}" in err and "Traceback" not in err


async def test_events_from_an_id_of_another_run_fail_with_exit_status_2(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_tokens(bridge, "run", 1)
    other = await publish_tokens(bridge, "other", 3)
    code, _, err = await cli("events", "run", "--dsn", dsn, "--from", other[2])
    assert code == 2
    assert f"{other[2]!r} is not an event ID of run 'run'" in err


# -- tail -------------------------------------------------------------------------------------


async def read_event_line(process: asyncio.subprocess.Process) -> str:
    assert process.stdout is not None
    line = (await asyncio.wait_for(process.stdout.readline(), 60)).decode()
    assert line, "tail stopped"
    return line.rstrip("\n")


async def test_tail_prints_the_stored_events_then_live_ones_and_ends_at_the_terminal(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 2)
    process = await start_cli("tail", "run", "--dsn", dsn)
    assert [event_ids(await read_event_line(process)) for _ in ids] == [[i] for i in ids]
    ids += await publish_tokens(bridge, "run", 2, start=2)
    ids.append(await bridge.publish_end("run"))
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert event_ids(out.decode()) == ids[2:]


async def test_tail_json_gives_one_object_per_line(bridge: PostgresStreamBridge, dsn: str) -> None:
    ids = await publish_tokens(bridge, "run", 1)
    ids.append(await bridge.publish_end("run"))
    code, out, _ = await cli("tail", "run", "--dsn", dsn, "--json")
    assert code == 0
    events = [json.loads(line) for line in out.splitlines()]
    assert [(e["event_id"], e["seq"], e["event"], e["data"]) for e in events] == [
        (ids[0], 1, "token", {"i": 0}),
        (ids[1], 2, "end", None),
    ]


async def test_tail_interrupted_prints_the_last_id_and_resuming_from_it_gives_exactly_the_rest(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    # Events keep coming while tail is interrupted: whatever it printed last is
    # what it names on stderr, and resuming from there misses and repeats nothing.
    published = await publish_tokens(bridge, "run", 3)

    async def keep_publishing() -> None:
        for i in range(3, 40):
            published.append(await bridge.publish("run", "token", {"i": i}))
            await asyncio.sleep(0.01)

    process = await start_cli("tail", "run", "--dsn", dsn)
    lines = [await read_event_line(process) for _ in range(3)]
    publisher = asyncio.create_task(keep_publishing())
    lines.append(await read_event_line(process))  # a live one
    process.send_signal(signal.SIGINT)
    out, err = await asyncio.wait_for(process.communicate(), 60)
    await publisher
    published.append(await bridge.publish_end("run"))
    assert process.returncode == 130
    printed = event_ids("\n".join(lines) + "\n" + out.decode())
    assert f"last event ID: {printed[-1]}" in err.decode() and "Traceback" not in err.decode()

    code, rest, _ = await cli("tail", "run", "--dsn", dsn, "--from", printed[-1])
    assert code == 0
    assert printed + event_ids(rest) == published


async def test_tail_interrupted_before_any_event_says_none_was_printed(dsn: str) -> None:
    process = await start_cli("tail", "later", "--dsn", dsn, "--wait")
    assert process.stderr is not None
    waiting = await asyncio.wait_for(process.stderr.readline(), 60)
    assert b"waiting for run 'later' to start" in waiting
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 130
    assert "last event ID: none" in err.decode()
    assert f"resume with: pgbridge tail later --dsn {shlex.quote(dsn)}\n" in err.decode()


async def test_tail_n_prints_the_last_n_events_then_follows(bridge: PostgresStreamBridge, dsn: str) -> None:
    ids = await publish_tokens(bridge, "run", 5)
    process = await start_cli("tail", "run", "-n", "2", "--dsn", dsn)
    printed = [event_ids(await read_event_line(process))[0] for _ in range(2)]
    assert printed == ids[3:]
    ids.append(await bridge.publish_end("run"))
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, err.decode()
    assert event_ids(out.decode()) == ids[5:]


@pytest.mark.parametrize(("lines", "first"), [("0", 4), ("1", 3), ("3", 1), ("10", 0)])
async def test_tail_n_of_an_ended_run_prints_its_last_n_events_and_stops(
    bridge: PostgresStreamBridge, dsn: str, lines: str, first: int
) -> None:
    ids = await publish_tokens(bridge, "run", 3)
    ids.append(await bridge.publish_end("run"))
    code, out, _ = await cli("tail", "run", "--lines", lines, "--dsn", dsn)
    assert code == 0
    assert event_ids(out) == ids[first:]


async def test_tail_interrupted_names_a_resume_command_with_the_options_given(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await migrate(dsn, schema="other")
    async with PostgresStreamBridge(dsn, schema="other") as other:
        ids = await publish_tokens(other, "run", 2)
    password_dsn = dsn.replace("://postgres@", "://postgres:hunter2@")
    process = await start_cli("tail", "run", "--dsn", password_dsn, "--schema", "other", "--json")
    for _ in ids:
        await read_event_line(process)
    process.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    shown = dsn.replace("://postgres@", "://postgres:***@")
    resume = f"resume with: pgbridge tail run --from {ids[1]} --dsn '{shown}' --schema other --json\n"
    assert resume in err.decode()
    assert "hunter2" not in err.decode()


async def test_tail_waits_for_a_run_that_has_not_started_when_asked(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    process = await start_cli("tail", "later", "--dsn", dsn, "--wait")
    ids = await publish_tokens(bridge, "later", 1)
    ids.append(await bridge.publish_end("later"))
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0 and event_ids(out.decode()) == ids


async def test_tail_of_an_unknown_run_fails_with_exit_status_1(dsn: str) -> None:
    code, _, err = await cli("tail", "nothing", "--dsn", dsn)
    assert code == 1
    assert "no run 'nothing'" in err and "--wait" in err and "Traceback" not in err


async def test_tail_from_a_malformed_id_fails_with_exit_status_2(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    await publish_tokens(bridge, "run", 1)
    code, _, err = await cli("tail", "run", "--dsn", dsn, "--from", "yesterday")
    assert code == 2
    assert "not an event ID: 'yesterday'" in err and "Traceback" not in err


async def test_tail_from_a_deleted_id_shows_the_gap_then_goes_on(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    ids = await publish_tokens(bridge, "run", 4)
    ids.append(await bridge.publish_end("run"))
    await evict_prefix(dsn, "run", keep_from_seq=4)
    code, out, _ = await cli("tail", "run", "--dsn", dsn, "--from", ids[0])
    assert code == 0
    gap, *lines = out.splitlines()
    assert gap == f"-- gap: 2 event(s) deleted by retention after {ids[0]}; going on from {ids[3]} --"
    assert event_ids("\n".join(lines)) == ids[3:]


async def test_tail_after_the_terminal_event_says_the_run_has_ended(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    end = await bridge.publish_end("run")
    code, out, err = await cli("tail", "run", "--dsn", dsn, "--from", end)
    assert (code, out) == (0, "")
    assert "has already ended" in err


# -- stats ------------------------------------------------------------------------------------


async def test_stats_prints_sizes_counts_the_oldest_event_and_the_last_retention_pass(
    bridge: PostgresStreamBridge, dsn: str
) -> None:
    oldest = await publish_tokens(bridge, "run", 3)
    await bridge.run_retention(RetentionPolicy(max_events_per_run=2))
    code, out, _ = await cli("stats", "--dsn", dsn)
    assert code == 0
    for table in ("run_events", "run_streams", "retention_last_pass"):
        assert re.search(rf"^{table}\s+\d+", out, re.MULTILINE)
    assert re.search(r"^active\s+1\s+2\s+3$", out, re.MULTILINE)
    assert f"oldest retained event: {oldest[1]} of run 'run'" in out
    assert "last retention pass:" in out and "events deleted 1," in out and "--max-events-per-run 2 " in out


async def test_stats_json_is_one_object(bridge: PostgresStreamBridge, dsn: str) -> None:
    await publish_tokens(bridge, "run", 1)
    code, out, _ = await cli("retention", "--dsn", dsn)
    assert code == 0
    code, out, _ = await cli("stats", "--dsn", dsn, "--json")
    assert code == 0
    stats = json.loads(out)
    assert stats["by_status"][0] == {
        "status": "active",
        "runs": 1,
        "events_retained": 1,
        "events_published": 1,
    }
    assert stats["last_retention_pass"]["passes"] == 1
    assert {t["name"] for t in stats["tables"]} == {"run_events", "run_streams", "retention_last_pass"}
