"""``python -m jobtunnel.daemon`` is the same as the ``jobtunnel`` command."""

import sys

from jobtunnel.daemon.cli import main

sys.exit(main())
