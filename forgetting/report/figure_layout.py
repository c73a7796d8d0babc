"""Matplotlib helpers shared by the figures: label placement, numbered keys, titles, axes."""
from __future__ import annotations

import math
import os
from typing import Any, Sequence

from .runs import SIM_NOTE


def _plt():
    os.environ.setdefault("MPLCONFIGDIR", os.path.join(os.environ.get("TMPDIR", "/tmp"), "mpl"))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


_MATH_TASK = {"name": "GSM8K"}  # set once per report from the runs' `data` param (report.report)


def set_math_task(name: str) -> None:
    _MATH_TASK["name"] = name


def _axis_label(metric: str, dirn: str) -> str:
    family = metric.split("/")[0]
    names = {"math/accuracy": f"{_MATH_TASK['name']} math accuracy", "math/ref_nll": "math reference-answer NLL",
             "sst2/accuracy": "SST-2 sentiment accuracy", "code/pass@1": "HumanEval pass@1",
             f"{family}/ref_nll": f"{family} reference-answer NLL",
             "safety/rate": "safety rate (share of harmful prompts answered safely)",
             "over_refusal/rate": "over-refusal rate (benign prompts refused)",
             "asr/mean": "attack success rate (mean over harmful sets)"}
    name = names.get(metric, metric)
    return f"{name}  ({'higher' if dirn == 'max' else 'lower'} is better)"


def _orient(ax, x_dir: str, y_dir: str) -> None:
    """Reverse minimised axes so that 'better' is always right / up."""
    if x_dir == "min":
        ax.invert_xaxis()
    if y_dir == "min":
        ax.invert_yaxis()


def _place_labels(fig, ax, items: list[tuple[float, float, str]], fontsize: float = 8,
                  force: bool = False, segments: Sequence[tuple[float, float, float, float]] = ()) -> list[int]:
    """Greedy label placement: try offsets around each point, keep the first that overlaps neither
    another label nor a marker and stays inside the axes. Returns the indices of the items that found
    no free spot (not drawn unless force=True, then drawn at the default spot). `segments` (x0, y0, x1, y1
    in data coordinates: the error bars) are obstacles too."""
    from matplotlib.transforms import Bbox
    merged: dict[tuple, list] = {}
    for it in items:  # points drawn on top of each other share one label; it[3]: marker radius (pt)
        m = merged.setdefault((round(it[0], 12), round(it[1], 12)), [it[0], it[1], [], 6.0])
        m[2].append(it[2])
        m[3] = max(m[3], it[3] if len(it) > 3 else 6.0)
    items = [(x, y, ", ".join(t), r) for x, y, t, r in merged.values()]
    renderer = fig.canvas.get_renderer()
    ax_box = ax.get_window_extent(renderer)
    taken = []
    for x, y, _, r in items:
        px, py = ax.transData.transform((x, y))
        pad = r * fig.dpi / 72
        taken.append(Bbox.from_extents(px - pad, py - pad, px + pad, py + pad))
    for x0, y0, x1, y1 in segments:
        (ax0, ay0), (ax1, ay1) = ax.transData.transform((x0, y0)), ax.transData.transform((x1, y1))
        taken.append(Bbox.from_extents(min(ax0, ax1) - 1, min(ay0, ay1) - 1, max(ax0, ax1) + 1, max(ay0, ay1) + 1))
    dirs = [(1, 1), (1, -1), (-1, 1), (-1, -1), (1, 0), (-1, 0), (0, 1), (0, -1)]
    failed = []
    for i, (x, y, text, r) in enumerate(items):
        placed = None
        for radius in tuple(v + max(0.0, r - 6) for v in (6, 11, 18, 28, 40, 55))[: 6 if force else 4]:  # long leader lines only for numbers
            for dx, dy in dirs:
                ha = "left" if dx > 0 else "right" if dx < 0 else "center"
                va = "bottom" if dy > 0 else "top" if dy < 0 else "center"
                ann = ax.annotate(text, (x, y), xytext=(dx * radius, dy * radius), textcoords="offset points",
                                  ha=ha, va=va, fontsize=fontsize, zorder=6,
                                  arrowprops=dict(arrowstyle="-", color="0.55", lw=0.6, shrinkA=0, shrinkB=4)
                                  if radius > 6 else None)
                bb = _text_extent(ann, renderer).expanded(1.04, 1.12)
                inside = ax_box.contains(bb.x0, bb.y0) and ax_box.contains(bb.x1, bb.y1)
                if inside and not any(bb.overlaps(t) for t in taken):
                    placed = ann
                    break
                ann.remove()
            if placed:
                break
        if placed is None:
            failed.append(i)
            if not force:
                continue
            placed = ax.annotate(text, (x, y), xytext=(6, 6), textcoords="offset points", fontsize=fontsize, zorder=6)
        taken.append(_text_extent(placed, renderer))
    return failed


