"""The process environment: W&B offline by default, W&B and matplotlib caches inside the project. The Hugging
Face hub is the user's: HF_HOME, the hub cache and the login are never moved, and offline mode is decided per
run from the composed config (forgetting/hub.py)."""
import logging
import os
import platform
import re
from pathlib import Path


def setup(root: str | Path = "outputs") -> None:
    """Set defaults before wandb is imported; a user's own values win."""
    from . import hub

    hub.user_env()  # remember the user's HF_HUB_OFFLINE & co. before any run sets them (hub.apply)
    cache = Path(os.environ.get("FORGETTING_CACHE", Path(root) / "cache")).resolve()
    defaults = {
        "WANDB_MODE": "offline",
        "WANDB_DIR": str(cache / "wandb"),
        "WANDB_CACHE_DIR": str(cache / "wandb" / "cache"),
        "WANDB_DATA_DIR": str(cache / "wandb" / "data"),
        "WANDB_CONFIG_DIR": str(cache / "wandb" / "config"),
        "MPLCONFIGDIR": str(cache / "matplotlib"),
        "TOKENIZERS_PARALLELISM": "false",
        "WANDB_SILENT": "true",
        "HYDRA_FULL_ERROR": os.environ.get("HYDRA_FULL_ERROR", "0"),
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    # bitsandbytes warns on every CPU import about an optional kernels package: noise, not news
    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)


def cpu_name() -> str:
    """The CPU's model name and widest vector unit: fp32 results and speed differ between them (README)."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine()
    name = re.search(r"^model name\s*:\s*(.+)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.+)$", info, re.M)
    flags = set(flags.group(1).split()) if flags else set()
    isa = next((label for flag, label in (("avx512f", "AVX-512"), ("avx2", "AVX2"), ("avx", "AVX")) if flag in flags),
               "no AVX")
    return f"{name.group(1).strip() if name else platform.machine()}, {isa}"


def device_name(model) -> str:
    """Where a model runs, for its run's record: "cuda:0 (NVIDIA ...), bfloat16" (or 4-bit) or "cpu (AMD EPYC,
    AVX2; 2 threads), float32"."""
    import torch

    dev, dtype = model.device, str(next(model.parameters()).dtype).removeprefix("torch.")
    if getattr(model, "is_loaded_in_4bit", False):
        dtype = "4-bit"
    if dev.type == "cuda":
        return f"{dev} ({torch.cuda.get_device_name(dev)}), {dtype}"
    if dev.type == "cpu":
        return f"cpu ({cpu_name()}; {torch.get_num_threads()} threads), {dtype}"
    return f"{dev}, {dtype}"
