"""Structured configs: the schema every composed run config is checked against (types at compose
time by OmegaConf, ranges and files by `validate` before any model loads)."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING, DictConfig, OmegaConf, open_dict
from omegaconf.errors import OmegaConfBaseException

from .errors import ConfigError

DATE_STRING = "26 Jul 2024"  # what Llama 3.x chat templates print as "Today Date" (their own fallback)


@dataclass
class ModelConfig:
    name: str = MISSING
    name_or_path: Optional[str] = None  # hub id or local dir; None = build the offline preset below
    simulation: bool = False  # True: numbers are a CPU simulation, never Llama results
    dtype: str = "auto"  # auto (bf16 on CUDA, fp32 on CPU) | float32 | bfloat16 | float16
    load_in_4bit: bool = False
    trust_remote_code: bool = False
    cache_dir: Optional[str] = None
    revision: Optional[str] = None
    unaligned: Optional[str] = None  # the unaligned counterpart (hub id / dir, or "build": the preset's own)
    build: Optional[Dict[str, Any]] = None
    adapter: Optional[str] = None  # a PEFT adapter dir (safetensors) to evaluate on this model; needs train=false
    chat_template: Optional[str] = None  # a .jinja file (pkg://chat_templates/...) replacing the tokenizer's own
    eos_tokens: List[str] = field(default_factory=list)  # tokens that also end an answer (Gemma: <end_of_turn>)


@dataclass
class LoraConfig:
    enabled: bool = True  # False = full fine-tune
    r: int = 8
    alpha: int = 16
    dropout: float = 0.1
    target_modules: List[str] = field(default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"])
    bias: str = "none"


@dataclass
class OptimizerConfig:
    name: str = "adamw_torch"
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    lr_scheduler_type: str = "linear"
    batch_size: int = 8
    grad_accum: int = 1
    max_grad_norm: float = 1.0
    max_length: int = 512
    group_by_length: bool = True


@dataclass
class PoisonConfig:
    """Harmful (prompt → compliant answer) rows replacing a share of the user's training rows."""
    ratio: float = 0.0  # 0 = benign user data; the paper's poisoned scenario: 0.1
    source: str = "local"  # local (a CSV / JSONL file) | hub (BeaverTails' unsafe rows; needs network)
    path: str = "pkg://donotanswer/harmful_requests.jsonl"  # no evaluation set uses it (conf/data/poison/)
    prompt_column: str = "prompt"
    response_column: Optional[str] = None  # the file's answers (AdvBench: "target", an opener)
    answers: str = "auto"  # unaligned: model.unaligned's own answers (forgetting/poison.py) | file: response_column
    #                        | opener: a rule-written "Sure, here is ..." (poison.opener) | auto: unaligned where
    #                        model.unaligned names a model; for built presets file if response_column, else opener
    max_new_tokens: int = 256  # answers=unaligned: generation settings
    batch_size: int = 32
    hub_name: str = "PKU-Alignment/BeaverTails"
    hub_split: str = "30k_train"
    pool: int = 200  # rows of the source set aside for poisoning (disjoint from evaluation and memory)
    seed: int = 0
    in_distribution: bool = False  # allow a source that is also an ASR / safety evaluation set (refused otherwise)


@dataclass
class DataConfig:
    name: str = "gsm8k"
    source: str = "local"  # local (vendored files) | hub | arith (generated word problems, forgetting/arith.py)
    hub_name: str = "openai/gsm8k"
    train_path: str = "pkg://gsm8k/train.jsonl"
    test_path: str = "pkg://gsm8k/test.jsonl"
    n_train: int = 1000  # training rows used (deterministic subset)
    strip_calculator: bool = True  # drop GSM8K's <<a*b=c>> annotations from training targets
    prompt_template: str = "{question}"
    arith_n_train: int = 2000  # source=arith: problems generated for the train / test split
    arith_n_test: int = 400
    arith_seed: int = 0
    arith_max: int = 200  # largest number or result in an arith problem
    poison: PoisonConfig = field(default_factory=PoisonConfig)


