"""``python -m jaxnst``: the command line, as the ``jaxnst`` script."""

import sys

from jaxnst.cli import main

sys.exit(main())
