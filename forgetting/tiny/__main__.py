"""python -m forgetting.tiny conf/model/tiny.yaml [--cache-root DIR] [build.align.epochs=3 ...]
(or --preset tiny): build the preset (or reuse the cache) and print its build report."""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from omegaconf import OmegaConf

from . import DONE, build

CONF = Path(__file__).resolve().parents[2] / "conf" / "model"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m forgetting.tiny", description=__doc__)
    ap.add_argument("config", nargs="?", help="a conf/model/*.yaml with a `build:` block")
    ap.add_argument("--preset", help="name of a conf/model preset (tiny, micro)")
    ap.add_argument("--cache-root", help="default: the yaml's cache_dir")
    ap.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. build.align.epochs=3")
    a = ap.parse_intermixed_args(argv)
    path = a.config or (CONF / f"{a.preset or 'tiny'}.yaml")
    if a.config and "=" in a.config:  # only overrides given
        a.overrides, path = [a.config, *a.overrides], CONF / f"{a.preset or 'tiny'}.yaml"
    cfg = OmegaConf.merge(OmegaConf.load(path), OmegaConf.from_dotlist(a.overrides))
    root = a.cache_root or cfg.get("cache_dir") or "outputs/cache/presets"
    out = build(cfg.build, root)
    rep = json.loads((out / DONE).read_text())
    rep.pop("recipe", None)
    print(json.dumps(rep, indent=1, ensure_ascii=False))
    from .builder import summary

    print(f"preset: {out}\n{summary(rep)}")


if __name__ == "__main__":
    main()