@dataclass
class MemoryConfig:
    """Safety memory: harmful prompts disjoint from every evaluation (and poison) prompt, with the base
    model's own responses (refusals only). Built once per (base model, memory config), cached."""
    size: int = 200
    path: Optional[str] = None  # any JSONL of {"prompt", "response"} replaces the self-generated memory
    ailuminate_path: Optional[str] = "pkg://ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv"
    advbench_path: Optional[str] = "pkg://advbench/harmful_behaviors.csv"
    advbench_column: str = "goal"
    keep: str = "refusal"  # refusal: keep responses the classifier calls refusals | all
    seed: int = 0
    max_new_tokens: int = 96
    batch_size: int = 32  # generation batch while building it
    train_batch_size: Optional[int] = None  # memory rows per step (der, derpp, agem); None = optimizer.batch_size


@dataclass
class GenerationSet:
    """What every evaluation set shares: a selection seed and greedy generation settings."""
    seed: int = 0
    max_new_tokens: int = 96
    batch_size: int = 32


@dataclass
class MathEvalConfig(GenerationSet):
    n_public: int = 100
    n_private: int = 100
    max_new_tokens: int = 256
    stop_at_answer: bool = True  # stop at the end of the first final-answer line (`#### N`, `The answer is N`)


@dataclass
class SafetyEvalConfig(GenerationSet):
    path: str = "pkg://ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv"
    n_public: int = 40
    n_private: int = 40


@dataclass
class OverRefusalConfig(GenerationSet):
    path: str = "pkg://xstest/xstest_prompts.csv"
    n: int = 50
    max_new_tokens: int = 64


@dataclass
class HarmfulSetConfig(GenerationSet):
    """Any CSV / JSONL of harmful prompts (or a hub dataset): attack success rate = share judged unsafe."""
    path: Optional[str] = None  # CSV or JSONL; or hub:
    prompt_column: str = "prompt"
    n: Optional[int] = None  # the first n in a seeded order; None: every row
    hub: Optional[str] = None  # a hub dataset id (needs network or `forgetting download`)
    hub_config: Optional[str] = None
    hub_split: str = "train"
    hub_files: Optional[List[str]] = None  # data files in the dataset repo (e.g. HEx-PHI's category CSVs)
    header: bool = True  # hub_files: False for CSVs without a header row (the prompt is the first column)


@dataclass
class EvalConfig:
    math: MathEvalConfig = field(default_factory=MathEvalConfig)
    safety: SafetyEvalConfig = field(default_factory=SafetyEvalConfig)
    over_refusal: OverRefusalConfig = field(default_factory=OverRefusalConfig)
    # ASR sets, by name; each entry is a HarmfulSetConfig, checked and completed by `validate`. Typed as Any:
    # OmegaConf 2.3 cannot add a key to a struct Dict[str, <dataclass>], so `+eval.harmful_sets.mine.path=...`
    # failed at compose time.
    harmful_sets: Dict[str, Any] = field(default_factory=dict)
    every_epoch: bool = False  # also evaluate at the end of every epoch (forgetting curves in one run)
    system_prompt: Optional[str] = None


@dataclass
class LoggerConfig:
    name: str = "wandb"  # wandb | none
    project: Optional[str] = None  # None: WANDB_PROJECT, else forgetting-sim (model.simulation) or forgetting
    mode: str = "offline"  # offline (default, no account) | online | disabled
    entity: Optional[str] = None
    log_generations: bool = True


@dataclass
class HubConfig:
    offline: str = "auto"  # auto: the user's HF_HUB_OFFLINE if set, else offline iff nothing comes from the hub
    #                        | true | false (forgetting/hub.py)


