"""The SQL pgbridge runs, and the facts about its schema every layer shares.

Statements live in the ``.sql`` files of this package, each under a named
header; the loader fills in the PostgreSQL schema so every statement stays
schema-qualified (safe behind PgBouncer, no ``search_path`` games). This
module imports nothing heavier than the standard library: ``import pgbridge``
must not load SQLAlchemy, which only migrating needs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from functools import cache
from importlib.resources import files
from typing import Final, TypeVar

_Q = TypeVar("_Q")

#: The alembic revision this code expects; ``start()`` refuses any other.
SCHEMA_REVISION: Final = "0013"

#: The PostgreSQL schema a bridge uses unless told otherwise.
DEFAULT_SCHEMA: Final = "public"

#: Status values stored in ``run_streams.status``.
RUN_STATUSES: Final = ("active", "awaiting_input", "ended", "cancelled", "errored")


def quote_identifier(name: str) -> str:
    """Quote *name* as a PostgreSQL identifier."""
    if not name or "\x00" in name:
        raise ValueError(f"not a valid PostgreSQL identifier: {name!r}")
    return '"' + name.replace('"', '""') + '"'


#: Where each statement's text is written for the schema it runs in.
SCHEMA_PLACEHOLDER: Final = "{schema}"

_NAME_HEADER = re.compile(r"^--\s*name:\s*(\w+)\s*$")


@dataclass(frozen=True, slots=True)
class Statement:
    """One named statement of a ``.sql`` file: its text and what its header says of it."""

    name: str
    description: str
    text: str


#: The file of SQL pieces that several statements share (see :func:`with_fragments`).
FRAGMENTS_FILE: Final = "fragments.sql"


@cache
def statements_of(filename: str) -> tuple[Statement, ...]:
    """The named statements of ``pgbridge/sql/<filename>``, in file order, fragments put in, schema not."""
    found = parse_statements(files(__package__).joinpath(filename).read_text(encoding="utf-8"), filename)
    if filename == FRAGMENTS_FILE:
        return found
    fragments = {f.name: f.text for f in statements_of(FRAGMENTS_FILE)}
    return tuple(Statement(s.name, s.description, with_fragments(s.text, fragments)) for s in found)


def with_fragments(text: str, fragments: dict[str, str]) -> str:
    """*text* with each ``{name}`` of a fragment replaced by the fragment's text.

    A fragment is a piece of SQL several statements share (the CTEs that walk a
    Durable Streams fork's chain of sources, a stream head's columns), written
    once in ``fragments.sql``. Only the names of fragments are replaced, so
    ``{schema}`` and any other brace in the SQL are left alone.
    """
    for name, fragment in fragments.items():
        text = text.replace("{" + name + "}", fragment)
    return text


def parse_statements(source: str, filename: str) -> tuple[Statement, ...]:
    """The named statements of the SQL text *source* (from *filename*, for errors).

    A statement starts at a ``-- name: <name>`` line; the ``--`` lines right
    after it are its description (what it does, its parameters, the index and
    locks it relies on); its text runs to the next header. A trailing ``;`` is
    dropped, so each text is one statement as asyncpg prepares it.
    """
    found: list[Statement] = []
    name: str | None = None
    description: list[str] = []
    body: list[str] = []

    def close() -> None:
        if name is not None:
            text = "\n".join(body).strip().removesuffix(";").rstrip()
            if not text:
                raise ValueError(f"{filename}: statement {name!r} has no text")
            found.append(Statement(name, " ".join(description), text))

    for line in source.splitlines():
        header = _NAME_HEADER.match(line)
        if header is not None:
            close()
            name, description, body = header.group(1), [], []
        elif name is not None and not body and line.startswith("--"):
            description.append(line.removeprefix("--").strip())
        elif name is not None and (body or line.strip()):
            body.append(line)
    close()
    names = [s.name for s in found]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise ValueError(f"{filename}: statements named twice: {', '.join(duplicated)}")
    return tuple(found)


def load_statements(filename: str, schema: str) -> dict[str, str]:
    """The statements of ``pgbridge/sql/<filename>`` by name, qualified with *schema*."""
    quoted = quote_identifier(schema)
    return {s.name: s.text.replace(SCHEMA_PLACEHOLDER, quoted) for s in statements_of(filename)}


def load_into(cls: type[_Q], filename: str, schema: str, /, **more: object) -> _Q:
    """An instance of the dataclass *cls* whose ``str`` fields are the statements of *filename*.

    The dataclass names the statements (typed attributes for the code that
    runs them); the file holds their text. Every field not given in *more*
    must have exactly one statement of that name, and every statement a
    field: a statement added to the file but not to the class, or the other
    way round, fails at once rather than at first use.
    """
    texts = load_statements(filename, schema)
    wanted = {f.name for f in fields(cls)} - set(more)  # type: ignore[arg-type]
    if set(texts) != wanted:
        missing, unused = sorted(wanted - set(texts)), sorted(set(texts) - wanted)
        raise ValueError(f"{filename} does not match {cls.__name__}: missing {missing}, undeclared {unused}")
    return cls(**texts, **more)
