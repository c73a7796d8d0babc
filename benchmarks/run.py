"""`make bench`: where a sweep's compute goes, as ratios measured in one run on this machine (not unit
tests). Prints one table and appends it, with date, machine, commit and versions, to
benchmarks/results.md.

1. generation: batched (the configured batch) vs one prompt at a time, same prompts, same outputs: on the
   safety prompts (short refusals: the prompt's prefill dominates) and in the math evaluation (long answers)
2. math evaluation: share of generated tokens after the first complete final-answer line (`#### N`, or a line
   opening with `The answer is N`: waste), with and
   without stopping there (grades asserted equal)
3. training: tokens/s and achieved FLOP/s (6·N·tokens) as a share of this machine's matmul peak
4. a 2 x 2 lr x epochs sweep (launch.py): wall time vs its runs' training + generation time, and how
   often the base model, the base evaluation and the judge were loaded or computed
5. `make demo` (its lr x epochs sweep and report): with only the preset cached, and with nothing cached (the
   preset built first, as from a fresh clone); each with a scratch cache directory, so no other cache helps
6. peak resident memory
Preset: --preset tiny (default: its fine-tune answers `The answer is N` and runs on), tiny_math (`make bench
PRESET=tiny_math`: its fine-tune writes `#### N` lines) or micro.
"""
import argparse
import datetime
import os
import platform
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from forgetting import env  # noqa: E402

USER_ENV = dict(os.environ)  # for `make demo`: its caches go where its own FORGETTING_CACHE says
env.setup()
os.environ.setdefault("TQDM_DISABLE", "1")

import torch  # noqa: E402

from forgetting import data, models, train  # noqa: E402
from forgetting.generate import answer_line_done, chat_prompt, generate  # noqa: E402
from forgetting.math import extract_answer  # noqa: E402


def timed(fn, repeat=1):
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def in_turn(fns, repeat: int = 3) -> list[tuple]:
    """(best time, output) of each of `fns`, run in turn `repeat` times: on a shared VM one run of the same
    code varied by 15-30 % (measured), and a slow spell then slows every variant, not one."""
    best = [(float("inf"), None)] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t, out = timed(fn)
            best[i] = min(best[i], (t, out), key=lambda x: x[0])
    return best


def batching(what: str, model, tok, prompts: list[str], max_new: int, batch: int, peak: float, **kw) -> list[tuple]:
    """Table rows: generation batched (the configured `batch`) vs one prompt at a time on the same prompts,
    tokens/s; and the ratio's bound on this machine: one at a time vs the batch's FLOPs at the matmul peak (no
    padding, no per-step overhead, attention not counted: a lower bound on the batched time, so an upper bound)."""
    (t_b, g_b), (t_1, g_1) = in_turn([lambda: generate(model, tok, prompts, max_new, batch, **kw),
                                      lambda: generate(model, tok, prompts, max_new, 1, **kw)])
    same = sum(x["response"] == y["response"] for x, y in zip(g_b, g_1))
    n_b, n_1 = sum(g["n_tokens"] for g in g_b), sum(g["n_tokens"] for g in g_1)
    head, emb = model.get_output_embeddings().weight, model.get_input_embeddings().weight
    body = sum(p.numel() for p in model.parameters() if p is not head and p is not emb)
    prompt_tokens = sum(len(tok(chat_prompt(tok, p), add_special_tokens=False)["input_ids"]) for p in prompts)
    decodes = n_b - sum(not g["stopped"] for g in g_b)  # one pass per new token after the first, stop included
    floor = (2 * body * prompt_tokens + 2 * (body + head.numel()) * decodes) / peak  # prefill: the last logits only
    return [(f"generation, {what}: batched ({batch}) vs one at a time ({same}/{len(prompts)} outputs identical)",
             f"x{t_1 / t_b:.1f} ({n_b / t_b:.0f} vs {n_1 / t_1:.0f} tok/s)", ">= x8, outputs identical",
             t_1 / t_b >= 8 and same == len(prompts)),
            (f"generation, {what}: the bound, one at a time vs the batch's FLOPs at the matmul peak",
             f"x{t_1 / floor:.1f} ({prompt_tokens} prompt + {n_b} new tokens: {floor * 1e3:.0f} ms at the peak, "
             f"{t_b * 1e3:.0f} ms measured = {floor / t_b:.0%} of it)", "", True)]


