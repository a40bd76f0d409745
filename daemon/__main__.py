"""``python -m jobtunnel.daemon`` is the same as the ``jobtunnel`` command."""

import sys

from .cli import main

sys.exit(main())
