"""`make rehearsal`: the real experiment's models at their real size, with random weights and no hub, run
for a few steps at the real sequence lengths, through the project's own code. Prints the peak memory and the
time of each stage and method, and what they mean for a 16 GB and an 80 GB GPU.

    python benchmarks/rehearsal.py                       # full scale: Llama 3.2 1B policy, Llama Guard 3 1B judge
    python benchmarks/rehearsal.py --scale small         # 2 narrow layers, the real 128k vocabulary (~2 min on CPU)
    python benchmarks/rehearsal.py --methods sft,der --steps 2 --judge llamaguard-7b -o optimizer.batch_size=4

What runs (forgetting/assets/architectures/*.json are the models' published config.json files):
  1. build   the policy (llama-3.2-1b.json), a second random model of the same architecture as its unaligned
             counterpart (SafeLoRA, MagMax read it), and the judge, saved as safetensors (bf16, as on the hub) with
             a small BPE tokenizer (forgetting.tiny.tok; its ids all lie below the models' vocabulary)
  2. load    the policy through models.load (the preset model=llama3_2_1b_instruct: 4-bit NF4 on CUDA)
  3. generate  one batch of the math evaluation (eval.math: batch_size prompts, the longest GSM8K test questions,
             max_new_tokens; a random model seldom writes EOS, so every row runs to the budget) with generate.py
  4. judge   the judge class of conf/judge/<judge> (LlamaGuardJudge), loading the random judge from its folder,
             on one batch of judge.batch_size (AILuminate prompt, response) pairs; responses as long as the longest
             the run judges (eval budgets, poison answers)
  5. per method: `setup` = train.make_trainer (MethodTrainer: the safety memory tokenised, a frozen copy, the
             EWC Fisher), `steps` = trainer.train() for --steps optimizer steps on user rows cut at
             optimizer.max_length (synthetic completions longer than it), `post` = method.after_training
             (merge, SafeLoRA, MagMax); then the LoRA layers are unloaded (run.release_model) or the policy reloaded
             when the method changed its base weights. Post-hoc methods reuse sft's training (reuse.py), as a run
             does. The task loss goes through TRL's fused LM head as on a GPU (--loss gpu; its torch fallback on a
             CPU). Below the config's batch (CPU: batch 1), sft also runs at twice the batch: the per-row slope that
             takes the GPU estimate to the config's batch. --quant 4bit (the default on CUDA): a method that needs
             float base weights stops with a ConfigError, recorded, and reruns on a float base.
Memory: on CUDA torch.cuda.max_memory_allocated, reset per stage; on CPU the process's peak resident set
(VmHWM, reset per stage through /proc/self/clear_refs; sampled every 10 ms where that is not allowed).
On CPU the figures are a feasibility check (does anything blow up at 128k vocabulary and 1B parameters?), not GPU
numbers: the GPU columns are an estimate from them (see `gpu_estimate`); on a GPU the same command measures.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import datetime
import functools
import gc
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from forgetting import env  # noqa: E402

env.setup()
os.environ.setdefault("TQDM_DISABLE", "1")
for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[k] = "1"  # nothing here comes from the hub

import torch  # noqa: E402

ARCH_DIR = ROOT / "forgetting" / "assets" / "architectures"
POLICY = "llama-3.2-1b"
JUDGES = {"llama-guard-3-1b": "llama_guard_3_1b", "llama-guard-3-8b": "llama_guard_3_8b",
          "llamaguard-7b": "llamaguard_7b"}  # architecture file -> conf/judge/<name>.yaml
# the scaled-down variants: layers and widths shrink, the head/KV-head ratio and (small) the vocabulary stay
SCALES = {
    "full": {},
    "small": {"num_hidden_layers": 2, "hidden_size": 256, "intermediate_size": 1024, "num_attention_heads": 4,
              "head_dim": 64},
    "tiny": {"num_hidden_layers": 2, "hidden_size": 64, "intermediate_size": 128, "num_attention_heads": 2,
             "head_dim": 32, "vocab_size": 16384},  # tests: the table's machinery, not the vocabulary
}
# methods whose extra forwards take a batch of the training batch's size: DER / DER++ / A-GEM a memory batch, LwF the
# aligned model on the user batch (their increase over sft's grows with the batch; EWC's and L2's penalty does not)
BATCH_EXTRA = {"der", "derpp", "agem", "lwf"}
CUDA_OVERHEAD = 0.5 * 2**30  # CUDA context and allocator slack beside what torch allocates (estimate)
GB = 2**30


# ------------------------------------------------------------------ models
def architecture(name: str, scale: str) -> dict:
    """The published config (notes `_*` dropped), scaled: KV heads keep their share of the attention heads."""
    arch = {k: v for k, v in json.loads((ARCH_DIR / f"{name}.json").read_text()).items() if not k.startswith("_")}
    over = dict(SCALES[scale])
    if over:
        ratio = arch["num_attention_heads"] // arch["num_key_value_heads"]
        over["num_key_value_heads"] = max(1, over["num_attention_heads"] // ratio)
    return {**arch, **over}


def make_tokenizer(vocab: int = 16384):
    """A byte-level BPE with the tiny preset's chat template, trained on the texts the run tokenizes (GSM8K,
    AILuminate, the Llama Guard prompts): ~4 characters a token on them, about Llama 3's rate on English text, so
    that a row's tokens are about as many as with the real tokenizer. Every id lies below the models' vocabulary."""
    from forgetting import data
    from forgetting.judges.llama_guard import build_prompt_v1, build_prompt_v3
    from forgetting.tiny.tok import train_tokenizer

    texts = list(_solutions())
    ailuminate = "pkg://ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv"
    texts += [r["prompt_text"] for r in data.ailuminate(ailuminate)]
    texts += [build_prompt_v1("", ""), build_prompt_v3("", "", variant="8b"), build_prompt_v3("", "", variant="1b")]
    return train_tokenizer(texts, vocab, 131072)


def param_counts(arch: dict) -> dict:
    """Parameters by kind, from a meta-device model: `linear` (decoder projections: what bitsandbytes
    quantizes) and `other` (embeddings, an untied output layer, norms)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.for_model(**{k: v for k, v in arch.items() if not k.endswith("_token_id")})
    with torch.device("meta"):
        m = AutoModelForCausalLM.from_config(cfg)
    head = m.get_output_embeddings()
    linear = sum(mod.weight.numel() for mod in m.modules() if isinstance(mod, torch.nn.Linear) and mod is not head)
    total = sum(p.numel() for p in m.parameters())
    return {"total": total, "linear": linear, "other": total - linear}