def after_answer(tok, rows: list[list[int]]) -> tuple[int, int]:
    """Tokens generated after the one that completed each row's first final-answer line, and the rows that have one."""
    after = answered = 0
    for row in rows:
        k = next((k for k in range(1, len(row) + 1) if answer_line_done(tok, row[:k])), None)
        if k is not None:
            after, answered = after + len(row) - k, answered + 1
    return after, answered


def matmul_peak(n: int = 1536, repeat: int = 20) -> float:
    """FLOP/s of a large matmul in the training dtype (fp32 on CPU, bf16 on a GPU that has it), with this
    process's threads: the machine's practical peak."""
    gpu = torch.cuda.is_available()
    dtype = torch.bfloat16 if gpu and torch.cuda.is_bf16_supported() else torch.float32
    n = 8192 if gpu else n
    a, b = (torch.randn(n, n, dtype=dtype, device="cuda" if gpu else "cpu") for _ in range(2))

    def mm():
        c = a @ b
        if gpu:
            torch.cuda.synchronize()
        return c

    mm()
    t, _ = timed(mm, repeat)
    return 2 * n ** 3 / t


def compose(overrides: list[str]):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from forgetting.config import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hcompose(config_name="config", overrides=overrides)


def tuned_model(preset: str, tmp: Path):
    """The preset briefly fine-tuned on GSM8K (tiny's then answers `The answer is N`, tiny_math's `#### N`); its config."""
    cfg = compose([f"model={preset}", "logger=none", "data.n_train=200", "lr=3e-3", "optimizer.batch_size=8",
                   "train_cache=false"])  # time a real training, never a cached one
    model, tok, _ = models.load(cfg.model, cfg.cache_dir)
    import datasets, peft, trl  # noqa: F401,E401  one-off imports (1.3 s, once per sweep worker) are not training
    t0 = time.perf_counter()
    trained, _ = train.finetune(model, tok, data.user_rows(cfg), cfg, tmp)
    train_s = time.perf_counter() - t0
    return cfg, trained, tok, train_s


def train_tokens(cfg, tok) -> int:
    rows = data.user_rows(cfg)
    text = [tok.apply_chat_template([{"role": "user", "content": r["prompt"]},
                                     {"role": "assistant", "content": r["completion"]}], tokenize=False,
                                    date_string=cfg.date_string) for r in rows]
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in text) * cfg.epochs


def sweep(preset: str, tmp: Path) -> dict:
    d = tmp / "sweep"
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "launch.py", "-m", f"model={preset}", "logger=none", "lr=1e-3,3e-3",
                        "epochs=1,2", "data.n_train=200", f"hydra.sweep.dir={d}", f"cache_dir={tmp / 'cache'}"], cwd=ROOT,
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if r.returncode != 0:
        raise SystemExit(f"bench sweep failed:\n{r.stderr[-3000:]}")
    import json

    runs = [json.loads(p.read_text()) for p in d.rglob("metrics.json")]
    work = sum(x["timings"].get("train_s", 0) + sum(v for k, v in x["timings"].items() if k.startswith("eval_"))
               + x["timings"].get("base_eval_s", 0) for x in runs)
    log = r.stdout + r.stderr
    return {"wall": wall, "work": work, "runs": len(runs),
            "model_loads": len(re.findall(r"loading the base model", log)),
            "base_evals": len(re.findall(r"evaluating the base model", log)),
            "judge_builds": len(re.findall(r"building the judge", log))}


