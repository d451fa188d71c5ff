"""A catalog snapshot of one schema: every object a migration can create, as sorted text lines.

Two databases whose snapshots of a schema are equal have the same tables,
columns (types, defaults, nullability, collations, order), constraints,
indexes, functions (whole definitions, bodies byte for byte, settings,
owners and grants), triggers, views, sequences, types, rules, policies,
comments and ACLs there, and the same ``alembic_version`` rows.

Run as a script to print (or save) the snapshot of a database::

    python -m tests.catalog postgresql://postgres@127.0.0.1/db [--schema NAME] [--out FILE]
"""

from __future__ import annotations

import argparse
import asyncio
import sys

import asyncpg

#: Each query takes the schema name as $1 and returns one text column, ``line``.
_QUERIES: dict[str, str] = {
    "schema": """
        SELECT format('schema %s owner=%s acl=%s comment=%s', n.nspname,
                      pg_get_userbyid(n.nspowner), n.nspacl::text,
                      quote_nullable(obj_description(n.oid, 'pg_namespace'))) AS line
        FROM pg_namespace AS n WHERE n.nspname = $1
    """,
    "relations": """
        SELECT format('relation %s kind=%s persistence=%s owner=%s options=%s acl=%s rls=%s/%s comment=%s',
                      c.relname, c.relkind, c.relpersistence, pg_get_userbyid(c.relowner),
                      c.reloptions::text, c.relacl::text, c.relrowsecurity, c.relforcerowsecurity,
                      quote_nullable(obj_description(c.oid, 'pg_class'))) AS line
        FROM pg_class AS c
        WHERE c.relnamespace = quote_ident($1)::regnamespace AND c.relkind NOT IN ('i', 'I', 't')
    """,
    "columns": """
        SELECT format('column %s.%s #%s %s not_null=%s default=%s collation=%s identity=%s '
                      'generated=%s acl=%s comment=%s',
                      c.relname, a.attname,
                      row_number() OVER (PARTITION BY c.oid ORDER BY a.attnum),
                      format_type(a.atttypid, a.atttypmod), a.attnotnull,
                      quote_nullable(pg_get_expr(d.adbin, d.adrelid)),
                      CASE WHEN a.attcollation <> t.typcollation THEN a.attcollation::regcollation::text END,
                      a.attidentity, a.attgenerated, a.attacl::text,
                      quote_nullable(col_description(c.oid, a.attnum))) AS line
        FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid
        JOIN pg_type AS t ON t.oid = a.atttypid
        LEFT JOIN pg_attrdef AS d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE c.relnamespace = quote_ident($1)::regnamespace AND c.relkind NOT IN ('i', 'I', 't')
          AND a.attnum > 0 AND NOT a.attisdropped
    """,
    "constraints": """
        SELECT format('constraint %s on %s type=%s deferrable=%s/%s validated=%s: %s comment=%s',
                      k.conname, coalesce(c.relname, k.contypid::regtype::text), k.contype,
                      k.condeferrable, k.condeferred, k.convalidated, pg_get_constraintdef(k.oid),
                      quote_nullable(obj_description(k.oid, 'pg_constraint'))) AS line
        FROM pg_constraint AS k
        LEFT JOIN pg_class AS c ON c.oid = k.conrelid
        WHERE k.connamespace = quote_ident($1)::regnamespace
    """,
    "indexes": """
        SELECT format('index %s: %s comment=%s', c.relname, pg_get_indexdef(c.oid),
                      quote_nullable(obj_description(c.oid, 'pg_class'))) AS line
        FROM pg_class AS c
        WHERE c.relnamespace = quote_ident($1)::regnamespace AND c.relkind IN ('i', 'I')
    """,
    "functions": """
        SELECT format(E'function %s(%s) kind=%s owner=%s acl=%s comment=%s\n%s',
                      p.proname, pg_get_function_identity_arguments(p.oid), p.prokind,
                      pg_get_userbyid(p.proowner), p.proacl::text,
                      quote_nullable(obj_description(p.oid, 'pg_proc')),
                      CASE WHEN p.prokind IN ('f', 'p') THEN pg_get_functiondef(p.oid) END) AS line
        FROM pg_proc AS p
        WHERE p.pronamespace = quote_ident($1)::regnamespace
    """,
    "triggers": """
        SELECT format('trigger %s on %s enabled=%s: %s comment=%s', t.tgname, c.relname, t.tgenabled,
                      pg_get_triggerdef(t.oid),
                      quote_nullable(obj_description(t.oid, 'pg_trigger'))) AS line
        FROM pg_trigger AS t
        JOIN pg_class AS c ON c.oid = t.tgrelid
        WHERE c.relnamespace = quote_ident($1)::regnamespace AND NOT t.tgisinternal
    """,
    "views": """
        SELECT format(E'view %s check_option=%s\n%s', c.relname, c.reloptions::text,
                      pg_get_viewdef(c.oid, true)) AS line
        FROM pg_class AS c
        WHERE c.relnamespace = quote_ident($1)::regnamespace AND c.relkind IN ('v', 'm')
    """,
    "sequences": """
        SELECT format('sequence %s %s start=%s increment=%s min=%s max=%s cache=%s cycle=%s owned_by=%s',
                      c.relname, s.seqtypid::regtype, s.seqstart, s.seqincrement, s.seqmin, s.seqmax,
                      s.seqcache, s.seqcycle,
                      (SELECT d.refobjid::regclass || '.' || a.attname FROM pg_depend AS d
                       JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
                       WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid
                         AND d.deptype IN ('a', 'i'))) AS line
        FROM pg_sequence AS s
        JOIN pg_class AS c ON c.oid = s.seqrelid
        WHERE c.relnamespace = quote_ident($1)::regnamespace
    """,
    "types": """
        SELECT format('type %s kind=%s owner=%s acl=%s base=%s enum=%s comment=%s',
                      t.typname, t.typtype, pg_get_userbyid(t.typowner), t.typacl::text,
                      CASE WHEN t.typtype = 'd' THEN format_type(t.typbasetype, t.typtypmod) END,
                      (SELECT string_agg(e.enumlabel, ',' ORDER BY e.enumsortorder)
                       FROM pg_enum AS e WHERE e.enumtypid = t.oid),
                      quote_nullable(obj_description(t.oid, 'pg_type'))) AS line
        FROM pg_type AS t
        WHERE t.typnamespace = quote_ident($1)::regnamespace AND t.typcategory <> 'A'
          AND (t.typrelid = 0 OR EXISTS (SELECT 1 FROM pg_class AS c WHERE c.oid = t.typrelid AND c.relkind = 'c'))
    """,
    "rules": """
        SELECT format('rule %s on %s: %s', rulename, tablename, definition) AS line
        FROM pg_rules WHERE schemaname = $1
    """,
    "policies": """
        SELECT format('policy %s on %s %s roles=%s using=%s check=%s', policyname, tablename, cmd,
                      roles::text, qual, with_check) AS line
        FROM pg_policies WHERE schemaname = $1
    """,
}


