"""Offline-by-default environment: no hub downloads, W&B offline, caches inside the project."""
import logging
import os
from pathlib import Path


def setup(root: str | Path = "outputs") -> None:
    """Set defaults before transformers/wandb are imported; a user's own values win."""
    cache = Path(os.environ.get("FORGETTING_CACHE", Path(root) / "cache")).resolve()
    defaults = {
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "HF_HOME": str(cache / "hf"),
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
