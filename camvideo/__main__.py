"""``python -m camvideo`` is the ``camvideo`` command."""

import sys

from .cli import main

sys.exit(main())
