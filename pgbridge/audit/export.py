"""The auditor's export: a run as JSON lines, checkable offline (pure: no database).

Line 1 is the header: the chain's construction, the run, its retained range,
the hash the first exported event chains from, and the newest hash the run
row recorded. Every other line is one event with its ID, the exact stored
JSON text of its data (``data_text``, what the hash covers) and its hash::

    {"format": "pgbridge-chain-v1", "run_id": "run-42", "status": "ended", "first_seq": 1,
     "last_seq": 3, "start_hash": "00…", "last_hash": "9f…"}
    {"id": "1764000000123-1", "seq": 1, "created_ms": 1764000000123, "event": "token",
     "data_text": "{\\"text\\":\\"Hel\\"}", "hash": "5c…"}

:func:`verify_export` recomputes the chain from the lines alone. An
auditor who kept the ``last_hash`` of an earlier export (or any published
head) compares it too: a chain rewritten wholesale by someone who could
recompute every hash still changes the head.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from pgbridge.audit.chain import CHAIN_VERSION, GENESIS, ChainChecker, ChainHead, ChainReport, ChainRow
from pgbridge.ids import format_event_id


def header_line(run_id: str, status: str, head: ChainHead) -> str:
    return _line(
        {
            "format": CHAIN_VERSION,
            "run_id": run_id,
            "status": status,
            "first_seq": head.first_seq,
            "last_seq": head.last_seq,
            "start_hash": head.start_hash.hex(),
            "last_hash": head.last_hash.hex() if head.last_hash is not None else None,
        }
    )


def event_line(row: ChainRow) -> str:
    return _line(
        {
            "id": format_event_id(row.created_ms, row.seq),
            "seq": row.seq,
            "created_ms": row.created_ms,
            "event": row.event,
            "data_text": row.data,
            "hash": row.hash.hex(),
        }
    )


def verify_export(lines: Iterable[str]) -> ChainReport:
    """Check an export from its lines alone (streamed: constant memory)."""
    iterator = iter(lines)
    first = next(iterator, None)
    if first is None:
        raise ValueError("the export is empty: no header line")
    header = _parse(first, 1)
    if header.get("format") != CHAIN_VERSION:
        found = header.get("format")
        said = "its header names no format" if found is None else f"its header says format {found!r}"
        raise ValueError(f"not a {CHAIN_VERSION} export: {said}")
    head = ChainHead(
        first_seq=int(header["first_seq"]),
        last_seq=int(header["last_seq"]),
        start_hash=bytes.fromhex(header["start_hash"]) if header.get("start_hash") else GENESIS,
        last_hash=bytes.fromhex(header["last_hash"]) if header.get("last_hash") else None,
    )
    checker = ChainChecker(str(header["run_id"]), head)
    for number, line in enumerate(iterator, start=2):
        if not line.strip():
            continue
        event = _parse(line, number)
        row = ChainRow(
            seq=int(event["seq"]),
            created_ms=int(event["created_ms"]),
            event=str(event["event"]),
            data=str(event["data_text"]),
            hash=bytes.fromhex(event["hash"]),
        )
        failed = checker.push(row)
        if failed is not None:
            return failed
    return checker.finish()


def _line(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")) + "\n"


def _parse(line: str, number: int) -> dict[str, Any]:
    try:
        value = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"line {number} is not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ValueError(f"line {number} is not a JSON object")
    return value
