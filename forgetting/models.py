"""Model loading: a hub id or local dir (real Llama presets) or the offline preset built from its
recipe (forgetting.tiny). Weights only as safetensors; remote code only when a preset says so."""
from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from . import hub
from .errors import ConfigError, HubError

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the message names the fix."""


def resolve_path(mcfg: DictConfig, cache_dir: str | Path) -> str:
    if mcfg.name_or_path:
        return str(mcfg.name_or_path)
    from .tiny import build  # the offline preset, built once and cached

    recipe = OmegaConf.to_container(mcfg.build, resolve=True) if isinstance(mcfg.build, DictConfig) else dict(mcfg.build)
    root = Path(mcfg.cache_dir) if mcfg.get("cache_dir") else Path(cache_dir) / "presets"
    return str(build(recipe, root))


def torch_dtype(name: str):
    if name == "auto":
        return torch.bfloat16 if torch.cuda.is_available() else torch.float32
    try:
        return getattr(torch, name)
    except AttributeError:
        raise ConfigError(f"model.dtype {name!r} is not a torch dtype") from None


def device_map():
    """The whole model on the current CUDA device (the launcher's one visible GPU: a 1B model is never split
    over several, as "auto" would), or None on the CPU."""
    return {"": torch.cuda.current_device()} if torch.cuda.is_available() else None


def quantization(mcfg: DictConfig):
    if not mcfg.load_in_4bit:
        return None
    from transformers import BitsAndBytesConfig

    if not torch.cuda.is_available():
        warnings.warn("load_in_4bit on CPU: bitsandbytes runs it, but far slower than fp32; use it to test "
                      "the QLoRA path, not for speed.", stacklevel=2)
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=torch.bfloat16)


def tokenizer(mcfg: DictConfig, path: str):
    """The tokenizer at `path` (a pad token, and a chat template required)."""
    from transformers import AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(path, trust_remote_code=bool(mcfg.trust_remote_code),
                                            revision=mcfg.get("revision"))
    except OSError as e:
        raise load_error(path, e) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    if mcfg.get("chat_template"):
        use_template(tok, mcfg.chat_template, path)
    if tok.chat_template is None:
        raise ConfigError(f"model {path} has no chat template; set model.chat_template or pick another model")
    return tok


def use_template(tok, template: str, path: str) -> None:
    """Put the preset's template file (model.chat_template, read byte for byte) on the tokenizer; says so when
    the downloaded tokenizer's own template differs (a hub update, or another revision)."""
    from .data import resolve

    text = resolve(template).read_bytes().decode("utf-8")
    if tok.chat_template is not None and tok.chat_template != text:
        log.info("%s: the tokenizer's own chat template differs from model.chat_template (%s); using the latter",
                 path, template)
    tok.chat_template = text


def add_eos_tokens(model, tok, tokens) -> None:
    """Let `tokens` end generation too (forgetting.generate stops at the generation config's EOS ids)."""
    ids = []
    for t in tokens:
        i = tok.convert_tokens_to_ids(t)
        if i is None or i == tok.unk_token_id:
            raise ConfigError(f"model.eos_tokens: {t!r} is not a token of this tokenizer")
        ids.append(i)
    gen = model.generation_config
    have = gen.eos_token_id if isinstance(gen.eos_token_id, (list, tuple)) else [gen.eos_token_id]
    gen.eos_token_id = [i for i in dict.fromkeys([*have, *ids]) if i is not None]


