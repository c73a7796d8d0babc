"""Turn a sweep directory (Hydra multirun output) into tables and pictures.

    report(sweep_dir, x="math/accuracy", y="safety/rate", out_dir=None) -> {file name: path}
    python -m forgetting.report <sweep_dir> [--x METRIC] [--y METRIC] [--minimize-x] [--wandb]

Writes, by default into <sweep_dir>/report/:
  tradeoff.csv            one row per run (ok and failed) plus one for the base model; every rate
                          column has <col>_lo / <col>_hi Wilson 95 % interval columns
  tradeoff_by_config.csv  runs that differ only in `seed` aggregated: mean, std, n seeds
  tradeoff.png            safety vs math accuracy and vs math reference NLL, base model as a star
  pareto.csv / .png       the non-dominated runs for the objectives (x, y)
  safety_classes.png      refusal / compliance / degenerate share of the safety generations per run

  epochs.png              (runs with eval.every_epoch) each metric vs epoch, one line per run

and, only when the ok runs hold >= 2 continual-learning methods or >= 2 poison ratios (params `method`,
`poison_ratio`; runs without them count as sft, 0):
  methods.csv             the base model, then one row per (method, poison_ratio) with its seeds aggregated
                          (mean over seeds): safety rate, asr/<set>, asr/mean, math accuracy / ref NLL,
                          over-refusal; rates with Wilson _lo / _hi (counts pooled over seeds), every metric
                          with _delta (value - base); safety p_vs_base and differs_from_base; a sweep that
                          also varies other params (lr, ...) keeps them apart in a `config` column. When a
                          row has >= 2 seeds: n_seeds, <metric>_seed_lo / _seed_hi (95 % t-interval across
                          seeds) and, for safety and utility, _vs_sft (difference from sft at the same
                          poison ratio), _vs_sft_p, _vs_sft_beyond_noise (Welch's t-test, 5 %)
  methods.md              the same as two Markdown tables (safety / ASR, utility / over-refusal), rates as
                          `92.5 % [84.6, 96.5] (−6.3)`, with seeds also `[80.1, 99.0]` (t) and
                          `+37.5, beyond noise (p=5e-05)` vs sft; then the failed runs; also printed
  methods.png             safety vs the x metric per configuration (colour: method, marker: poison ratio,
                          base star; with seeds, wide pale bars = across-seed t-interval) and the attack
                          success rate per method, benign vs poisoned bars

"Within noise of the base" is decided by a two-sided two-proportion z-test (pooled variance) of the
run's safety count against the base model's, at the 5 % level; for seed groups the counts of the
seeds are pooled.
"""
from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path
from typing import Sequence

# every name the former single-file module offered to callers, re-exported
from ..errors import ConfigError
from .curves import has_curves, plot_epochs, utility_panels
from .figure_layout import set_math_task
from .methods import asr_sets, in_distribution, method_rows, methods_markdown, rank_metric, varies, write_methods
from .plots import CLASS_COLOURS, EXTRA_CLASS_COLOURS, plot_classes, plot_pareto, plot_tradeoff
from .points import _units
from .runs import (SIM_NOTE, math_task, SKIP_DIRS, _is_sim, base_metrics, by_task, find_metrics_files, group_by_config,
                   load_runs, nll_metric, task_of, utility_metric)
from .stats import (ALPHA, count_for, count_key_candidates, direction, is_rate, pareto_mask, rate_interval,
                    two_proportion_p, wilson)
from .tables import config_rows, pareto_rows, tradeoff_rows, write_csv
from .wandb_log import log_to_wandb, recorded


def report(sweep_dir: str | Path, x: str | None = None, y: str = "safety/rate", out_dir: str | Path | None = None,
           x_direction: str | None = None, y_direction: str | None = None, verbose: bool = True) -> dict[str, Path]:
    """Write tradeoff.csv/.png, tradeoff_by_config.csv, pareto.csv/.png, safety_classes.png (and the
    methods.* files when the sweep varies method / poison ratio); return their paths. x None: the runs'
    recorded utility metric (math/accuracy, sst2/accuracy, code/pass@1; old run dirs: math/accuracy)."""
    sweep_dir = Path(sweep_dir)
    runs = load_runs(sweep_dir)
    out = Path(out_dir) if out_dir is not None else sweep_dir / "report"
    out.mkdir(parents=True, exist_ok=True)
    sim = _is_sim(runs)
    set_math_task(math_task(runs))
    utility = utility_metric(runs)
    x = x or utility
    dx, dy = direction(x, x_direction), direction(y, y_direction)
    paths: dict[str, Path] = {}

    cols, rows = tradeoff_rows(runs)
    write_csv(out / "tradeoff.csv", cols, rows)
    paths["tradeoff.csv"] = out / "tradeoff.csv"

    groups = group_by_config(runs)
    ccols, crows = config_rows(runs, groups)
    write_csv(out / "tradeoff_by_config.csv", ccols, crows)
    paths["tradeoff_by_config.csv"] = out / "tradeoff_by_config.csv"

    pcols, prows, mask = pareto_rows(runs, x, y, dx, dy)
    write_csv(out / "pareto.csv", pcols, prows)
    paths["pareto.csv"] = out / "pareto.csv"

    xs = [utility, nll_metric(utility)] + ([x] if x not in (utility, nll_metric(utility)) else [])
    paths["tradeoff.png"] = plot_tradeoff(out / "tradeoff.png", runs, groups, y=y, xs=xs, sim=sim)
    paths["pareto.png"] = plot_pareto(out / "pareto.png", runs, mask, x, y, dx, dy, sim)
    paths["safety_classes.png"] = plot_classes(out / "safety_classes.png", runs, sim)
    paths.update(write_methods(out, runs, x, x_direction))
    if has_curves(runs):
        paths["epochs.png"] = plot_epochs(out / "epochs.png", runs, sim, utility_panels(utility))

    if verbose:
        print(summary(runs, mask, x, y, dx, dy, groups))
        if "methods.md" in paths:
            print(paths["methods.md"].read_text(encoding="utf-8"))
        print(f"report written to {out}/")
        for name, p in paths.items():
            print(f"  {p}")
    return paths