def weight_bytes(counts: dict, mode: str) -> float:
    """Bytes of the weights on a GPU: bf16, or 4-bit NF4 with double quantization (bitsandbytes: 0.5 byte a
    weight plus an 8-bit absmax per block of 64) for the decoder projections and bf16 for the rest."""
    if mode == "4bit":
        return counts["linear"] * (0.5 + 1 / 64) + counts["other"] * 2
    return counts["total"] * (4 if mode == "fp32" else 2)


def save_random(arch: dict, tok, out: Path, seed: int, chat_template: bool = True) -> Path:
    """A random model of this architecture saved as bf16 safetensors (as the hub stores it) with `tok`; the
    special-token ids are the tokenizer's."""
    from transformers import AutoConfig, AutoModelForCausalLM, GenerationConfig

    ids = {"bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id, "pad_token_id": tok.pad_token_id}
    cfg = AutoConfig.for_model(**{**arch, **ids})
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16)
    model.generation_config = GenerationConfig(**ids, do_sample=False)
    model.save_pretrained(out, safe_serialization=True)
    del model
    template = tok.chat_template
    if not chat_template:  # the judge: no template, so it sends the published Llama Guard prompt (build_prompt_*)
        tok.chat_template = None
    try:
        tok.save_pretrained(out)
    finally:
        tok.chat_template = template
    return out


def resident(model) -> None:
    """Read every weight once: a model loaded in its files' dtype may still map them (safetensors), and its pages
    would otherwise count against the first stage that reads them."""
    with torch.no_grad():
        for p in model.parameters():
            if p.device.type == "cpu":
                p.sum()


def dir_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in Path(path).glob("*.safetensors"))


# ------------------------------------------------------------------ measuring
def _trim() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed heap back to the OS, so the next stage starts clean


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _hwm() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise OSError("no VmHWM")


