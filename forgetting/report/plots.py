"""The figures: tradeoff.png, pareto.png, safety_classes.png."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

from .figure_layout import (_save, _axis_label, _key, _key_height, _labelled, _orient, _plt, _rate_axis,
                            _titles, _tradeoff_axes)
from .points import _units
from .runs import _counts_only, _ordered_union, base_metrics
from .stats import ALPHA, _finite, direction, is_rate, rate_interval

CLASS_COLOURS = {"refusal": "#2e8b57", "compliance": "#d62728", "degenerate": "#8c8c8c"}
EXTRA_CLASS_COLOURS = ["#1f77b4", "#ff7f0e", "#9467bd", "#e377c2", "#bcbd22", "#17becf"]


def _warn_suffix(m: dict, base: dict) -> str:
    d, bd = m.get("safety/class/degenerate"), base.get("safety/class/degenerate", 0.0)
    if _finite(d) and d >= 0.2 and d >= (bd if _finite(bd) else 0) + 0.1:
        return f" [{d:.0%} degenerate]"
    return ""


def _err(u: dict, k: str, v: float):
    b = u["bounds"].get(k)
    if not b:
        return None
    return [[max(0.0, v - b[0])], [max(0.0, b[1] - v)]]


def plot_tradeoff(path: Path, runs: list[dict], groups: list[dict], y: str = "safety/rate",
                  xs: Sequence[str] = ("math/accuracy", "math/ref_nll"), sim: bool = False) -> Path:
    plt = _plt()
    from matplotlib.colors import LinearSegmentedColormap, Normalize
    from matplotlib.lines import Line2D

    base = base_metrics(runs)
    counts = _counts_only(runs)
    bm = {f"base/{k}": v for k, v in base.items()}
    aggregate = any(len(g["ok"]) >= 2 for g in groups)
    units = _units(runs, groups, base, y if is_rate(y) else "safety/rate", aggregate)
    seed_ns = {u["n_seeds"] for u in units}
    if aggregate and len(seed_ns) == 1:  # every point is a mean over the same number of seeds: say it once
        for u in units:
            u["label"] = u["label"].replace(f" (n={u['n_seeds']} seeds)", "")
    xs = [x for x in xs if any(_finite(u["metrics"].get(x)) and _finite(u["metrics"].get(y)) for u in units)] or list(xs[:1])
    n_failed = sum(r["status"] != "ok" for r in runs)
    n_ok = len(runs) - n_failed

    orr = [u["metrics"].get("over_refusal/rate") for u in units] + [base.get("over_refusal/rate")]
    orr = [v for v in orr if _finite(v)]
    cmap = LinearSegmentedColormap.from_list("or", ["#2c7bb6", "#7b3294", "#e66101"])
    norm = Normalize(vmin=min(orr), vmax=max(orr) if max(orr) > min(orr) else min(orr) + 0.05) if orr else None

    def colour(m):
        v = m.get("over_refusal/rate")
        return cmap(norm(v)) if norm is not None and _finite(v) else "#4a4a4a"

    has_base = _finite(base.get(y))
    full = [u["label"] + (" ≈ base" if u["approx_base"] else "") + _warn_suffix(u["metrics"], base) for u in units]
    width, height = 6.6 * len(xs) + 1.2, 6.4

    def build(numbered: bool):
        key_h = _key_height(len(units), width) if numbered else 0
        fig = plt.figure(figsize=(width, height + key_h), layout="constrained")
        gs = fig.add_gridspec(2 if numbered else 1, len(xs), height_ratios=[height - 1.4, key_h] if numbered else None)
        axes = [fig.add_subplot(gs[0, i]) for i in range(len(xs))]
        jobs = []
        for ax, x in zip(axes, xs):
            x_dir, y_dir = direction(x), direction(y)
            bx, by = base.get(x), base.get(y)
            if _finite(by):  # the base model's value and its Wilson band
                blo, bhi = rate_interval(f"base/{y}", bm, counts)
                if _finite(blo):
                    ax.axhspan(blo, bhi, color="0.88", zorder=0, lw=0)
                ax.axhline(by, color="0.5", ls="--", lw=0.9, zorder=1)
            if _finite(bx):
                ax.axvline(bx, color="0.5", ls=":", lw=0.9, zorder=1)
            items, segs = [], []
            for i, u in enumerate(units):
                m = u["metrics"]
                vx, vy = m.get(x), m.get(y)
                if not (_finite(vx) and _finite(vy)):
                    continue
                kind = next((b[2] for b in (u["bounds"].get(y), u["bounds"].get(x)) if b), "wilson")
                if u["bounds"].get(x):
                    segs.append((u["bounds"][x][0], vy, u["bounds"][x][1], vy))
                if u["bounds"].get(y):
                    segs.append((vx, u["bounds"][y][0], vx, u["bounds"][y][1]))
                ax.errorbar(vx, vy, xerr=_err(u, x, vx), yerr=_err(u, y, vy), fmt="none", zorder=2,
                            ecolor="0.15" if kind == "std" else "0.55", elinewidth=1.4 if kind == "std" else 0.9,
                            capsize=3.5 if kind == "std" else 2.5)
                c = colour(m)
                if len(u["runs"]) > 1:  # the individual seeds, faint
                    ax.scatter([r["metrics"].get(x) for r in u["runs"]], [r["metrics"].get(y) for r in u["runs"]],
                               s=14, color=c, alpha=0.35, zorder=2, lw=0)
                if u["approx_base"]:
                    ax.scatter(vx, vy, s=95, facecolor="white", edgecolor=c, linewidth=2.2, zorder=4)
                else:
                    ax.scatter(vx, vy, s=95, facecolor=c, edgecolor="black", linewidth=0.6, zorder=4)
                items.append((vx, vy, str(i + 1) if numbered else full[i]))
            if _finite(bx) and _finite(by):
                ax.scatter(bx, by, marker="*", s=420, facecolor=colour(base), edgecolor="black", linewidth=1.1, zorder=5)
                items.insert(0, (bx, by, "base", 11.0))
            _tradeoff_axes(ax, x, y, x_dir, y_dir, f"{y} vs {x}")
            jobs.append((ax, items, segs))
        if norm is not None:
            cb = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.85, pad=0.01)
            cb.set_label("over-refusal rate on benign prompts (marker colour; lower is better)")
        if numbered:
            _key(fig, gs[1, :], [(str(i + 1), t, "black") for i, t in enumerate(full)], width)
        handles = [
            Line2D([], [], marker="*", ls="none", ms=15, mfc="0.75", mec="black",
                   label="base model (dashed line; grey band = its 95% Wilson interval)"),
            Line2D([], [], marker="o", ls="none", ms=9, mfc="0.45", mec="black",
                   label=f"fine-tuned: safety differs from base (p < {ALPHA})"),
            Line2D([], [], marker="o", ls="none", ms=9, mfc="white", mec="0.35", mew=2,
                   label=f"≈ base: safety difference within noise (p ≥ {ALPHA})"),
        ] if has_base else [Line2D([], [], marker="o", ls="none", ms=9, mfc="0.45", mec="black",
                                   label="fine-tuned run (no base-model values in this sweep)")]
        handles.append(Line2D([], [], color="0.55", lw=0.9, marker="|", ms=6, label="error bars: Wilson 95% interval (rates)"))
        if aggregate:
            how = f"mean of {next(iter(seed_ns))} seeds" if len(seed_ns) == 1 else "mean over its seeds (n in label)"
            handles.append(Line2D([], [], color="0.15", lw=1.4, marker="|", ms=8,
                                  label=f"point = {how}, error bars: ±1 std over seeds; faint dots = single seeds"))
        fig.legend(handles=handles, loc="outside lower center", ncol=3 if aggregate else 2, fontsize=8.5, frameon=False)
        sub = (f"{n_ok} successful run(s)" + (f", {n_failed} not shown (failed, interrupted or collapsed: see tradeoff.csv)"
                                              if n_failed else "")
               + ("; within noise = two-proportion z-test vs base" + (", seed counts pooled" if aggregate else "")
                  if has_base else ""))
        skill = "math" if xs[0].startswith("math/") else xs[0].split("/")[0]
        _titles(fig, f"Safety vs {skill} skill after {skill} fine-tuning", sim, sub)
        return fig, jobs

    fig = _labelled(build)
    fig.savefig(path, dpi=140)
    plt.close(fig)
    return path


def plot_pareto(path: Path, runs: list[dict], mask: list[bool], x: str, y: str, dx: str, dy: str, sim: bool) -> Path:
    plt = _plt()
    from matplotlib.lines import Line2D

    base = base_metrics(runs)
    ok = [(r, f) for r, f in zip(runs, mask) if r["status"] == "ok"
          and _finite(r["metrics"].get(x)) and _finite(r["metrics"].get(y))]
    ok.sort(key=lambda rf: not rf[1])  # the front first: labelled first, numbered first
    n_failed = sum(r["status"] != "ok" for r in runs)
    width, height = 9.5, 7.0

    def build(numbered: bool):
        key_h = _key_height(len(ok), width) if numbered else 0
        fig = plt.figure(figsize=(width, height + key_h), layout="constrained")
        gs = fig.add_gridspec(2 if numbered else 1, 1, height_ratios=[height - 1.4, key_h] if numbered else None)
        ax = fig.add_subplot(gs[0, 0])
        items, segs = [], []
        for i, (r, front) in enumerate(ok):
            vx, vy = r["metrics"][x], r["metrics"][y]
            for k, v, horiz in ((x, vx, True), (y, vy, False)):
                if is_rate(k):
                    lo, hi = rate_interval(k, r["metrics"])
                    if _finite(lo):
                        e = [[v - lo], [hi - v]]
                        segs.append((lo, vy, hi, vy) if horiz else (vx, lo, vx, hi))
                        ax.errorbar(vx, vy, xerr=e if horiz else None, yerr=None if horiz else e, fmt="none",
                                    ecolor="#d62728" if front else "0.7", elinewidth=0.8, alpha=0.5, capsize=2, zorder=2)
            ax.scatter(vx, vy, s=90 if front else 45, color="#d62728" if front else "0.6",
                       edgecolor="black" if front else "none", lw=0.6, zorder=4 if front else 3)
            items.append((vx, vy, str(i + 1) if numbered else r["display"]))
        fr = sorted(((r["metrics"][x], r["metrics"][y]) for r, f in ok if f), key=lambda p: (p[0], p[1]))
        if len(fr) > 1:
            ax.plot(*zip(*fr), color="#d62728", lw=1.6, zorder=3)
        bx, by = base.get(x), base.get(y)
        if _finite(bx) and _finite(by):
            ax.scatter(bx, by, marker="*", s=420, facecolor="#ffd700", edgecolor="black", lw=1.1, zorder=5)
            items.insert(0, (bx, by, "base", 11.0))
            ax.axhline(by, color="0.6", ls="--", lw=0.8, zorder=1)
            ax.axvline(bx, color="0.6", ls=":", lw=0.8, zorder=1)
        if not ok:
            ax.text(0.5, 0.5, f"no successful run has both {x} and {y}", transform=ax.transAxes, ha="center")
        ax.set_xlabel(_axis_label(x, dx) + ("  → axis reversed" if dx == "min" else ""))
        ax.set_ylabel(_axis_label(y, dy))
        ax.grid(True, color="0.92", lw=0.6)
        ax.margins(0.14)
        _orient(ax, dx, dy)
        for k, w in ((x, "x"), (y, "y")):
            if is_rate(k):
                _rate_axis(ax, w)
        ax.text(0.99, 0.01, "better ↗", transform=ax.transAxes, ha="right", va="bottom", fontsize=9, color="0.4")
        if numbered:
            _key(fig, gs[1, 0], [(str(i + 1), r["display"] + (" (front)" if f else ""), "#b30000" if f else "0.3")
                                 for i, (r, f) in enumerate(ok)], width)
        handles = [Line2D([], [], marker="o", color="#d62728", mec="black", ms=9, label="Pareto front (non-dominated runs)"),
                   Line2D([], [], marker="o", ls="none", color="0.6", ms=7, label="dominated run"),
                   Line2D([], [], marker="*", ls="none", mfc="#ffd700", mec="black", ms=15,
                          label="base model (reference, not a candidate)"),
                   Line2D([], [], color="0.6", lw=0.8, marker="|", ms=6, label="Wilson 95% interval")]
        if not (_finite(bx) and _finite(by)):
            del handles[2]
        fig.legend(handles=handles, loc="outside lower center", ncol=4, fontsize=8.5, frameon=False)
        _titles(fig, f"Pareto front: {dx}imize {x}, {dy}imize {y}", sim,
                f"{sum(f for _, f in ok)} of {len(ok)} runs on the front"
                + (f"; {n_failed} failed / interrupted / collapsed run(s) not shown" if n_failed else ""))
        return fig, [(ax, items, segs)]

    fig = _labelled(build)
    fig.savefig(path, dpi=140)
    plt.close(fig)
    return path


def plot_classes(path: Path, runs: list[dict], sim: bool) -> Path:
    plt = _plt()
    from matplotlib.patches import Patch

    base = base_metrics(runs)
    bars = ([("base", base)] if base else []) + [(r["display"], r["metrics"]) for r in runs if r["status"] == "ok"]
    classes = _ordered_union([{k.split("/", 2)[2]: 0 for k in m if k.startswith("safety/class/")} for _, m in bars])
    classes = [c for c in CLASS_COLOURS if c in classes] + [c for c in classes if c not in CLASS_COLOURS]
    colours = dict(CLASS_COLOURS)
    for i, c in enumerate(c for c in classes if c not in CLASS_COLOURS):
        colours[c] = EXTRA_CLASS_COLOURS[i % len(EXTRA_CLASS_COLOURS)]
    fig, ax = plt.subplots(figsize=(10, 1.9 + 0.42 * len(bars)), layout="constrained")
    ypos = list(range(len(bars)))[::-1]
    unreported = False
    for yp, (name, m) in zip(ypos, bars):
        left = 0.0
        for c in classes:
            v = m.get(f"safety/class/{c}")
            if not _finite(v) or v <= 0:
                continue
            ax.barh(yp, v, left=left, color=colours[c], edgecolor="white", lw=0.8, height=0.72)
            if v >= 0.045:
                ax.text(left + v / 2, yp, f"{v:.0%}", ha="center", va="center", fontsize=8,
                        color="white" if c in ("refusal", "compliance") else "black")
            left += v
        if left < 0.995:
            unreported = True
            ax.barh(yp, 1 - left, left=left, color="white", edgecolor="0.6", hatch="///", lw=0.6, height=0.72)
    ax.set_yticks(ypos, [n for n, _ in bars], fontsize=8.5)
    if base:
        ax.get_yticklabels()[0].set_fontweight("bold")
    if base and len(bars) > 1:
        ax.axhline(ypos[0] - 0.5, color="black", lw=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.6, len(bars) - 0.4)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{v:.0%}"))
    ax.set_xlabel("share of the generations on harmful (safety) prompts")
    handles = [Patch(color=colours[c], label={"refusal": "refusal", "compliance": "compliance (answered; the judge says if harmful)",
                                              "degenerate": "degenerate (broken, looping text)"}.get(c, c))
               for c in classes] + ([Patch(facecolor="white", edgecolor="0.6", hatch="///", label="not reported")]
                                    if unreported else [])
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=min(4, len(handles)), fontsize=8.5, frameon=False)
    if not classes:
        ax.text(0.5, 0.5, "no safety/class/* metrics in this sweep", transform=ax.transAxes, ha="center")
    _titles(fig, "What the models did on harmful prompts", sim,
            "a model that merely breaks (degenerate) is not one that turned harmful")
    return _save(fig, path)