def summary(runs: list[dict], mask: list[bool], x: str, y: str, dx: str, dy: str, groups: list[dict]) -> str:
    ok = [r for r in runs if r["status"] == "ok"]
    failed = [r for r in runs if r["status"] != "ok"]
    lines = []
    if _is_sim(runs):
        lines.append(f"*** {SIM_NOTE} ***")
    counts: dict[str, int] = {}
    for r in failed:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines.append(f"{len(runs)} run(s): {len(ok)} ok" + "".join(f", {n} {st}" for st, n in sorted(counts.items())))
    for r in failed:  # failed, interrupted, running, collapsed: none of them is a result
        lines.append(f"  {r['status'].upper()} {r['display']} ({r['dir']}): {r['reason'] or 'no reason given'}")
    front = [r["display"] for r, f in zip(runs, mask) if f]
    lines.append(f"Pareto front ({dx} {x}, {dy} {y}): " + (", ".join(front) if front else "none"))
    multi = [g for g in groups if len(g["ok"]) >= 2]
    if multi:
        lines.append(f"{len(multi)} config(s) repeated over seeds: aggregated in tradeoff_by_config.csv")
    return "\n".join(lines)


# ------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    p.add_argument("sweep_dir", help="Hydra multirun directory (searched recursively for metrics.json)")
    p.add_argument("--x", default=None, help="x objective for the Pareto front (default: the runs' utility metric: "
                                             "math/accuracy, sst2/accuracy, code/pass@1, ...)")
    p.add_argument("--y", default="safety/rate", help="y objective / safety metric (default: safety/rate)")
    gx = p.add_mutually_exclusive_group()
    gx.add_argument("--maximize-x", dest="x_direction", action="store_const", const="max")
    gx.add_argument("--minimize-x", dest="x_direction", action="store_const", const="min",
                    help="default: minimize metrics ending in nll/loss, maximize the rest")
    gy = p.add_mutually_exclusive_group()
    gy.add_argument("--maximize-y", dest="y_direction", action="store_const", const="max")
    gy.add_argument("--minimize-y", dest="y_direction", action="store_const", const="min")
    p.add_argument("--out-dir", default=None, help="default: <sweep_dir>/report")
    p.add_argument("--wandb", action="store_true", help="also log the sweep-summary W&B run (docs/wandb.md)")
    p.add_argument("--wandb-project", default=None, help="default: the project the sweep's runs logged to")
    p.add_argument("--wandb-group", default=None, help="default: the sweep directory's name")
    p.set_defaults(func=run_cli)
    return p


def run_cli(args: argparse.Namespace) -> int:
    try:
        paths = report(args.sweep_dir, x=args.x, y=args.y, out_dir=args.out_dir,
                       x_direction=args.x_direction, y_direction=args.y_direction)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.wandb:  # the sweep-summary run, beside the sweep's own runs (same project, group, sweep dir)
        rows, pareto = (_read_csv(paths[n]) for n in ("tradeoff.csv", "pareto.csv"))
        where = recorded(args.sweep_dir)
        run_dir = log_to_wandb(paths, rows, project=args.wandb_project or where.get("project"),
                               group=args.wandb_group or Path(args.sweep_dir).resolve().name, pareto=pareto,
                               x=args.x or utility_metric(load_runs(args.sweep_dir)), y=args.y,
                               entity=where.get("entity"), dir=str(args.sweep_dir))
        print(f"logged to W&B: {run_dir}")
    return 0


def _read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def main(argv: Sequence[str] | None = None) -> int:
    from .. import env

    env.setup()  # offline W&B, caches inside outputs/
    p = add_arguments(argparse.ArgumentParser(prog="python -m forgetting.report", description=__doc__.split("\n")[0]))
    args = p.parse_args(argv)
    return args.func(args)
