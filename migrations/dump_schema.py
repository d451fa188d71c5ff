"""Regenerate migrations/schema.sql: the head schema as DDL, read back from a migrated database.

    python migrations/dump_schema.py                  # on an embedded PostgreSQL
    python migrations/dump_schema.py --dsn URI        # another server (a scratch database is made on it)
    python migrations/dump_schema.py --check          # exit 1 (and show the diff) if schema.sql is stale

Migrates a scratch database to head (schema ``public``) and writes what the
catalog holds, in an order psql can run on an empty database: each table
with its constraints and indexes, then the functions and their grants, the
triggers, the views, and the ``alembic_version`` row. Object kinds the
schema does not use yet (sequences, types, rules, policies, comments on
other objects) stop it with an error rather than being left out: extend it
when a revision adds one. tests/db/test_migrations.py checks that the file
builds the same catalog as the migrations.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import difflib
import sys
from pathlib import Path

import asyncpg

SCHEMA_SQL = Path(__file__).resolve().with_name("schema.sql")
SCHEMA = "public"

HEADER = """\
-- pgbridge's schema at head (revision {head}) in schema public: what
-- `pgbridge migrate` leaves in an empty database, as DDL.
--
-- GENERATED from a migrated database, do not edit. After adding a revision:
--     python migrations/dump_schema.py [--dsn postgresql://...]
-- (`--check` only compares). tests/db/test_migrations.py runs this file on an
-- empty database and requires the same catalog as a migration to head.
-- The revisions in migrations/versions remain the source of truth.
--
-- Pasteable into psql on an empty database (psql -v ON_ERROR_STOP=1 -f schema.sql);
-- the alembic_version row makes `pgbridge migrate` find it up to date.

BEGIN;

-- Functions come in the order the revisions created them, so a SQL function may call
-- one created after it: bodies are checked when first run, not now (as pg_dump does).
SET LOCAL check_function_bodies = off;
"""


class Unsupported(Exception):
    """The schema holds an object kind this script does not render yet."""


async def _fetch(conn: asyncpg.Connection, query: str) -> list[asyncpg.Record]:
    return list(await conn.fetch(query, SCHEMA))


def _table_order(tables: list[asyncpg.Record], references: dict[int, set[int]]) -> list[asyncpg.Record]:
    """Tables in creation (oid) order, moved after the tables their foreign keys reference."""
    ordered: list[asyncpg.Record] = []
    placed: set[int] = set()
    pending = sorted(tables, key=lambda t: t["oid"])
    while pending:
        ready = next(t for t in pending if references.get(t["oid"], set()) <= placed | {t["oid"]})
        ordered.append(ready)
        placed.add(ready["oid"])
        pending.remove(ready)
    return ordered


async def render(conn: asyncpg.Connection) -> str:
    """The DDL of schema public of the database behind *conn*."""
    await conn.execute("SET search_path = ''")  # every name comes out schema-qualified
    for kind, query in {
        "sequence": "SELECT 1 FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'S'",
        "materialized view or foreign table": (
            "SELECT 1 FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind IN ('m', 'f', 'p')"
        ),
        "type": (
            "SELECT 1 FROM pg_type AS t WHERE t.typnamespace = $1::regnamespace AND t.typcategory <> 'A'"
            " AND (t.typrelid = 0 OR (SELECT relkind FROM pg_class WHERE oid = t.typrelid) = 'c')"
        ),
        "rule": "SELECT 1 FROM pg_rules WHERE schemaname = $1",
        "policy": "SELECT 1 FROM pg_policies WHERE schemaname = $1",
        "identity or generated column": (
            "SELECT 1 FROM pg_attribute AS a JOIN pg_class AS c ON c.oid = a.attrelid"
            " WHERE c.relnamespace = $1::regnamespace AND (a.attidentity <> '' OR a.attgenerated <> '')"
        ),
        "view option": (
            "SELECT 1 FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'v'"
            " AND reloptions IS NOT NULL"
        ),
    }.items():
        if await _fetch(conn, query):
            raise Unsupported(f"schema {SCHEMA} has a {kind}: teach migrations/dump_schema.py to write it")

    tables = await _fetch(
        conn,
        "SELECT oid, oid::regclass::text AS name, relowner, relacl::text[] AS acl, reloptions"
        " FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'r'",
    )
    columns = await _fetch(
        conn,
        """
        SELECT a.attrelid AS table_oid, quote_ident(a.attname) AS name,
               format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull AS not_null,
               pg_get_expr(d.adbin, d.adrelid) AS default,
               CASE WHEN a.attcollation <> t.typcollation
                    THEN a.attcollation::regcollation::text END AS collation
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_type AS t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = $1::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attrelid, a.attnum
        """,
    )
    constraints = await _fetch(
        conn,
        """
        SELECT k.conrelid AS table_oid, k.confrelid AS references_oid, quote_ident(k.conname) AS name,
               pg_get_constraintdef(k.oid) AS definition
        FROM pg_constraint AS k
        WHERE k.connamespace = $1::regnamespace AND k.conrelid <> 0
        ORDER BY k.conrelid, array_position(ARRAY['p', 'u', 'x', 'c', 'f']::"char"[], k.contype), k.conname
        """,
    )
    indexes = await _fetch(
        conn,
        """
        SELECT i.indrelid AS table_oid, pg_get_indexdef(i.indexrelid) AS definition
        FROM pg_index AS i
        JOIN pg_class AS c ON c.oid = i.indexrelid
        WHERE c.relnamespace = $1::regnamespace
          AND NOT EXISTS (SELECT 1 FROM pg_constraint AS k
                          WHERE k.conindid = i.indexrelid AND k.contype IN ('p', 'u', 'x'))
        ORDER BY c.relname
        """,
    )
    functions = await _fetch(
        conn,
        """
        SELECT p.oid::regprocedure::text AS signature, p.proowner AS owner,
               pg_get_functiondef(p.oid) AS definition,
               (SELECT array_agg(ARRAY[a.grantee::regrole::text, a.privilege_type]
                                 ORDER BY a.grantee, a.privilege_type)
                FROM aclexplode(p.proacl) AS a WHERE a.grantee <> 0) AS grants,
               p.proacl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) AS a
                                                    WHERE a.grantee = 0) AS revoked_from_public,
               p.proacl IS NOT NULL AND NOT EXISTS (SELECT 1 FROM aclexplode(p.proacl) AS a
                                                    WHERE a.grantee = p.proowner) AS revoked_from_owner
        FROM pg_proc AS p
        WHERE p.pronamespace = $1::regnamespace
        ORDER BY p.oid
        """,
    )
    triggers = await _fetch(
        conn,
        """
        SELECT pg_get_triggerdef(t.oid) AS definition
        FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
        WHERE c.relnamespace = $1::regnamespace AND NOT t.tgisinternal
        ORDER BY c.relname, t.tgname
        """,
    )
    views = await _fetch(
        conn,
        "SELECT oid::regclass::text AS name, pg_get_viewdef(oid, true) AS definition, relacl::text[] AS acl"
        " FROM pg_class WHERE relnamespace = $1::regnamespace AND relkind = 'v' ORDER BY oid",
    )
    comments = await _fetch(
        conn,
        """
        SELECT pg_describe_object(d.classoid, d.objoid, d.objsubid) AS object, d.description
        FROM pg_description AS d
        WHERE (d.classoid = 'pg_class'::regclass
               AND d.objoid IN (SELECT oid FROM pg_class WHERE relnamespace = $1::regnamespace))
           OR (d.classoid = 'pg_proc'::regclass
               AND d.objoid IN (SELECT oid FROM pg_proc WHERE pronamespace = $1::regnamespace))
           OR (d.classoid IN ('pg_constraint'::regclass, 'pg_trigger'::regclass)
               AND d.objoid IN (SELECT k.oid FROM pg_constraint AS k WHERE k.connamespace = $1::regnamespace
                                UNION ALL
                                SELECT t.oid FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
                                WHERE c.relnamespace = $1::regnamespace))
        """,
    )
    if comments:
        raise Unsupported(
            f"comments on {[c['object'] for c in comments]}: teach dump_schema.py to write them"
        )
    for relation in [*tables, *views]:  # a table's storage options are written below; a view's stop it above
        if relation["acl"] is not None:
            raise Unsupported(f"grants on {relation['name']}: teach dump_schema.py")
    head = await conn.fetchval("SELECT version_num FROM public.alembic_version")

    out = [HEADER.format(head=head)]
    references: dict[int, set[int]] = {}
    for k in constraints:
        if k["references_oid"]:
            references.setdefault(k["table_oid"], set()).add(k["references_oid"])
    for table in _table_order(tables, references):
        lines = []
        for c in (c for c in columns if c["table_oid"] == table["oid"]):
            line = f"    {c['name']} {c['type']}"
            if c["collation"]:
                line += f" COLLATE {c['collation']}"
            if c["default"] is not None:
                line += f" DEFAULT {c['default']}"
            if c["not_null"]:
                line += " NOT NULL"
            lines.append(line)
        lines += [
            f"    CONSTRAINT {k['name']} {k['definition']}"
            for k in constraints
            if k["table_oid"] == table["oid"]
        ]
        storage = f" WITH ({', '.join(table['reloptions'])})" if table["reloptions"] else ""
        out.append(f"CREATE TABLE {table['name']} (\n" + ",\n".join(lines) + f"\n){storage};\n")
        out += [f"{i['definition']};\n" for i in indexes if i["table_oid"] == table["oid"]]
    for f in functions:
        if f["revoked_from_owner"]:
            raise Unsupported(f"{f['signature']}: its owner's EXECUTE is revoked")
        out.append(f["definition"].rstrip("\n") + ";\n")
        if f["revoked_from_public"]:
            out.append(f"REVOKE ALL ON FUNCTION {f['signature']} FROM PUBLIC;\n")
        owner = await conn.fetchval("SELECT $1::oid::regrole::text", f["owner"])
        for grantee, privilege in f["grants"] or []:
            if grantee != owner:
                out.append(f"GRANT {privilege} ON FUNCTION {f['signature']} TO {grantee};\n")
    out += [f"{t['definition']};\n" for t in triggers]
    for v in views:
        out.append(f"CREATE VIEW {v['name']} AS\n{v['definition']}\n")
    out.append(f"INSERT INTO public.alembic_version (version_num) VALUES ('{head}');\n")
    out.append("COMMIT;\n")
    return "\n".join(out)


async def dump(admin_dsn: str | None) -> str:
    from pgbridge.bench.servers import embedded_server, scratch_database

    with contextlib.ExitStack() as servers:
        admin = admin_dsn or servers.enter_context(embedded_server())
        async with scratch_database(admin) as dsn:
            conn = await asyncpg.connect(dsn)
            try:
                return await render(conn)
            finally:
                await conn.close()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dsn", help="a server to make the scratch database on (default: an embedded one)")
    parser.add_argument("--check", action="store_true", help="compare with schema.sql instead of writing it")
    args = parser.parse_args()
    text = asyncio.run(dump(args.dsn))
    if args.check:
        current = SCHEMA_SQL.read_text(encoding="utf-8") if SCHEMA_SQL.exists() else ""
        if current != text:
            sys.stdout.writelines(
                difflib.unified_diff(
                    current.splitlines(keepends=True), text.splitlines(keepends=True), "schema.sql", "head"
                )
            )
            print("migrations/schema.sql is stale: run python migrations/dump_schema.py", file=sys.stderr)
            return 1
        print("migrations/schema.sql is up to date")
        return 0
    SCHEMA_SQL.write_text(text, encoding="utf-8")
    print(f"wrote {SCHEMA_SQL}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
