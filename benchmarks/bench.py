"""pgbridge against Redis Streams, an in-process bridge and PostgreSQL's own ceilings.

    python benchmarks/bench.py --quick              # a smoke run, embedded PostgreSQL, well under a minute
    python benchmarks/bench.py --out DIR            # the full run: results.md, results.json, results.png
    python benchmarks/bench.py --dsn URI            # another server (a scratch database is made on it)

The same as ``pgbridge bench`` and ``python -m pgbridge.bench``: the harness
lives in ``pgbridge/bench/`` so that it ships in the wheel. Redis Streams is
measured when Redis answers at ``$REDIS_URL`` (default
``redis://127.0.0.1:6379``) and skipped otherwise.
"""

from __future__ import annotations

import sys

from pgbridge.bench.run import main

if __name__ == "__main__":
    sys.exit(main())
