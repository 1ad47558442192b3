"""`python -m mar_builder`: the build command line (see cli.py)."""

import sys

from .cli import main

sys.exit(main())