def load(mcfg: DictConfig, cache_dir: str | Path = "outputs/cache", tok=None):
    """→ (model, tokenizer, path). `tok`: another model's tokenizer to use (poison.py: the unaligned model
    answers in the policy's chat template)."""
    from transformers import AutoModelForCausalLM

    path = resolve_path(mcfg, cache_dir)
    common = dict(trust_remote_code=bool(mcfg.trust_remote_code), revision=mcfg.get("revision"))
    quant = quantization(mcfg)
    tok = tok if tok is not None else tokenizer(mcfg, path)
    try:
        model = AutoModelForCausalLM.from_pretrained(
            path, dtype=torch_dtype(mcfg.dtype), use_safetensors=True, quantization_config=quant,
            device_map=device_map(), **common)
    except OSError as e:
        raise load_error(path, e) from None
    if mcfg.get("eos_tokens"):
        add_eos_tokens(model, tok, mcfg.eos_tokens)
    if quant is not None:
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=False)
        if model.device.type == "cpu":
            pin_cpu_4bit_path(model)
    return model, tok, path


def pin_cpu_4bit_path(model) -> int:
    """One CPU path for 4-bit layers on every host. bitsandbytes (0.50) checks `has_avx512bf16()` when a
    Linear4bit is built; on such CPUs an eval-mode, no-grad forward (any generation) repacks the weights in
    place for its AVX-512 kernel. That repack needs in_features % 64 == 0 and out_features % 32 == 0 (the
    micro preset's 32-wide layers fail it), and the packed layout stays: later training forwards run the
    inference kernel, which passes no gradient to the layer's input, so LoRA layers below get none from
    above. Pinned off, every host dequantizes as AVX2 hosts do. Returns the number of layers pinned."""
    n = 0
    for m in model.modules():
        if hasattr(m, "support_avx512bf16_for_cpu"):
            m.support_avx512bf16_for_cpu = False
            n += 1
    return n


def load_error(path: str, err: Exception) -> Exception:
    """The error to raise when `path` fails to load: a one-line HubError for hub access (gated, login,
    offline and not cached: hub.explain), else a ModelLoadError with the loader's own first line."""
    hint = hub.explain(path, err) if hub.is_repo(path) else None
    if hint:
        return HubError(hint)
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if Path(path).exists():
        return ModelLoadError(f"cannot load model from {path}: {msg}")
    return ModelLoadError(f"cannot load model {path!r} ({msg}): check the hub id or the local path")


def unaligned_path(mcfg: DictConfig, cache_dir: str | Path = "outputs/cache") -> str:
    """Where the unaligned counterpart of the model lives: `model.unaligned` (hub id or dir), or "build" for
    a preset's own pretraining checkpoint (<preset>/unaligned)."""
    u = mcfg.get("unaligned")
    if not u:
        raise ConfigError(f"model {mcfg.name!r} names no unaligned counterpart: set model.unaligned")
    if u != "build":
        return str(u)
    if mcfg.name_or_path:
        raise ConfigError("model.unaligned=build only fits a preset built from a recipe; name the unaligned model")
    from .tiny.builder import UNALIGNED

    path = Path(resolve_path(mcfg, cache_dir)) / UNALIGNED
    if not path.is_dir():
        raise ConfigError(f"preset {path.parent} has no unaligned checkpoint: give its recipe a `pretrain` stage")
    return str(path)


def unaligned_weights(mcfg: DictConfig, names: set[str] | None = None, cache_dir: str | Path = "outputs/cache"):
    """The unaligned model's tensors by parameter name (only `names`, if given), read from its safetensors
    files without building the model; a hub id is fetched once into the HF cache (not offline)."""
    from safetensors import safe_open

    path = unaligned_path(mcfg, cache_dir)
    root = Path(path)
    if not root.is_dir():
        from huggingface_hub import snapshot_download

        try:
            root = Path(snapshot_download(path, allow_patterns=["*.safetensors", "*.json"]))
        except Exception as e:  # offline, gated, missing: one line that names the fix
            raise load_error(path, e) from None
    files = sorted(root.glob("*.safetensors"))
    if not files:
        raise ModelLoadError(f"no safetensors weights in {root} (unaligned model {path})")
    out = {}
    for f in files:
        with safe_open(str(f), framework="pt") as st:
            for k in st.keys():
                if names is None or k in names:
                    out[k] = st.get_tensor(k)
    return out
