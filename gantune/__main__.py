"""python -m gantune: the command line (gantune.cli)."""

import sys

from .cli import main

sys.exit(main())