class Meter:
    """Stages, each with its time and peak memory (CUDA: allocated by torch; CPU: resident set)."""

    def __init__(self, cuda: bool, on_row=None):
        self.cuda = cuda
        self.on_row = on_row  # called after each stage (the --json file, so a killed run leaves its rows)
        self.rows: list[dict] = []
        self.exact = False
        if not cuda:
            try:
                with open("/proc/self/clear_refs", "w") as f:
                    f.write("5")
                self.exact = _hwm() > 0
            except OSError:
                self.exact = False

    def now(self) -> int:
        return torch.cuda.memory_allocated() if self.cuda else _rss()

    @contextlib.contextmanager
    def stage(self, stage: str, method: str = "", **info):
        _trim()
        row = {"stage": stage, "method": method, **info}
        stop, peak = threading.Event(), [0]
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        elif self.exact:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
        else:
            def sample():
                while not stop.wait(0.01):
                    peak[0] = max(peak[0], _rss())
            threading.Thread(target=sample, daemon=True).start()
        row["start_bytes"] = self.now()
        t0 = time.perf_counter()
        try:
            yield row
        except Exception as e:
            row["error"] = f"{type(e).__name__}: {e}".splitlines()[0][:300]
            raise
        finally:
            if self.cuda:
                torch.cuda.synchronize()
            row["seconds"] = time.perf_counter() - t0
            stop.set()
            row["peak_bytes"] = (torch.cuda.max_memory_allocated() if self.cuda else
                                 _hwm() if self.exact else max(peak[0], _rss()))
            row["delta_bytes"] = max(0, row["peak_bytes"] - row["start_bytes"])
            self.rows.append(row)
            if self.on_row is not None:
                self.on_row()
            print(f"[rehearsal] {method + ': ' if method else ''}{stage}: {row['seconds']:.1f} s, peak "
                  f"{row['peak_bytes'] / GB:.2f} GB (+{row['delta_bytes'] / GB:.2f})"
                  + (f"  FAILED {row['error']}" if "error" in row else ""), file=sys.stderr, flush=True)


# ------------------------------------------------------------------ config and data
def compose(overrides: list[str], runnable: bool = True):
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from forgetting.config import register, validate

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hcompose("config", overrides=overrides)
    validate(cfg, runnable=runnable)
    return cfg


@functools.lru_cache(maxsize=1)
def _solutions() -> tuple[str, ...]:
    from forgetting.tiny import corpus

    return tuple(corpus.gsm8k_text("pkg://gsm8k/train.jsonl"))


def filler(tok, n: int, seed: int) -> str:
    """Text of n tokens (about: decoding and encoding again may merge a pair at the seams): GSM8K solutions in a
    seeded order, cut after their n-th token."""
    texts = list(_solutions())
    random.Random(seed).shuffle(texts)
    ids: list[int] = []
    for t in texts:
        ids += tok(t + "\n", add_special_tokens=False)["input_ids"]
        if len(ids) >= n:
            break
    return tok.decode(ids[:n])


def user_rows(cfg, tok, n: int) -> list[dict]:
    """The longest GSM8K questions (under half of optimizer.max_length) with completions that run past it: every
    row is cut at the real length."""
    from forgetting import data

    top = cfg.optimizer.max_length // 2
    qs = sorted((r["question"] for r in data.load_gsm8k(cfg.data, "train")), key=len, reverse=True)
    qs = [q for q in qs if len(tok(q, add_special_tokens=False)["input_ids"]) < top][:n]
    return [{"prompt": q, "completion": filler(tok, 2 * cfg.optimizer.max_length, i), "source": "user"}
            for i, q in enumerate(qs)]


def memory_rows(cfg, tok, n: int) -> list[dict]:
    """The safety memory's shape: the longest AILuminate prompts (under half of optimizer.max_length), answers
    memory.max_new_tokens long."""
    from forgetting import data

    top = cfg.optimizer.max_length // 2
    ps = sorted((r["prompt_text"] for r in data.ailuminate(cfg.memory.ailuminate_path)), key=len, reverse=True)
    ps = [p for p in ps if len(tok(p, add_special_tokens=False)["input_ids"]) < top][:n]
    return [{"prompt": p, "completion": filler(tok, cfg.memory.max_new_tokens, 1000 + i), "source": "memory"}
            for i, p in enumerate(ps)]


def judged_length(cfg) -> int:
    """The longest response the run judges: evaluation budgets, and the poison answers (answers=unaligned)."""
    e = cfg.eval
    return max([e.safety.max_new_tokens, e.over_refusal.max_new_tokens, cfg.data.poison.max_new_tokens,
                *(h.max_new_tokens for h in e.harmful_sets.values())])


