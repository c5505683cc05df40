"""``python -m ablate.report <sweep_dir>``."""

import sys

from . import main

sys.exit(main())
