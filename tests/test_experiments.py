"""conf/experiment/: `experiment=seed000` is the report's setup, its card sweep launches 6 jobs through the GPU
launcher, `unforgotten` is every method x {benign, 10 % poisoned}, every experiment composes, the sweeps/
aliases equal their experiments; and a job's policy and judge load whole on its one GPU (mocked CUDA)."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf/experiment").glob("*.yaml"))
METHODS = sorted(p.stem for p in (ROOT / "conf/method").glob("*.yaml"))
ALIASES = [n for n in EXPERIMENTS if (ROOT / "sweeps" / f"{n}.yaml").exists()]


def dry_multirun(monkeypatch, tmp_path, args: list[str]) -> dict:
    """`launch.py -m <args>` through Hydra's own CLI and sweeper, with the launcher it selects replaced by a
    recorder: → {"launcher": its _target_, "jobs": [the composed config of each job]}. No model loads."""
    import hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.plugins import Plugins

    from forgetting.config import register

    got = {"jobs": []}

    class Recorder:
        def launch(self, job_overrides, initial_job_idx):
            for o in job_overrides:
                got["jobs"].append(self.ctx.config_loader.load_sweep_config(self.config, list(o)))
            return []

    def instantiate_launcher(self, hydra_context, task_function, config):
        got["launcher"] = config.hydra.launcher._target_
        rec = Recorder()
        rec.ctx, rec.config = hydra_context, config
        return rec

    monkeypatch.setattr(Plugins, "instantiate_launcher", instantiate_launcher)
    monkeypatch.setattr(sys, "argv", ["launch.py", "-m", *args, f"hydra.sweep.dir={tmp_path}"])
    register()
    GlobalHydra.instance().clear()
    hydra.main(version_base="1.3", config_path=str(ROOT / "conf"), config_name="config")(lambda cfg: None)()
    GlobalHydra.instance().clear()
    return got


def test_seed000_is_the_reports_setup(compose):
    r = subprocess.run([sys.executable, "launch.py", "experiment=seed000", "--cfg", "job"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = OmegaConf.create(r.stdout)
    assert cfg.model.name_or_path == "unsloth/Llama-3.2-1B-Instruct" and cfg.model.load_in_4bit
    assert (cfg.lora.enabled, cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (True, 8, 16, 0.1)
    assert list(cfg.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert (cfg.eval.math.n_public, cfg.eval.math.n_private) == (100, 100)
    assert (cfg.eval.safety.n_public, cfg.eval.safety.n_private) == (40, 40)
    assert cfg.judge.model_name_or_path == "meta-llama/LlamaGuard-7b" and cfg.method.name == "sft"
    assert (cfg.data.name, cfg.data.poison.ratio) == ("gsm8k", 0.0)
    assert cfg.eval.math.max_new_tokens >= 512 and cfg.eval.safety.max_new_tokens >= 256  # a real model's answers
    hydra_cfg = compose(["experiment=seed000"], return_hydra=True).hydra
    assert hydra_cfg.launcher._target_.endswith("gpu_launcher.GpuPoolLauncher") and hydra_cfg.launcher.jobs_per_gpu == 1


def test_card_sweep_on_seed000_launches_six_jobs_on_the_gpu_launcher(monkeypatch, tmp_path):
    got = dry_multirun(monkeypatch, tmp_path, ["experiment=seed000", "lr=1e-4,2e-4", "epochs=1,2,3"])
    assert got["launcher"].endswith("gpu_launcher.GpuPoolLauncher")
    assert sorted((j.lr, j.epochs) for j in got["jobs"]) == [(lr, ep) for lr in (1e-4, 2e-4) for ep in (1, 2, 3)]
    assert {j.model.name_or_path for j in got["jobs"]} == {"unsloth/Llama-3.2-1B-Instruct"}


def test_unforgotten_is_every_method_times_benign_and_poisoned(monkeypatch, tmp_path):
    got = dry_multirun(monkeypatch, tmp_path, ["experiment=unforgotten"])
    cells = sorted((j.method.name, j.data.poison.ratio) for j in got["jobs"])
    assert cells == [(m, r) for m in METHODS for r in (0.0, 0.1)]
    job = got["jobs"][0]
    assert job.judge.model_name_or_path == "meta-llama/Llama-Guard-3-8B"
    assert job.model.name_or_path == "unsloth/Llama-3.2-1B-Instruct" and job.lora.r == 8  # on seed000's setup
    assert "advbench" in job.eval.harmful_sets and got["launcher"].endswith("GpuPoolLauncher")
    from forgetting.config import validate

    for j in got["jobs"]:  # ewc / safelora / magmax refuse a 4-bit base: every job runs on the same float one
        validate(j)
        assert not j.model.load_in_4bit


@pytest.mark.parametrize("method", ["ewc", "safelora", "magmax"])
def test_a_method_that_reads_base_weights_refuses_a_4bit_base_before_loading(compose, method):
    from forgetting.config import validate
    from forgetting.errors import ConfigError

    with pytest.raises(ConfigError, match="model.load_in_4bit=false"):
        validate(compose(["experiment=seed000", f"method={method}"]))
    validate(compose(["experiment=seed000", f"method={method}", "model.load_in_4bit=false"]))
    validate(compose(["experiment=seed000", "method=l2"]))  # l2 anchors the LoRA update only: 4-bit is fine


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_every_experiment_composes_and_validates(compose, name):
    from forgetting.config import validate

    cfg = compose([f"experiment={name}"])
    OmegaConf.to_container(cfg, resolve=True)
    validate(cfg)
    assert compose([f"experiment={name}"], return_hydra=True).hydra.sweep.dir == f"outputs/sweeps/{name}"


@pytest.mark.parametrize("name", ALIASES)
def test_a_named_sweep_is_its_experiment(compose, name):
    alias, exp = (compose([o], return_hydra=True) for o in (f"+sweeps={name}", f"experiment={name}"))
    assert alias.hydra.sweeper == exp.hydra.sweeper and alias.hydra.sweep.dir == exp.hydra.sweep.dir
    assert compose([f"+sweeps={name}"]) == compose([f"experiment={name}"])


def test_the_experiment_wins_over_the_primary_config(compose):
    """experiment sits after _self_ in the defaults: its lr / epochs replace config.yaml's, the command line wins."""
    assert (compose(["experiment=methods"]).lr, compose(["experiment=methods", "lr=1e-3"]).lr) == (3e-3, 1e-3)