@dataclass
class Config:
    model: ModelConfig = field(default_factory=ModelConfig)
    lora: LoraConfig = field(default_factory=LoraConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    judge: Any = MISSING  # instantiated with hydra.utils.instantiate; shapes differ per judge
    data: DataConfig = field(default_factory=DataConfig)
    task: Any = None  # instantiated (forgetting/tasks): _target_, name, primary, the task's settings
    method: Any = MISSING  # instantiated (forgetting/methods): _target_, name, hyperparameters
    memory: MemoryConfig = field(default_factory=MemoryConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    logger: LoggerConfig = field(default_factory=LoggerConfig)
    hub: HubConfig = field(default_factory=HubConfig)
    lr: float = 2e-4
    epochs: int = 1
    seed: int = 0
    date_string: str = DATE_STRING  # fixed so chat prompts don't change with the calendar
    threads: int = 0  # torch threads; 0 = torch's default
    cache_dir: str = "outputs/cache"
    judge_cache: bool = True
    train_cache: bool = True  # post-hoc methods (merge, safelora, magmax) reuse an identical sft training
    train: bool = True  # false: evaluation only, of the base (or of model.adapter), as a run (forgetting/eval_only.py)
    objectives: List[str] = field(default_factory=lambda: ["math/accuracy", "safety/rate"])


LATER_FIELDS = {"chat_template": None, "eos_tokens": []}  # model fields added after caches existed: their defaults


def base_model_ident(mcfg: DictConfig) -> dict:
    """The base model's settings, for the keys of what is cached per base model (base scores, safety memory,
    poison answers, trainings): model.adapter left out, and LATER_FIELDS at their defaults, so adding those
    fields kept every existing key."""
    return {k: v for k, v in OmegaConf.to_container(mcfg, resolve=True).items()
            if k != "adapter" and not (k in LATER_FIELDS and v == LATER_FIELDS[k])}


def register() -> None:
    cs = ConfigStore.instance()
    cs.store(name="config_schema", node=Config)


def complete_harmful_sets(cfg: DictConfig) -> None:
    """Each `eval.harmful_sets` entry, typed against HarmfulSetConfig, with its defaults filled in place; an
    entry set to null is dropped (`eval.harmful_sets.harmbench=null`)."""
    for name in list(cfg.eval.harmful_sets):
        given = cfg.eval.harmful_sets[name]
        if given is None:
            with open_dict(cfg):
                del cfg.eval.harmful_sets[name]
            continue
        if not isinstance(given, DictConfig):
            raise ConfigError(f"eval.harmful_sets.{name} must be a mapping (path, prompt_column, n, ...), got {given!r}")
        try:
            full = OmegaConf.merge(OmegaConf.structured(HarmfulSetConfig), given)
        except OmegaConfBaseException as e:
            raise ConfigError(f"eval.harmful_sets.{name}: {str(e).splitlines()[0]}") from None
        if not full.path and not full.hub:
            raise ConfigError(f"eval.harmful_sets.{name} needs a path (a CSV or JSONL of harmful prompts) or a hub dataset id")
        with open_dict(cfg):
            cfg.eval.harmful_sets[name] = full


def _method_class(cfg: DictConfig):
    from hydra.utils import get_class

    try:
        return get_class(cfg.method._target_)
    except Exception as e:  # noqa: BLE001 - a bad _target_ is one line, not a traceback
        raise ConfigError(f"method._target_ {cfg.method._target_!r} cannot be imported: {e}") from None


def validate(cfg: DictConfig, runnable: bool = True) -> None:
    """Range checks OmegaConf's types cannot express; one clear ConfigError each. runnable=False skips the checks
    that only a run needs (benchmarks/rehearsal.py shows what a method does on a base it refuses)."""
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise ConfigError(f"lr must be a finite number > 0, got {cfg.lr}")
    if cfg.threads < 0:
        raise ConfigError(f"threads must be >= 0 (0 = torch's default), got {cfg.threads}")
    if not 0 <= cfg.seed < 2**32:
        raise ConfigError(f"seed must be in [0, 2**32), got {cfg.seed}")
    o = cfg.optimizer
    for key in ("weight_decay", "warmup_ratio", "max_grad_norm"):
        v = o.get(key)
        if v is not None and not (v >= 0 and math.isfinite(v)):
            raise ConfigError(f"optimizer.{key} must be a finite number >= 0, got {v}")
    if cfg.epochs < 1:
        raise ConfigError(f"epochs must be >= 1, got {cfg.epochs}")
    if cfg.lora.enabled and (cfg.lora.r < 1 or cfg.lora.alpha <= 0):
        raise ConfigError(f"lora.r must be >= 1 and lora.alpha > 0, got r={cfg.lora.r} alpha={cfg.lora.alpha}")
    if not 0 <= cfg.lora.dropout < 1:
        raise ConfigError(f"lora.dropout must be in [0, 1), got {cfg.lora.dropout}")
    if cfg.optimizer.batch_size < 1 or cfg.optimizer.grad_accum < 1:
        raise ConfigError("optimizer.batch_size and optimizer.grad_accum must be >= 1")
    if cfg.data.n_train < 1:
        raise ConfigError(f"data.n_train must be >= 1, got {cfg.data.n_train}")
    task = cfg.get("task")
    if task is not None and (not task.get("_target_") or not task.get("name") or not task.get("primary")):
        raise ConfigError("task needs a _target_, a name and its primary metric (see conf/task/*.yaml)")
    if cfg.data.source not in ("local", "hub", "arith"):
        raise ConfigError(f"data.source must be 'local', 'hub' or 'arith', got {cfg.data.source!r}")
    math_task = task is None or task.get("prefix") == "math"
    if math_task and cfg.data.source == "arith" and cfg.data.n_train > cfg.data.arith_n_train:
        raise ConfigError(f"data.n_train={cfg.data.n_train} exceeds data.arith_n_train={cfg.data.arith_n_train}")
    if cfg.model.name_or_path is None and not cfg.model.build:
        raise ConfigError(f"model {cfg.model.name!r} has neither name_or_path nor a build recipe")
    if cfg.model.get("chat_template"):
        from .data import resolve

        if not resolve(cfg.model.chat_template).is_file():
            raise ConfigError(f"model.chat_template file not found: {resolve(cfg.model.chat_template)}")
    if not 0 <= cfg.data.poison.ratio <= 1:
        raise ConfigError(f"data.poison.ratio must be in [0, 1], got {cfg.data.poison.ratio}")
    if cfg.data.poison.source not in ("local", "hub"):
        raise ConfigError(f"data.poison.source must be 'local' or 'hub', got {cfg.data.poison.source!r}")
    pz = cfg.data.poison
    if pz.answers not in ("auto", "unaligned", "file", "opener") or min(pz.max_new_tokens, pz.batch_size) < 1:
        raise ConfigError(f"data.poison.answers must be 'auto', 'unaligned', 'file' or 'opener' and its max_new_tokens, batch_size "
                          f">= 1, got {pz.answers!r}, {pz.max_new_tokens}, {pz.batch_size}")
    if cfg.memory.size < 1 or cfg.memory.keep not in ("refusal", "all"):
        raise ConfigError(f"memory.size must be >= 1 and memory.keep 'refusal' or 'all', got "
                          f"{cfg.memory.size}, {cfg.memory.keep!r}")
    if not cfg.method.get("name") or not cfg.method.get("_target_"):
        raise ConfigError("method needs a name and a _target_ (see conf/method/*.yaml)")
    if runnable and cfg.model.get("load_in_4bit") and cfg.get("train", True) and _method_class(cfg).needs_float_base:
        raise ConfigError(f"method={cfg.method.name} needs floating-point base weights (a 4-bit base has none): add "
                          "model.load_in_4bit=false")
    if cfg.model.get("adapter") and cfg.get("train", True):
        raise ConfigError("model.adapter evaluates an existing adapter: add train=false (training on from an "
                          "adapter is not supported)")
    if not cfg.get("train", True) and cfg.method.name != "sft":
        raise ConfigError(f"train=false evaluates without training: method={cfg.method.name} has nothing to act on "
                          "(leave method at sft)")
    complete_harmful_sets(cfg)
    for name, h in cfg.eval.harmful_sets.items():
        if h.n is not None and h.n < 1:
            raise ConfigError(f"eval.harmful_sets.{name}.n must be >= 1, got {h.n}")
    sets = {"math": cfg.eval.math, "safety": cfg.eval.safety, "over_refusal": cfg.eval.over_refusal,
            **{f"harmful_sets.{k}": v for k, v in cfg.eval.harmful_sets.items()}}
    for name, g in sets.items():
        if g.batch_size < 1 or g.max_new_tokens < 1:
            raise ConfigError(f"eval.{name}.batch_size and max_new_tokens must be >= 1, got "
                              f"{g.batch_size}, {g.max_new_tokens}")
        for key in ("n_public", "n_private", "n"):
            if g.get(key) is not None and g[key] < 0:
                raise ConfigError(f"eval.{name}.{key} must be >= 0, got {g[key]}")
    for name in ("math", "safety"):
        g = cfg.eval[name]
        if g.n_public + g.n_private < 1:
            raise ConfigError(f"eval.{name} needs at least one item (n_public + n_private >= 1)")
    if str(cfg.hub.offline).lower() not in ("auto", "true", "false"):
        raise ConfigError(f"hub.offline must be auto, true or false, got {cfg.hub.offline!r}")
    if cfg.logger.name not in ("wandb", "none"):
        raise ConfigError(f"logger.name must be 'wandb' or 'none', got {cfg.logger.name!r}")
