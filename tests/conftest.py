import os
import tempfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_TMP = tempfile.mkdtemp(prefix="forgetting-tests-")
os.environ.setdefault("FORGETTING_CACHE", str(Path(_TMP) / "cache"))  # never touch the user's outputs/
# Tests never reach the hub nor the user's hub cache (the project itself leaves HF_HOME alone: tests/test_hub.py)
os.environ.update(HF_HOME=str(Path(_TMP) / "hf"), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
os.environ.pop("FORGETTING_USER_HUB_ENV", None)  # (set by a parent process run with env.setup)

from forgetting import env  # noqa: E402

env.setup(_TMP)


@pytest.fixture(scope="session")
def conf_dir() -> str:
    return str(ROOT / "conf")


@pytest.fixture
def compose(conf_dir):
    """compose(overrides) → the run config, as launch.py would build it."""
    from hydra import compose as hcompose
    from hydra import initialize_config_dir

    from forgetting.config import register

    register()

    def _compose(overrides=(), return_hydra=False):
        with initialize_config_dir(config_dir=conf_dir, version_base="1.3"):
            return hcompose("config", overrides=list(overrides), return_hydra_config=return_hydra)

    return _compose


@pytest.fixture(scope="session")
def micro_path() -> Path:
    """The micro preset (a ~35k-parameter Llama + BPE tokenizer), built once per test session."""
    from omegaconf import OmegaConf

    from forgetting.tiny import build

    recipe = OmegaConf.to_container(OmegaConf.load(ROOT / "conf/model/micro.yaml").build, resolve=True)
    return Path(build(recipe, Path(os.environ["FORGETTING_CACHE"]) / "presets"))


@pytest.fixture
def random_micro(micro_path):
    """random_micro(device, dtype) → (model, tokenizer): the micro preset's architecture with random weights
    (seed 0, initializer_range 0.5: the trained micro model writes the same token for every prompt), in eval
    mode, its tokenizer padding on the left."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    def make(device: str = "cpu", dtype=None):
        torch.manual_seed(0)
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(micro_path, initializer_range=0.5))
        tok = AutoTokenizer.from_pretrained(micro_path)
        tok.padding_side = "left"
        return model.to(device, dtype or torch.float32).eval(), tok

    return make