# ------------------------------------------------------------------ placement: one job, one GPU, whole models
@pytest.fixture
def fake_cuda(monkeypatch):
    """A CUDA host whose current device is 0 (what a job sees under CUDA_VISIBLE_DEVICES=<its GPU>); from_pretrained
    records its kwargs instead of loading."""
    import peft  # noqa: F401  imported before CUDA is faked: bitsandbytes picks its backend at import
    import transformers

    calls = []

    class Fake:
        device = torch.device("cuda:0")

        def to(self, *a, **k):
            return self

    def from_pretrained(path, *a, **kwargs):
        calls.append(kwargs)
        return Fake()

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", from_pretrained)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", lambda *a, **k: object())
    return calls


@pytest.mark.parametrize("four_bit", [False, True])
def test_the_policy_loads_whole_on_the_jobs_gpu(fake_cuda, monkeypatch, four_bit):
    import peft

    from forgetting import models

    monkeypatch.setattr(peft, "prepare_model_for_kbit_training", lambda m, **k: m)
    mcfg = OmegaConf.create({"name_or_path": "unsloth/Llama-3.2-1B-Instruct", "dtype": "auto",
                             "load_in_4bit": four_bit, "trust_remote_code": False, "revision": None})
    models.load(mcfg, tok=object())
    assert fake_cuda[0]["device_map"] == {"": 0}  # never "auto": that shards over every visible GPU


@pytest.mark.parametrize("four_bit", [False, True])
def test_the_judge_loads_whole_on_the_jobs_gpu(fake_cuda, four_bit):
    from forgetting.judges.llama_guard import LlamaGuardJudge

    LlamaGuardJudge("meta-llama/Llama-Guard-3-8B", version="3", load_in_4bit=four_bit)._load()
    assert fake_cuda[0]["device_map"] == {"": "cuda:0"} and fake_cuda[0]["dtype"] == torch.bfloat16