async def snapshot(conn: asyncpg.Connection, schema: str = "public") -> list[str]:
    """The catalog of *schema* as sorted lines (see the module docstring).

    Runs with an empty ``search_path`` inside a rolled-back transaction, so
    every definition is rendered schema-qualified whatever the connection's
    settings are.
    """
    lines: list[str] = []
    transaction = conn.transaction()
    await transaction.start()
    try:
        await conn.execute("SET LOCAL search_path = ''")
        for category, query in _QUERIES.items():
            rows = await conn.fetch(query, schema)
            lines.extend(sorted(f"[{category}] {row['line']}" for row in rows))
        if await conn.fetchval("SELECT to_regclass(quote_ident($1) || '.alembic_version')", schema):
            versions = await conn.fetch(
                f"SELECT version_num FROM {_quote(schema)}.alembic_version ORDER BY version_num"
            )
            lines.extend(f"[alembic_version] {row['version_num']}" for row in versions)
    finally:
        await transaction.rollback()
    return lines


async def snapshot_of(dsn: str, schema: str = "public") -> str:
    """:func:`snapshot` of the database at *dsn*, as one text."""
    conn = await asyncpg.connect(dsn)
    try:
        return "\n".join(await snapshot(conn, schema)) + "\n"
    finally:
        await conn.close()


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dsn")
    parser.add_argument("--schema", default="public")
    parser.add_argument("--out", help="write here instead of standard output")
    args = parser.parse_args()
    text = asyncio.run(snapshot_of(args.dsn, args.schema))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as out:
            out.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
