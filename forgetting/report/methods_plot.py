"""methods.png: safety vs utility per (method, poison ratio), and the attack success rate per method."""
from __future__ import annotations

from pathlib import Path

from .figure_layout import _freeze, _place_labels, _plt, _rate_axis, _titles, _tradeoff_axes
from .runs import _fmt, _ordered_union
from .stats import _finite, direction

MARKERS = ["^", "s", "D", "v", "P", "X"]  # poisoned ratios, in increasing order; benign is a circle
HATCHES = ["///", "xxx", "...", "\\\\\\", "++", "oo"]
MAX_PANELS = 4  # ASR panels, one per harmful set; more sets: one panel of asr/mean


def _err(row: dict, k: str, kind: str = ""):
    """matplotlib's [[below], [above]] for the Wilson interval (kind "") or the across-seed one ("_seed")."""
    v, lo, hi = row.get(k), row.get(f"{k}{kind}_lo"), row.get(f"{k}{kind}_hi")
    return [[max(0.0, v - lo)], [max(0.0, hi - v)]] if _finite(lo) and _finite(hi) else None


def _bar_err(row: dict, k: str):
    """A bar's error bar: the across-seed interval with >= 2 seeds, else Wilson."""
    return _err(row, k, "_seed") or _err(row, k)


def _ratio_name(p: float) -> str:
    return "benign (poison ratio 0)" if p == 0 else f"poisoned (ratio {_fmt(p)})"


def method_colours(plt, methods: list[str]) -> dict:
    """One colour a method, all distinct up to 20: tab10, or past 10 methods tab20's dark hues, then its light ones."""
    if len(methods) <= 10:
        return {m: plt.cm.tab10(i) for i, m in enumerate(methods)}
    order = list(range(0, 20, 2)) + list(range(1, 20, 2))
    return {m: plt.cm.tab20(order[i % 20]) for i, m in enumerate(methods)}


def plot_methods(path: Path, rows: list[dict], sets: list[str], x: str, dx: str, sim: bool,
                 y: str = "safety/rate") -> Path:
    """rows: methods.csv's (the base row has _base=True). Left: y vs x, right: ASR bars per method."""
    plt = _plt()
    from matplotlib.lines import Line2D
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.patches import Patch

    base = next((r for r in rows if r.get("_base")), {})
    rs = [r for r in rows if not r.get("_base")]
    methods = _ordered_union({r["method"]: 0} for r in rs)
    colour = method_colours(plt, methods)
    ratios = sorted({r["poison_ratio"] for r in rs})
    poisoned = [p for p in ratios if p > 0]
    marker = {0.0: "o", **{p: MARKERS[i % len(MARKERS)] for i, p in enumerate(poisoned)}}
    hatch = {0.0: None, **{p: HATCHES[i % len(HATCHES)] for i, p in enumerate(poisoned)}}
    keys = [f"asr/{s}" for s in sets] if 1 <= len(sets) <= MAX_PANELS else ["asr/mean"]
    fig = plt.figure(figsize=(14, max(6.4, 2.3 * len(keys) + 1.8)), layout="constrained")
    gs = fig.add_gridspec(len(keys), 2, width_ratios=[1.2, 1])
    ax = fig.add_subplot(gs[:, 0])
    bxs = [fig.add_subplot(gs[0, 1])]
    bxs += [fig.add_subplot(gs[i, 1], sharex=bxs[0]) for i in range(1, len(keys))]

    # left: safety vs utility
    items, segs = [], []
    for r in rs:
        vx, vy = r.get(x), r.get(y)
        if not (_finite(vx) and _finite(vy)):
            continue
        ex, ey = _err(r, x), _err(r, y)
        ax.errorbar(vx, vy, xerr=ex, yerr=ey, fmt="none", ecolor=colour[r["method"]], alpha=0.7, elinewidth=1,
                    capsize=2.5, zorder=2)
        sx, sy = _err(r, x, "_seed"), _err(r, y, "_seed")
        if sx or sy:  # >= 2 seeds: the across-seed t-interval, wide and pale behind the thin Wilson bars
            ax.errorbar(vx, vy, xerr=sx, yerr=sy, fmt="none", ecolor=colour[r["method"]], alpha=0.35, elinewidth=6,
                        capsize=0, zorder=1.5)
            segs += [(vx, r[f"{y}_seed_lo"], vx, r[f"{y}_seed_hi"])] if sy else []
            segs += [(r[f"{x}_seed_lo"], vy, r[f"{x}_seed_hi"], vy)] if sx else []
        segs += [(vx, r[f"{y}_lo"], vx, r[f"{y}_hi"])] if ey else []
        segs += [(r[f"{x}_lo"], vy, r[f"{x}_hi"], vy)] if ex else []
        ax.scatter(vx, vy, marker=marker[r["poison_ratio"]], s=100, color=colour[r["method"]], edgecolor="black",
                   lw=0.6, zorder=4)
        if r.get("config"):
            items.append((vx, vy, r["config"]))
    bxv, byv = base.get(x), base.get(y)
    if _finite(byv):
        if _finite(base.get(f"{y}_lo")):
            ax.axhspan(base[f"{y}_lo"], base[f"{y}_hi"], color="0.9", zorder=0, lw=0)
        ax.axhline(byv, color="0.5", ls="--", lw=0.9, zorder=1)
    if _finite(bxv) and _finite(byv):
        ax.scatter(bxv, byv, marker="*", s=420, facecolor="#ffd700", edgecolor="black", lw=1.1, zorder=5)
    dy = direction(y)
    seeds = any(_err(r, k, "_seed") for r in rs for k in (x, y))
    _tradeoff_axes(ax, x, y, dx, dy, f"{y} vs {x} (error bars: "
                   + ("thin Wilson 95 %, wide t 95 % across seeds)" if seeds else "Wilson 95 %, seeds pooled)"))

    # right: attack success rate per harmful set (Wilson bars), or their mean when there are many sets
    for bx, key in zip(bxs, keys):
        _asr_bars(bx, rs, base, key, ratios, colour, hatch)
    bxs[-1].tick_params(labelbottom=True)
    if len(methods) > 10:  # 14 names side by side overlap: slant them
        for label in bxs[-1].get_xticklabels():
            label.set(rotation=30, ha="right", rotation_mode="anchor")

    handles = [Line2D([], [], marker="o", ls="none", ms=9, mfc=colour[m], mec="black") for m in methods]
    handles += [(Line2D([], [], marker=marker[p], ls="none", ms=9, mfc="0.6", mec="black"),
                 Patch(facecolor="white", edgecolor="black", hatch=hatch[p])) for p in ratios]
    labels = methods + [_ratio_name(p) for p in ratios]
    if _finite(bxv) and _finite(byv):
        handles.append(Line2D([], [], marker="*", ls="none", ms=15, mfc="#ffd700", mec="black"))
        labels.append("base model (grey band: its Wilson 95 % interval; dashed: its ASR)")
    fig.legend(handles, labels, loc="outside lower center", ncol=len(handles) if len(handles) <= 7 else 6,
               fontsize=8.5, frameon=False, handler_map={tuple: HandlerTuple(ndivide=None, pad=0.6)})
    ns = sorted({r.get("n_runs", 1) for r in rs}) or [1]
    each = "" if ns == [1] else f", {ns[0]} seeds each" if len(ns) == 1 else f", {ns[0]}–{ns[-1]} seeds each"
    _titles(fig, "Continual-learning methods: safety vs utility, benign vs poisoned fine-tuning", sim,
            f"{len(rs)} configuration(s){each}; colour = method, marker / hatching = poison ratio")
    _freeze(fig)
    if items:
        _place_labels(fig, ax, items, force=True, segments=segs)
    fig.savefig(path, dpi=140)
    plt.close(fig)
    return path


