"""`python -m adrlab ...` is the `adrlab` command."""

import sys

from adrlab.cli import main

sys.exit(main())
