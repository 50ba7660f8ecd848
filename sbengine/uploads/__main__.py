"""``python -m sbengine.uploads``: the upload validator program (check.py); one JSON request on stdin."""

import sys

from sbengine.uploads.check import main

sys.exit(main())