def _text_extent(ann, renderer):
    """The annotation's text box alone (Annotation.get_window_extent also covers the leader line)."""
    from matplotlib.text import Text
    ann.update_positions(renderer)
    return Text.get_window_extent(ann, renderer)


def _labelled(build) -> Any:
    """build(numbered) -> (fig, [(ax, items, segments)]). Full labels when they all fit, else numbers + a key."""
    fig, jobs = build(False)
    _freeze(fig)
    if not any(_place_labels(fig, ax, items, segments=seg) for ax, items, seg in jobs):
        return fig
    _plt().close(fig)
    fig, jobs = build(True)
    _freeze(fig)
    for ax, items, seg in jobs:
        _place_labels(fig, ax, items, force=True, segments=seg)
    return fig


def _key(fig, gs_cell, entries: list[tuple[str, str, str]], width_in: float) -> None:
    """The numbered key below the plot: entries (number, label, colour)."""
    kax = fig.add_subplot(gs_cell)
    kax.axis("off")
    ncol = max(1, int(width_in // 3.6))
    nrow = max(1, math.ceil(len(entries) / ncol))
    for i, (num, text, colour) in enumerate(entries):
        col, row = divmod(i, nrow)
        kax.text(col / ncol, 1 - (row + 0.5) / nrow, f"{num:>3}  {text}", transform=kax.transAxes,
                 fontsize=7.8, va="center", ha="left", color=colour)


def _key_height(n: int, width_in: float) -> float:
    ncol = max(1, int(width_in // 3.6))
    return 0.2 * math.ceil(n / ncol) + 0.15


def _titles(fig, title: str, sim: bool, sub: str | None = None) -> None:
    """Suptitle: bold title, then (simulation) a blank line that _freeze() fills with the red note, then sub."""
    import textwrap
    lines = [title] + ([" "] if sim else []) + ([textwrap.fill(sub, int(fig.get_figwidth() * 11))] if sub else [])
    fig.suptitle("\n".join(lines), fontsize=11.5)
    fig._report_sim = sim


def _freeze(fig) -> None:
    """Run the layout once, then fix it (labels are placed in a settled layout) and draw the red
    simulation note into the title's reserved line."""
    fig.canvas.draw()
    fig.set_layout_engine("none")
    st = fig._suptitle
    if st is not None and getattr(fig, "_report_sim", False):
        bb = st.get_window_extent(fig.canvas.get_renderer())
        n = st.get_text().count("\n") + 1
        yc = (bb.y1 - 1.5 * bb.height / n) / fig.bbox.height  # the reserved second line
        fig.text(0.5, yc, f"\u26a0 {SIM_NOTE}", ha="center", va="center", fontsize=11.5, color="#b30000",
                 fontweight="bold")


def _rate_axis(ax, which: str) -> None:
    from matplotlib.ticker import PercentFormatter
    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_formatter(PercentFormatter(1.0, decimals=None))
    lo, hi = ax.get_xlim() if which == "x" else ax.get_ylim()
    flip = lo > hi
    a, b = sorted((lo, hi))
    a, b = max(a, -0.03), min(b, 1.03)
    (ax.set_xlim if which == "x" else ax.set_ylim)((b, a) if flip else (a, b))


def _tradeoff_axes(ax, x: str, y: str, dx: str, dy: str, title: str) -> None:
    """Labels, grid, orientation (better = up and right), rate ticks and title of a y-vs-x panel."""
    from .stats import is_rate

    ax.set_xlabel(_axis_label(x, dx) + ("  → axis reversed" if dx == "min" else ""))
    ax.set_ylabel(_axis_label(y, dy))
    ax.grid(True, color="0.92", lw=0.6, zorder=0)
    ax.margins(0.14)
    _orient(ax, dx, dy)
    for k, w in ((x, "x"), (y, "y")):
        if is_rate(k):
            _rate_axis(ax, w)
    ax.set_title(title, fontsize=10)
    ax.text(0.99, 0.01, "better ↗", transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="0.4")


def _save(fig, path):
    """Freeze the layout, write the PNG, free the figure; → path."""
    _freeze(fig)
    fig.savefig(path, dpi=140)
    _plt().close(fig)
    return path
