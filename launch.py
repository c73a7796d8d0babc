"""Entry point: compose the Hydra config and run one job (or a sweep with -m).

    python launch.py                                   # one run, offline tiny preset
    python launch.py -m lr=1e-4,2e-4 epochs=1,2,3      # the card's sweep
    forgetting report outputs/sweeps/<dir>             # trade-off curve

Stages, one hop away: forgetting/run.py calls models → data (user rows, poison) → memory (safety memory)
→ train (methods/: the method's hooks in TRL's SFTTrainer; curves: per-epoch eval) → evaluate → tracking.
"""
import sys

from forgetting import env

env.setup()

import hydra  # noqa: E402

from forgetting.config import register  # noqa: E402
from forgetting.errors import ConfigError  # noqa: E402

register()


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg):
    from forgetting import attempts, run

    try:
        return run.main(cfg)
    except attempts.Interrupted as e:  # recorded in metrics.json; stop the sweep too, with the shell's code
        print(f"interrupted: {e.signame} (recorded in the run's metrics.json; rerun to redo it)", file=sys.stderr)
        sys.exit(130 if e.signame == "SIGINT" else 143)
    except ConfigError as e:  # bad input: one line, before any model loads
        print(f"error: {e}", file=sys.stderr)
        if run.in_multirun():  # recorded for this job; raising (not exiting) lets the sweep go on
            run.record_failure(cfg, e)
            raise
        sys.exit(2)


if __name__ == "__main__":
    main()
