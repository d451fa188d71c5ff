"""``python -m pgbridge.sql FILE NAME [SCHEMA]``: print one statement whole, ready to paste into psql."""

import sys

from pgbridge.sql import DEFAULT_SCHEMA, load_statements

if len(sys.argv) not in (3, 4):
    sys.exit("usage: python -m pgbridge.sql FILE NAME [SCHEMA]  (e.g. streams.sql stream_head)")
_, filename, name, *rest = sys.argv
statements = load_statements(filename, rest[0] if rest else DEFAULT_SCHEMA)
if name not in statements:
    sys.exit(f"{filename} has no statement {name!r}: {', '.join(statements)}")
print(statements[name] + ";")