def demo(tmp: Path, preset_dir: Path | None) -> float:
    """Wall seconds of `make demo` into a scratch sweep dir, with a scratch cache (FORGETTING_CACHE) that holds
    only `preset_dir` (linked), or nothing: then the preset is built first, as in a fresh clone."""
    kind = "cached" if preset_dir else "fresh"
    cache = tmp / f"demo-cache-{kind}"
    (cache / "presets").mkdir(parents=True)
    if preset_dir is not None:
        (cache / "presets" / preset_dir.name).symlink_to(preset_dir.resolve(), target_is_directory=True)
    say(f"make demo, {'preset cached' if preset_dir else 'nothing cached (the preset is built first)'}")
    t0 = time.perf_counter()
    r = subprocess.run(["make", "--no-print-directory", "demo", f"SWEEP={tmp / ('demo-' + kind)}"], cwd=ROOT,
                       env=dict(USER_ENV, FORGETTING_CACHE=str(cache)), capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"bench: make demo ({kind}) failed:\n{r.stderr[-3000:]}")
    return time.perf_counter() - t0


def say(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--n", type=int, default=32, help="prompts for the generation ratio")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--no-sweep", action="store_true", help="skip the 2 x 2 sweep (minutes)")
    ap.add_argument("--demo", choices=["both", "cached", "fresh", "none"], default="both",
                    help="time `make demo` with the preset cached (minutes) and/or from nothing (the preset build too)")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.md", help="the results file appended to")
    a = ap.parse_args()
    if a.demo != "none" and shutil.which("make") is None:  # found now, not after minutes of measuring
        raise SystemExit("bench: timing `make demo` needs make on PATH (or pass --demo none)")
    torch.set_num_threads(int(os.environ.get("BENCH_THREADS", torch.get_num_threads())))
    rows = []  # (what, value, target, ok)
    peak = matmul_peak()  # measured again after training: the best of both (a busy neighbour lowers it)
    tmp = Path(tempfile.mkdtemp(prefix="bench-"))

    base_cfg = compose([f"model={a.preset}", "logger=none"])  # a preset may inherit another (tiny_math: tiny)
    model, tok, _ = models.load(base_cfg.model, base_cfg.cache_dir)
    n_params = sum(p.numel() for p in model.parameters())
    prompts = [r["prompt_text"] for r in data.ailuminate(
        "pkg://ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv")[: a.n]]
    say(f"generation, safety prompts: batched vs one at a time, best of 3 each ({a.n} prompts)")
    rows += batching("safety prompts (base, short refusals: prefill-bound)", model, tok, prompts, a.tokens,
                     base_cfg.eval.safety.batch_size, peak)

    say("training: a LoRA fine-tune on 200 GSM8K rows (timed)")
    cfg, tuned, tok, train_s = tuned_model(a.preset, tmp / "tune")
    test = data.load_gsm8k(cfg.data, "test")[:64]
    qs = [r["question"] for r in test]
    say("generation, math eval: batched vs one at a time, then 64 questions with and without the answer-line stop")
    rows += batching("math eval (fine-tuned, long answers)", tuned, tok, qs[: a.n], 128, cfg.eval.math.batch_size, peak,
                     stop_at_answer=True)
    full_stats, stop_stats = {}, {}
    t_full, full = timed(lambda: generate(tuned, tok, qs, 256, cfg.eval.math.batch_size, stats=full_stats))
    t_stop, stop = timed(lambda: generate(tuned, tok, qs, 256, cfg.eval.math.batch_size, stop_at_answer=True,
                                          stats=stop_stats))
    assert [extract_answer(x["response"]) for x in full] == [extract_answer(x["response"]) for x in stop]
    capped = [g for g in full if not g["stopped"]]
    n_full = sum(len(r) for r in full_stats["rows"])
    rows.append(("math eval: generations that never stop (hit the 256-token cap), share of tokens",
                 f"{len(capped)}/{len(full)}, {sum(g['n_tokens'] for g in capped) / max(n_full, 1):.0%} of tokens",
                 "", True))
    after, answered = after_answer(tok, full_stats["rows"])
    rows.append(("math eval, no stop: generated tokens after the first complete final-answer line (`#### N`, `The answer is N`)",
                 f"{after / max(n_full, 1):.0%} of {n_full} ({answered}/{len(qs)} answered)", "", True))
    n_stop = sum(len(r) for r in stop_stats["rows"])
    after, answered = after_answer(tok, stop_stats["rows"])
    padding = stop_stats["row_steps"] - n_stop  # steps computed for rows that had already stopped
    rows.append(("math eval, stopping at the answer line (grades equal): tokens generated after it; row-steps on "
                 "finished rows", f"{after / max(n_stop, 1):.0%} of {n_stop} ({answered}/{len(qs)} answered); "
                 f"{padding}; {1 - n_stop / max(n_full, 1):.0%} fewer tokens than no stop, x{t_full / t_stop:.1f} "
                 "faster", "<= 10 %", after / max(n_stop, 1) <= 0.10 and padding == 0))

    tokens = train_tokens(cfg, tok)
    peak = max(peak, matmul_peak())
    achieved = 6 * n_params * tokens / train_s
    rows.append(("training (LoRA): tokens/s, 6·N·tokens FLOP/s (overstates LoRA's work) vs matmul peak",
                 f"{tokens / train_s:.0f} tok/s, {achieved / 1e9:.2f} of {peak / 1e9:.1f} GFLOP/s = {achieved / peak:.1%}",
                 ">= 30 %", achieved / peak >= 0.30))

    if not a.no_sweep:
        say("a 2 x 2 lr x epochs sweep (launch.py -m)")
        s = sweep(a.preset, tmp)
        over = (s["wall"] - s["work"]) / max(s["work"], 1e-9)
        rows.append(("2x2 sweep: wall vs its runs' train + generation", f"{s['wall']:.0f} s vs {s['work']:.0f} s: "
                     f"overhead {over:.0%}", "<= 15 %", over <= 0.15))
        rows.append(("2x2 sweep: base model loads / base evaluations / judge builds",
                     f"{s['model_loads']} / {s['base_evals']} / {s['judge_builds']}", "1 / 1 / 1",
                     (s["model_loads"], s["base_evals"], s["judge_builds"]) == (1, 1, 1)))
    if a.demo != "none":
        tiny = compose(["model=tiny", "logger=none"])
        tiny_dir = Path(models.resolve_path(tiny.model, tiny.cache_dir))  # built first if it is not cached
        for kind, limit in (("cached", 240), ("fresh", 480)):
            if a.demo in (kind, "both"):
                t = demo(tmp, tiny_dir if kind == "cached" else None)
                what = ("make demo, the preset cached (nothing else)" if kind == "cached" else
                        "make demo, nothing cached (the preset built first, as from a fresh clone)")
                rows.append((what, f"{t // 60:.0f} min {t % 60:02.0f} s", f"<= {limit // 60} min", t <= limit))
    rss = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    rows.append(("peak resident memory (this process / the sweep's)", f"{rss / 1024:.0f} MiB", "", True))
    report(rows, a.preset, n_params, a.out)
    shutil.rmtree(tmp, ignore_errors=True)  # scratch runs, caches and a preset build (tens of MB)


def report(rows, preset: str, n_params: int, out: Path) -> None:
    import peft
    import transformers
    import trl

    head = (f"## {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit()}\n\n"
            f"{platform.machine()} ({env.cpu_name()}), {os.cpu_count()} CPUs, {torch.get_num_threads()} threads; torch {torch.__version__}, "
            f"transformers {transformers.__version__}, trl {trl.__version__}, peft {peft.__version__}; preset "
            f"{preset} ({n_params / 1e6:.2f} M params)\n")
    table = ["| measure | value | target | met |", "|---|---|---|---|"]
    table += [f"| {w} | {v} | {t} | {'yes' if ok else 'no'} |" if t else f"| {w} | {v} | | |" for w, v, t, ok in rows]
    text = head + "\n" + "\n".join(table) + "\n"
    print(text)
    if not out.exists():
        out.write_text("# `make bench` results (appended by benchmarks/run.py)\n\n")
    with open(out, "a", encoding="utf-8") as f:
        f.write(text + "\n")
    print(f"appended to {out}")


def commit() -> str:
    try:
        return subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


if __name__ == "__main__":
    main()
