"""`python -m forgetting <command>`: the same as the `forgetting` command."""
import sys

from .cli import main

sys.exit(main())
