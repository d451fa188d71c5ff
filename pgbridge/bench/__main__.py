"""``python -m pgbridge.bench``: the same as ``pgbridge bench``."""

import sys

from pgbridge.bench.run import main

sys.exit(main())
