"""``python -m masterkey ...``: the same command line as ``masterkey ...``."""

import sys

from .cli import main

sys.exit(main())
