"""epochs.png: forgetting curves from runs with eval.every_epoch: each metric vs epoch, one line per run,
epoch 0 = the base model."""
from __future__ import annotations

from pathlib import Path

from .figure_layout import _save, _axis_label, _plt, _rate_axis, _titles
from .runs import base_metrics
from .stats import _finite, direction, is_rate

PANELS = ("safety/rate", "math/accuracy", "safety/refusal_nll", "math/ref_nll")  # the math task's; utility_panels()


def utility_panels(utility: str) -> tuple[str, ...]:
    """PANELS with the runs' utility metric and its reference NLL in place of math's."""
    from .runs import nll_metric

    return ("safety/rate", utility, "safety/refusal_nll", nll_metric(utility))


def has_curves(runs: list[dict]) -> bool:
    return any(len(r.get("epochs") or []) >= 2 for r in runs if r["status"] == "ok")


def plot_epochs(path: Path, runs: list[dict], sim: bool, panels: tuple[str, ...] = PANELS) -> Path:
    plt = _plt()
    base = base_metrics(runs)
    curves = [r for r in runs if r["status"] == "ok" and len(r.get("epochs") or []) >= 2]
    keys = [k for k in panels if any(_finite(e.get(k)) for r in curves for e in r["epochs"])]
    fig, axes = plt.subplots(1, len(keys), figsize=(4.6 * len(keys), 4.4), layout="constrained", squeeze=False)
    cmap = plt.get_cmap("viridis", max(len(curves), 2))
    for ax, k in zip(axes[0], keys):
        for i, r in enumerate(curves):
            pts = ([(0, base[k])] if _finite(base.get(k)) else []) + \
                  [(e["epoch"], e[k]) for e in r["epochs"] if _finite(e.get(k))]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=4, color=cmap(i), label=r["display"])
        if _finite(base.get(k)):
            ax.scatter([0], [base[k]], marker="*", s=220, facecolor="#ffd700", edgecolor="black", zorder=5)
        ax.set_xlabel("epoch (0 = base model)")
        ax.set_ylabel(_axis_label(k, direction(k)))
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(True, color="0.92", lw=0.6)
        if is_rate(k):
            _rate_axis(ax, "y")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=min(4, len(labels)), fontsize=8, frameon=False)
    _titles(fig, "Forgetting curves: evaluation after every epoch of one run", sim,
            "with a constant learning rate, epoch k of a run equals a k-epoch run")
    return _save(fig, path)
