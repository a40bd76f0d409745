"""``python -m jobtunnel.tray``: the same as ``jobtunnel tray``."""

import sys

from jobtunnel.tray.app import main

sys.exit(main())
