"""The `forgetting` command: `forgetting report <sweep_dir> ...` (more subcommands can be added here)."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from . import env

    env.setup()  # offline W&B, caches inside outputs/
    from . import report

    parser = argparse.ArgumentParser(prog="forgetting", description="Safety forgetting under math fine-tuning")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report.add_arguments(sub.add_parser("report", help="turn a sweep directory into tables and figures",
                                        description=report.__doc__.split("\n")[0]))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
