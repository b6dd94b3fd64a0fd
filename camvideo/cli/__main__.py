"""``python -m camvideo.cli`` is the ``camvideo`` command."""

import sys

from .main import main

sys.exit(main())