# ------------------------------------------------------------------ the stages
def all_methods() -> list[str]:
    return sorted(p.stem for p in (ROOT / "conf" / "method").glob("*.yaml"))


@functools.cache
def float_base_methods() -> frozenset[str]:
    """The methods that read the base weights as floats (their class's needs_float_base: EWC's Fisher, SafeLoRA's
    and MagMax's merges): on a 4-bit base they stop with a ConfigError, and run on a bf16 one."""
    from hydra.utils import get_class
    from omegaconf import OmegaConf

    return frozenset(m for m in all_methods()
                     if get_class(OmegaConf.load(ROOT / "conf" / "method" / f"{m}.yaml")._target_).needs_float_base)


def rehearse(args) -> dict:
    from hydra.utils import instantiate

    from forgetting import data, generate, models
    from forgetting.errors import ConfigError

    cuda = torch.cuda.is_available()
    result: dict = {}
    meter = Meter(cuda, on_row=(lambda: Path(args.json).write_text(json.dumps(result, indent=1, default=str)))
                  if args.json else None)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="rehearsal-"))
    work.mkdir(parents=True, exist_ok=True)
    judge_arch_name = None if args.judge == "none" else args.judge
    result.update(rows=meter.rows, scale=args.scale, device="cuda" if cuda else "cpu", failed=[])
    try:
        p_arch = architecture(POLICY, args.scale)
        j_arch = architecture(judge_arch_name, args.scale) if judge_arch_name else None
        result["policy_params"] = param_counts(p_arch)
        result["judge_params"] = param_counts(j_arch) if j_arch else None
        with meter.stage("build (random weights, saved)"):
            tok = make_tokenizer()
            if len(tok) > p_arch["vocab_size"]:
                raise ValueError(f"the tokenizer's {len(tok)} ids do not fit the vocabulary of {p_arch['vocab_size']}")
            policy_dir = save_random(p_arch, tok, work / "policy", seed=0)
            unaligned_dir = save_random(p_arch, tok, work / "unaligned", seed=1)
            judge_dir = save_random(j_arch, tok, work / "judge", seed=2, chat_template=False) if j_arch else None
        result["unaligned_bytes"] = dir_bytes(unaligned_dir)

        quant = args.quant if args.quant != "auto" else ("preset" if cuda else "none")
        base = [
            "model=llama3_2_1b_instruct", f"model.name_or_path={policy_dir}", f"model.unaligned={unaligned_dir}",
            "logger=none", f"cache_dir={work / 'cache'}", "judge_cache=false", "train_cache=true"]
        if judge_arch_name:
            base += [f"judge={JUDGES[judge_arch_name]}", f"judge.model_name_or_path={judge_dir}"]
        real = compose(base + list(args.override))  # the run as configured: its batch, 4-bit or not, on a GPU
        if quant != "preset":
            base.append(f"model.load_in_4bit={quant == '4bit'}")
        if args.dtype:
            base.append(f"model.dtype={args.dtype}")
            if judge_arch_name:
                base.append(f"judge.dtype={args.dtype}")
        base += list(args.override)
        cfg_batch = real.optimizer.batch_size
        if args.batch:
            base.append(f"optimizer.batch_size={args.batch}")
        cfg = compose(base)
        result.update(batch=cfg.optimizer.batch_size, cfg_batch=cfg_batch, max_length=cfg.optimizer.max_length,
                      four_bit=bool(cfg.model.load_in_4bit), dtype=str(models.torch_dtype(cfg.model.dtype)),
                      steps=args.steps, loss=args.loss, gpu_4bit=bool(real.model.load_in_4bit),
                      judge_4bit=bool(judge_arch_name and real.judge.get("load_in_4bit")))

        def load(c):
            with meter.stage("load policy", note=base_note(c)):
                out = models.load(c.model, c.cache_dir)
                resident(out[0])
                return out

        def base_note(c):
            return "4-bit base" if c.model.load_in_4bit else f"{str(models.torch_dtype(c.model.dtype))[6:]} base"

        model, tok, _ = load(cfg)

        # ---- one generation batch, the math evaluation's (the largest budget)
        g = cfg.eval.math
        prompts = sorted((r["question"] for r in data.load_gsm8k(cfg.data, "test")), key=len, reverse=True)
        prompts = prompts[:g.batch_size]
        if "generate" in args.stages:
            try:
                with meter.stage("generate", "", batch=len(prompts), new_tokens=g.max_new_tokens) as row:
                    stats = {}
                    out = generate.generate(model, tok, prompts, g.max_new_tokens, g.batch_size,
                                            cfg.eval.system_prompt, "rehearsal", cfg.date_string,
                                            stop_at_answer=g.stop_at_answer, stats=stats)
                    texts = [generate.chat_prompt(tok, p, cfg.eval.system_prompt, cfg.date_string) for p in prompts]
                    width = max(len(ids) for ids in tok(texts, add_special_tokens=False)["input_ids"])
                    row["tokens"] = f"{len(prompts)} x ({width} + {max(o['n_tokens'] for o in out)})"
            except Exception:
                result["failed"].append("generate")
                traceback.print_exc()

        # ---- one judge batch
        judge = None
        if judge_arch_name and "judge" in args.stages:
            try:
                jb = cfg.judge.batch_size
                hp = sorted((r["prompt_text"] for r in data.ailuminate(cfg.eval.safety.path)), key=len,
                            reverse=True)[:jb]
                resp = [filler(tok, judged_length(cfg), 2000 + i) for i in range(jb)]
                judge = instantiate(cfg.judge)
                with meter.stage("judge (load + one batch)", judge_arch_name, batch=jb) as row:
                    verdicts = judge(hp, resp)
                    width = max(len(judge.tokenizer(judge.render(p, r), add_special_tokens=False)["input_ids"])
                                for p, r in zip(hp, resp))
                    row["tokens"] = f"{jb} x ({width} + {cfg.judge.max_new_tokens})"
                assert len(verdicts) == jb
            except Exception:
                result["failed"].append("judge")
                traceback.print_exc()
            result["judge_cpu_bytes"] = (sum(p.numel() * p.element_size() for p in judge.model.parameters())
                                         if judge is not None and judge.model is not None else 0)
            if not args.keep_judge:
                judge = None
                _trim()
        result["judge_resident"] = judge is not None

        # ---- training, each method
        b = cfg.optimizer.batch_size
        users = user_rows(cfg, tok, max(args.steps * 2 * b * cfg.optimizer.grad_accum, 10))
        mem = memory_rows(cfg, tok, max(8, 4 * b))
        slope = "train" in args.stages and b < cfg_batch and "sft" in args.methods
        for name in (args.methods if "train" in args.stages else []):
            extra = [f"method={name}"]
            if name == "ewc":
                extra.append(f"method.fisher_samples={args.fisher_samples}")
            mcfg = compose(base + extra, runnable=False)  # a 4-bit base that validate refuses: show the method's own error
            note = ""
            for attempt in range(2):
                try:
                    model, note = train_method(meter, mcfg, name, model, tok, users, mem, args.steps, work, load,
                                               base_note, args.loss == "gpu")
                    break
                except ConfigError as e:  # a method that needs float base weights on a 4-bit base: say so, bf16
                    if attempt or not mcfg.model.load_in_4bit or "4-bit" not in str(e):
                        raise
                    print(f"[rehearsal] {name}: {e} -> rerun on a float base", file=sys.stderr)
                    meter.rows[-1]["error"] = "ConfigError on a 4-bit base (float weights needed): rerun on a float one"
                    meter.rows[-1]["fallback"] = True
                    mcfg = compose(base + extra + ["model.load_in_4bit=false"])
                    model = None
                    _trim()
                    model, tok, _ = load(mcfg)
                except Exception:
                    result["failed"].append(name)
                    traceback.print_exc()
                    model = None
                    _trim()
                    model, tok, _ = load(cfg)  # a clean base for the next method
                    break
            if mcfg.model.load_in_4bit != cfg.model.load_in_4bit:  # back to the preset's base
                model = None
                _trim()
                model, tok, _ = load(cfg)
            if name == "sft" and slope:  # sft again at twice the batch: what one more row costs (gpu_estimate)
                try:
                    scfg = compose(base + ["method=sft", f"optimizer.batch_size={2 * b}"])
                    model, _ = train_method(meter, scfg, "sft", model, tok, users, mem, args.steps, work, load,
                                            base_note, args.loss == "gpu", slope=True)
                except Exception:
                    result["failed"].append("sft (slope)")
                    traceback.print_exc()
                    model = None
                    _trim()
                    model, tok, _ = load(cfg)
    finally:
        if not args.workdir:
            shutil.rmtree(work, ignore_errors=True)
    return result


