"""python -m forgetting.report <sweep_dir> ... (see forgetting/report/__init__.py)."""
import sys

from . import main

sys.exit(main())
