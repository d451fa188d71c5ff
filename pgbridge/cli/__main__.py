"""``python -m pgbridge.cli``: the same as the ``pgbridge`` command."""

import sys

from pgbridge.cli.main import main

sys.exit(main())