def train_method(meter, cfg, name, model, tok, users, mem, steps, work, load, base_note, fused: bool,
                 slope: bool = False):
    """One method through the project's training path (train.finetune's, in stages): make_trainer (the method's
    setup), `steps` optimizer steps, after_training; a post-hoc method reuses an identical sft training as
    finetune does (reuse.py, train_cache). → the base for the next method."""
    from forgetting import reuse, run, train
    from forgetting.methods.base import Method

    method = run.build_method(cfg)
    memory = mem if method.needs_memory else None
    rows = method.train_rows(users, memory or [], cfg.seed)
    run_dir = work / "runs" / name
    run_dir.mkdir(parents=True, exist_ok=True)
    note = base_note(cfg)
    cached = None
    if reuse.eligible(cfg, method) and method.post_hoc and (reuse.path(cfg, rows) / "history.json").is_file():
        with meter.stage("setup", name, note=note + ", sft's training reused"):
            cached = reuse.load(model, cfg, rows)
    if cached is not None:
        trained = cached[0]
    else:
        with meter.stage("setup", name, note=note + (", the batch doubled" if slope else "")):
            trainer, log = train.make_trainer(model, tok, rows, cfg, run_dir, method=method, memory=memory)
            trainer.args.max_steps = steps
            if fused:  # the task loss as on a GPU: TRL's chunked LM head, never the whole logits tensor
                trainer.fused_lm_head = True
        width = max(len(x) for x in trainer.train_dataset["input_ids"])
        b = cfg.optimizer.batch_size
        with meter.stage("steps", name, note=note + (", the batch doubled: the per-row slope" if slope else ""),
                         batch=b, tokens=f"{b} x {width}" + (" (memory batches)" if name == "lisa" else "")):
            trainer.train()
        trained = trainer.model
        if reuse.eligible(cfg, method) and not slope:  # sft's training, for the post-hoc methods after it
            reuse.save(trained, log.history, cfg, rows)
        trainer = None
    if type(method).after_training is not Method.after_training:  # merge, SafeLoRA, MagMax: a post stage
        with meter.stage("post", name, note=note):
            trained = method.after_training(trained)
    if method.modifies_base or not cfg.lora.enabled or not hasattr(trained, "unload"):
        trained = None
        _trim()
        model, _, _ = load(cfg)
    else:
        model = trained.unload()  # as run.release_model: the LoRA layers out, the base untouched
    return model, note


