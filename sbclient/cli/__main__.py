"""``python -m sbclient.cli``: the ``sbaudit`` command without its console script."""

import sys

from sbclient.cli.entry import main

sys.exit(main())
