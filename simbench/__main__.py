"""``python -m simbench ...`` is the ``simbench`` command."""

import sys

from .cli import main

sys.exit(main())