# ------------------------------------------------------------------ the table
def row_slope(res: dict) -> tuple[float | None, dict | None]:
    """(bytes one more training row adds, sft's row at the run's batch), from sft at the batch and at twice it."""
    sft = [r for r in res["rows"] if r["stage"] == "steps" and r["method"] == "sft" and "error" not in r]
    one = next((r for r in sft if r.get("batch") == res["batch"]), None)
    two = next((r for r in sft if r.get("batch") == 2 * res["batch"]), None)
    if one is None or two is None:
        return None, one
    return max(0.0, (two["delta_bytes"] - one["delta_bytes"]) / res["batch"]), one


def gpu_estimate(row: dict, res: dict) -> float | None:
    """GPU memory (bytes) of the stage in a real run, the judge resident (run.worker_judge keeps it loaded).
    On CUDA: the measurement (+ the judge's weights where the rehearsal freed it). On CPU: the weights as they
    sit on a GPU (a 4-bit policy, bf16 for the methods that need float weights; the judge in bf16, or 4-bit with
    judge.load_in_4bit) + what the stage added to the CPU process (in the CPU run's dtype: with fp32 an upper bound)
    + the CUDA context, less what stays in host RAM on a GPU machine (the judge's CPU copy in its own stage, the
    unaligned weights SafeLoRA / MagMax read). Training steps are taken to the config's batch B from the run's
    batch b: + (B - b) x the per-row slope (sft at b and at 2b), and for the methods whose extra forwards take B rows
    too (BATCH_EXTRA) their increase over sft's x B / b; without the slope, the whole increase x B / b (an upper
    bound)."""
    if row["stage"].startswith(("build", "load")):
        return None
    jp = res.get("judge_params")
    judge_gpu = weight_bytes(jp, "4bit" if res.get("judge_4bit") else "bf16") if jp else 0
    added = row["delta_bytes"]
    b, B = row.get("batch", res["batch"]), res["cfg_batch"]
    if row["stage"] == "steps" and B != b:
        slope, sft = row_slope(res)
        if slope is None:
            added *= B / b
        else:
            added += slope * (B - b)
            if row["method"] in BATCH_EXTRA and sft is not None:
                added += max(0, row["delta_bytes"] - sft["delta_bytes"]) * (B / b - 1)
    if res["device"] == "cuda":
        resident = row["start_bytes"] + (0 if res["judge_resident"] or row["stage"].startswith("judge") else judge_gpu)
        return resident + added + CUDA_OVERHEAD
    mode = "4bit" if res.get("gpu_4bit", True) and row["method"] not in float_base_methods() else "bf16"
    policy_gpu = weight_bytes(res["policy_params"], mode)
    if row["stage"].startswith("judge"):
        added = max(0, added - res.get("judge_cpu_bytes", 0))
    if row["stage"] == "post" and row["method"] in ("safelora", "magmax"):
        added = max(0, added - res["unaligned_bytes"])
    return policy_gpu + judge_gpu + added + CUDA_OVERHEAD