def _asr_bars(bx, rs: list[dict], base: dict, key: str, ratios: list[float], colour: dict, hatch: dict) -> None:
    """Bars of `key` per (method, config) cluster, one per poison ratio side by side; base as a dashed line."""
    clusters = _ordered_union({(r["method"], r.get("config") or ""): 0} for r in rs)
    width = 0.8 / max(1, len(ratios))
    drawn = False
    for ci, (m, cfg) in enumerate(clusters):
        for j, p in enumerate(ratios):
            r = next((r for r in rs if (r["method"], r.get("config") or "", r["poison_ratio"]) == (m, cfg, p)), None)
            if r is None or not _finite(r.get(key)):
                continue
            bx.bar(ci - 0.4 + width * (j + 0.5), r[key], width * 0.92, color=colour[m], hatch=hatch[p],
                   edgecolor="black", lw=0.6, yerr=_bar_err(r, key), capsize=3, ecolor="0.2", zorder=3)
            drawn = True
    if _finite(base.get(key)):
        bx.axhline(base[key], color="0.4", ls="--", lw=1.0, zorder=4)
    bx.set_xticks(range(len(clusters)), [f"{m}\n{c}" if c else m for m, c in clusters], fontsize=8.5)
    bx.tick_params(labelbottom=False)
    bx.set_ylim(0, 1.02)
    _rate_axis(bx, "y")
    bx.grid(True, axis="y", color="0.92", lw=0.6, zorder=0)
    if any(_err(r, key, "_seed") for r in rs):
        one = any(not _err(r, key, "_seed") and _err(r, key) for r in rs)
        note = "t 95 % across seeds" + ("; Wilson 95 % for one seed" if one else "")
    else:
        note = "Wilson 95 %" if any(_err(r, key) for r in rs) else "none: a mean over harmful sets"
    sep = "\n" if note.startswith("t 95") else "; "  # the seed note on a line of its own
    bx.set_title(f"attack success rate {key} (lower is better){sep}error bars: {note}", fontsize=9.5)
    if not drawn:
        bx.text(0.5, 0.5, f"no {key} metric in this sweep", transform=bx.transAxes, ha="center")
