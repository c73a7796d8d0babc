"""The `forgetting` command (also `python -m forgetting`): `forgetting report <sweep_dir> ...`,
`forgetting download <overrides> [--dry-run]`, `forgetting grade --task T FILE.jsonl`."""
from __future__ import annotations

import argparse
import sys
from typing import Sequence


def main(argv: Sequence[str] | None = None) -> int:
    from . import env

    env.setup()  # offline W&B, its caches inside outputs/ (the hub: forgetting/hub.py)
    from . import download, grade, report

    parser = argparse.ArgumentParser(prog="forgetting", description="Safety forgetting under fine-tuning")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    report.add_arguments(sub.add_parser("report", help="turn a sweep directory into tables and figures",
                                        description=report.__doc__.split("\n")[0]))
    download.add_arguments(sub.add_parser("download", help="fetch what a config needs from the hub into your cache",
                                          description=download.__doc__.split("\n\n")[0]))
    grade.add_arguments(sub.add_parser("grade", help="grade generations made elsewhere with a task's grader",
                                       description=grade.__doc__.split("\n\n")[0]))
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