def table(res: dict) -> str:
    cpu = res["device"] == "cpu"
    lines = ["| stage | method | tokens | time (s) | peak (GB) | +stage (GB) | GPU est. (GB) | 16 GB | 80 GB |",
             "|---|---|---|--:|--:|--:|--:|:-:|:-:|"]
    for r in res["rows"]:
        est = gpu_estimate(r, res)
        fits = ("", "") if est is None else tuple("yes" if est <= cap * GB else "**no**" for cap in (16, 80))
        err = "" if "error" not in r else f" ({r['error']})" if r.get("fallback") else f" FAILED: {r['error']}"
        who = ", ".join(x for x in (r["method"], r.get("note")) if x)
        lines.append(f"| {r['stage']}{err} | {who} | {r.get('tokens', '')} | {r['seconds']:.1f} | "
                     f"{r['peak_bytes'] / GB:.2f} | {r['delta_bytes'] / GB:.2f} | "
                     f"{'' if est is None else f'{est / GB:.1f}'} | {fits[0]} | {fits[1]} |")
    pp, jp = res["policy_params"], res.get("judge_params")
    w = (f"policy {pp['total'] / 1e9:.2f} B parameters: {weight_bytes(pp, '4bit') / GB:.2f} GB in 4-bit NF4, "
         f"{weight_bytes(pp, 'bf16') / GB:.2f} GB in bf16")
    if jp:
        w += f"; judge {jp['total'] / 1e9:.2f} B: {weight_bytes(jp, 'bf16') / GB:.2f} GB in bf16"
    judges = {n: param_counts(architecture(n, "full")) for n in JUDGES}
    w += (". The judges at full size on a GPU, bf16 / 4-bit: " +
          ", ".join(f"{n} {weight_bytes(c, 'bf16') / GB:.1f} / {weight_bytes(c, '4bit') / GB:.1f} GB"
                    for n, c in judges.items()))
    if res["scale"] == "full" and jp:
        extra = weight_bytes(judges["llamaguard-7b"], "bf16") - weight_bytes(jp, "bf16")
        if extra > 0:
            w += (f"; with llamaguard-7b (the report's judge) resident in bf16 instead, add {extra / GB:.1f} GB "
                  "to every GPU estimate")
    loss = {"gpu": "the task loss through TRL's fused LM head, as on a GPU (its torch fallback here)",
            "device": "the task loss as the project computes it on this device"}[res.get("loss", "device")]
    notes = [f"Scale `{res['scale']}` on {res['device'].upper()}; policy {res['dtype'][6:]}"
             f"{', 4-bit NF4' if res['four_bit'] else ''}; training batch {res['batch']} (the config's: "
             f"{res['cfg_batch']}), {res['steps']} optimizer steps at max_length {res['max_length']}; {loss}.", w + "."]
    if cpu:
        policy = ("in 4-bit; bf16 for " + ", ".join(sorted(float_base_methods())) + ", which need float weights"
                  if res.get("gpu_4bit", True) else "in bf16")
        notes.append("CPU: `peak` is the process's peak resident memory in the stage (everything loaded included), "
                     "`+stage` what the stage added. The GPU columns are an estimate (benchmarks/rehearsal.py "
                     "`gpu_estimate`): the weights as they sit on a GPU (the policy "
                     f"{policy}"
                     f"; the judge{' in 4-bit' if res.get('judge_4bit') else ' in bf16'}, resident as in a run) + the "
                     "stage's increase here + 0.5 GB of CUDA context; training steps taken to the config's batch "
                     + ("with the per-row slope measured on sft (at the batch and at twice it; DER, DER++, "
                        "LwF, A-GEM scale their extra batch too). " if row_slope(res)[0] is not None else
                        "as the whole increase x the batch ratio (an upper bound: no sft at twice the batch to measure "
                        "the per-row slope). ")
                     + "A feasibility check, not GPU numbers: on a GPU the same command measures.")
    else:
        notes.append("CUDA: `peak` is torch.cuda.max_memory_allocated in the stage, `+stage` over its start; the "
                     "GPU column adds the CUDA context (0.5 GB) and, where the rehearsal freed the judge, its weights.")
    if res["failed"]:
        notes.append(f"FAILED: {', '.join(res['failed'])} (tracebacks on stderr).")
    return "\n".join(lines) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n"


