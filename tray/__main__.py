"""``python -m jobtunnel.tray``: the same as ``jobtunnel tray``."""

import sys

from .app import main

sys.exit(main())