def header(res: dict) -> str:
    import peft
    import transformers
    import trl

    dev = torch.cuda.get_device_name(0) if res["device"] == "cuda" else env.cpu_name()
    return (f"## {datetime.date.today().isoformat()} · scale {res['scale']} · {dev} · {os.cpu_count()} cores · "
            f"torch {torch.__version__}, transformers {transformers.__version__}, trl {trl.__version__}, "
            f"peft {peft.__version__} · {platform.python_version()}\n")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--methods", default="all", help="comma-separated conf/method names, or all")
    ap.add_argument("--steps", type=int, default=2, help="optimizer steps per method")
    ap.add_argument("--batch", type=int, default=None,
                    help="training batch (default: the config's on CUDA, 1 on CPU; the GPU estimates scale to the "
                         "config's)")
    ap.add_argument("--judge", choices=[*JUDGES, "none"], default="llama-guard-3-1b")
    ap.add_argument("--dtype", default=None,
                    help="model.dtype and judge.dtype (default the presets': bf16 on CUDA, fp32 on CPU)")
    ap.add_argument("--quant", choices=["auto", "4bit", "none"], default="auto",
                    help="auto: the preset's 4-bit NF4 on CUDA, none on CPU")
    ap.add_argument("--loss", choices=["gpu", "device"], default="gpu",
                    help="gpu: the task loss through TRL's fused LM head, as on a GPU (on CPU its torch fallback); "
                         "device: the project's choice for this device (CPU: the model's own loss)")
    ap.add_argument("--fisher-samples", type=int, default=4,
                    help="EWC's Fisher examples (time, not memory: one at a time)")
    ap.add_argument("--keep-judge", action=argparse.BooleanOptionalAction, default=None,
                    help="keep the judge loaded while training, as a run does (default: on CUDA only)")
    ap.add_argument("--stages", default="generate,judge,train",
                    help="which of generate, judge, train to run (comma-separated; the policy loads in any case)")
    ap.add_argument("-o", "--override", action="append", default=[], help="a Hydra override of the run config")
    ap.add_argument("--workdir", default=None, help="keep the random models here (default: a temporary folder)")
    ap.add_argument("--json", default=None, help="write the rows here")
    ap.add_argument("--md", default=None, help="append the table (with date, machine, versions) to this file")
    ap.add_argument("--table-from", default=None, help="print the table of an earlier --json file, run nothing")
    args = ap.parse_args(argv)
    if args.table_from:
        print(table(json.loads(Path(args.table_from).read_text())))
        return 0
    args.methods = all_methods() if args.methods == "all" else [m for m in args.methods.split(",") if m]
    args.methods.sort(key=lambda m: m != "sft")  # first: the post-hoc methods reuse its training
    args.stages = set(args.stages.split(","))
    if args.stages - {"generate", "judge", "train"}:
        ap.error(f"unknown stages {sorted(args.stages - {'generate', 'judge', 'train'})}")
    unknown = sorted(set(args.methods) - set(all_methods()))
    if unknown:
        ap.error(f"unknown methods {unknown}; choose from {all_methods()}")
    cuda = torch.cuda.is_available()
    if args.batch is None and not cuda:
        args.batch = 1
    if args.keep_judge is None:
        args.keep_judge = cuda
    t0 = time.perf_counter()
    res = rehearse(args)
    res["total_seconds"] = time.perf_counter() - t0
    text = header(res) + "\n" + table(res)
    print(text)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    if args.md:
        with open(args.md, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    return 1 if res["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
