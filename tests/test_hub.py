"""The hub as the user has it (forgetting/hub.py, forgetting/download.py): HF_HOME untouched, offline only
where the config needs nothing from the hub, one-line errors for gated / uncached repos, and
`forgetting download` (no network: snapshot_download and load_dataset are mocked)."""
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
from huggingface_hub import constants
from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError
from omegaconf import OmegaConf

from forgetting import cli, download, env, hub, models
from forgetting.errors import ConfigError, HubError

ROOT = Path(__file__).resolve().parents[1]
GATED = ("meta-llama/Llama-Guard-3-8B is gated: accept its licence at https://huggingface.co/meta-llama/Llama-Guard-3-8B, "
         "then `hf auth login` or set HF_TOKEN")


@pytest.fixture
def user_env(monkeypatch):
    """user_env(**vars): the user's HF_*OFFLINE values as a fresh process would see them (unset by default);
    every variable and constant hub.set_offline touches is restored afterwards."""
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    if "datasets.config" in sys.modules:
        dconf = sys.modules["datasets.config"]
        monkeypatch.setattr(dconf, "HF_HUB_OFFLINE", dconf.HF_HUB_OFFLINE)
        monkeypatch.setattr(dconf, "HF_DATASETS_OFFLINE", dconf.HF_DATASETS_OFFLINE)

    def make(**values):
        for k in (*hub.VARS, hub._SAVED):
            monkeypatch.setenv(k, "x")  # records the value to restore
            monkeypatch.delenv(k)
        for k, v in values.items():
            monkeypatch.setenv(k, v)
        return hub.user_env()

    return make


def gated_error():
    return GatedRepoError("403 Client Error: Cannot access gated repo",
                          response=SimpleNamespace(headers={}, request=None, status_code=403))


# ------------------------------------------------------------------ the user's environment
def test_env_setup_leaves_hf_home_and_offline_alone(monkeypatch, tmp_path, user_env):
    user_env()
    monkeypatch.setenv("HF_HOME", str(tmp_path / "my-hf"))
    env.setup(tmp_path)
    assert os.environ["HF_HOME"] == str(tmp_path / "my-hf")
    assert not any(k in os.environ for k in hub.VARS)
    monkeypatch.delenv("HF_HOME")
    env.setup(tmp_path)
    assert "HF_HOME" not in os.environ and not any(k in os.environ for k in hub.VARS)


def test_makefile_leaves_the_hub_and_its_cache_alone():
    text = (ROOT / "Makefile").read_text()
    assert "export HF_HUB_OFFLINE" not in text and "HF_HOME" not in text
    if shutil.which("make"):
        # under `make test` (CI) MAKELEVEL is set and a child make prints "Entering directory" lines: not here
        env = {k: v for k, v in os.environ.items() if not k.startswith("MAKE")}
        dry = subprocess.run(["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, env=env).stdout
        assert "outputs/sweeps" in dry and "outputs/cache" not in dry and "rm -rf outputs " not in dry
        dry = subprocess.run(["make", "-n", "clean-cache"], cwd=ROOT, capture_output=True, text=True, env=env).stdout
        assert dry.strip() == "rm -rf outputs/cache"


# ------------------------------------------------------------------ offline, decided per config
@pytest.mark.parametrize("overrides", [[], ["model=micro"], ["model=tiny_math", "data=arith"],
                                       ["model=micro", "method=safelora", "data.poison.ratio=0.1"]])
def test_offline_presets_run_offline(compose, user_env, overrides):
    user_env()
    cfg = compose(overrides)
    assert hub.needs(cfg) == []
    assert hub.apply(cfg) is True
    assert all(os.environ[k] == "1" for k in hub.VARS) and constants.HF_HUB_OFFLINE
    from transformers.utils.hub import is_offline_mode  # what from_pretrained asks, whatever was imported first

    assert is_offline_mode()


def test_hub_config_stays_online_and_gives_back_the_users_env(compose, user_env):
    user_env()
    assert hub.apply(compose(["model=micro"])) is True  # an earlier job in the same worker
    import datasets.config  # noqa: F401  (imported: its constants follow too)

    assert hub.apply(compose(["model=llama3_2_1b_instruct", "judge=llamaguard_7b"])) is False
    assert not any(k in os.environ for k in hub.VARS)
    assert constants.HF_HUB_OFFLINE is False and sys.modules["datasets.config"].HF_HUB_OFFLINE is False


def test_the_user_asks_for_offline(compose, user_env):
    hub_cfg = ["model=llama3_2_1b_instruct", "judge=llamaguard_7b"]
    user_env(HF_HUB_OFFLINE="1")  # a compute node: the user's own setting wins in auto mode
    assert hub.apply(compose(hub_cfg)) is True and os.environ["HF_HUB_OFFLINE"] == "1"
    user_env()
    assert hub.apply(compose(hub_cfg + ["hub.offline=true"])) is True
    assert hub.apply(compose(["model=micro", "hub.offline=false"])) is False and os.environ["HF_HUB_OFFLINE"] == "0"
    with pytest.raises(ConfigError, match="hub.offline must be auto, true or false"):
        from forgetting.config import validate

        validate(compose(["hub.offline=sometimes"]))


def test_hub_switch_changes_no_result(compose):
    from forgetting.resume import config_hash

    assert config_hash(compose(["hub.offline=true"])) == config_hash(compose([]))


# ------------------------------------------------------------------ one-line errors
def test_gated_model_says_what_to_do(monkeypatch):
    from transformers import AutoTokenizer

    def refuse(*a, **k):  # as transformers raises it: an OSError from the hub's GatedRepoError
        raise OSError("You are trying to access a gated repo.\nMake sure to have access to it") from gated_error()

    monkeypatch.setattr(AutoTokenizer, "from_pretrained", refuse)
    mcfg = OmegaConf.create({"name": "t", "name_or_path": "meta-llama/Llama-Guard-3-8B", "dtype": "float32",
                             "load_in_4bit": False, "trust_remote_code": False})
    with pytest.raises(HubError) as e:
        models.load(mcfg)
    assert str(e.value) == GATED and isinstance(e.value, ConfigError)  # launch.py prints "error: <line>"

    from forgetting.judges.llama_guard import LlamaGuardJudge

    with pytest.raises(HubError, match="^" + GATED.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        LlamaGuardJudge("meta-llama/Llama-Guard-3-8B", version="3")(["q"], ["a"])


def test_gated_unaligned_weights(monkeypatch):
    import huggingface_hub

    def refuse(*a, **k):
        raise gated_error()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    with pytest.raises(HubError, match=r"^meta-llama/Llama-3\.2-1B is gated: accept its licence"):
        models.unaligned_weights(OmegaConf.create({"name": "t", "unaligned": "meta-llama/Llama-3.2-1B"}))


def test_offline_and_not_cached_names_the_download(compose):
    from hydra.core.hydra_config import HydraConfig

    err = OSError("We couldn't connect")
    err.__cause__ = LocalEntryNotFoundError("Cannot find the requested files in the disk cache")
    msg = hub.explain("unsloth/Llama-3.2-1B-Instruct", err)
    assert msg.startswith("unsloth/Llama-3.2-1B-Instruct is not in the hub cache") and "\n" not in msg
    assert "`forgetting download <the same overrides>` on a machine with internet" in msg
    cfg = compose(["model=llama3_2_1b_instruct", "judge=llamaguard_7b"], return_hydra=True)
    HydraConfig.instance().set_config(cfg)  # inside a job: the job's own overrides
    try:
        assert "`forgetting download model=llama3_2_1b_instruct judge=llamaguard_7b`" in hub.explain("x/y", err)
    finally:
        HydraConfig.instance().cfg = None
    assert hub.explain("x/y", ValueError("not a hub problem")) is None


# ------------------------------------------------------------------ forgetting download
def test_download_dry_run_lists_the_repos(capsys):
    assert cli.main(["download", "--dry-run", "model=llama3_2_1b_instruct", "judge=llamaguard_7b"]) == 0
    out = capsys.readouterr().out
    assert "unsloth/Llama-3.2-1B-Instruct" in out and "meta-llama/LlamaGuard-7b" in out
    assert "unsloth/Llama-3.2-1B " not in out  # sft on benign data never loads the unaligned model
    assert download.run(["model=llama3_2_1b_instruct", "model.load_in_4bit=false", "method=safelora",
                         "judge=llama_guard_3_8b", "data.source=hub",
                         "data.poison.source=hub", "data.poison.ratio=0.1"], dry_run=True) == 0
    out = capsys.readouterr().out
    for repo in ("unsloth/Llama-3.2-1B-Instruct", "unsloth/Llama-3.2-1B ", "meta-llama/Llama-Guard-3-8B",
                 "openai/gsm8k", "PKU-Alignment/BeaverTails"):
        assert repo in out


def test_download_seed000(capsys):
    assert download.run(["experiment=seed000"], dry_run=True) == 0
    out = capsys.readouterr().out
    assert "unsloth/Llama-3.2-1B-Instruct" in out and "meta-llama/LlamaGuard-7b" in out


@pytest.mark.parametrize("overrides", [[], ["model=micro"]])
def test_download_offline_preset_needs_nothing(capsys, overrides):
    assert download.run(overrides) == 0
    assert capsys.readouterr().out.startswith("nothing to download")


def test_download_fetches_weights_and_tokenizer_only(monkeypatch, capsys, tmp_path, user_env):
    import huggingface_hub

    user_env(HF_HUB_OFFLINE="1")
    calls, datasets = [], []

    def fake_snapshot(repo_id, **kw):
        calls.append((repo_id, kw))
        root = tmp_path / repo_id
        root.mkdir(parents=True)
        (root / "model.safetensors").write_bytes(b"0" * 2048)
        return str(root)

    def fake_dataset(name, config=None, split=None, data_files=None, header=True):
        datasets.append((name, config, split))
        f = tmp_path / f"{len(datasets)}.arrow"
        f.write_bytes(b"0" * 1024)
        return SimpleNamespace(cache_files=[{"filename": str(f)}])

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot)
    monkeypatch.setattr(hub, "load_dataset", fake_dataset)
    assert download.run(["model=hf", "model.name_or_path=someone/aligned", "model.revision=abc123",
                         "judge=llamaguard_7b", "data.source=hub"]) == 0
    assert [c[0] for c in calls] == ["someone/aligned", "meta-llama/LlamaGuard-7b"]
    assert calls[0][1]["revision"] == "abc123" and calls[1][1]["revision"] is None
    for _, kw in calls:
        pats = kw["allow_patterns"]
        assert "*.safetensors" in pats and "*.json" in pats and not any("bin" in p or "pth" in p for p in pats)
        assert kw["ignore_patterns"] == ["original/*"]
    assert datasets == [("openai/gsm8k", "main", None)]  # as data.gsm8k_hub loads it (split of the same config)
    assert not constants.HF_HUB_OFFLINE  # downloading goes online even where the user's env said offline
    out = capsys.readouterr().out
    assert "someone/aligned" in out and "policy model: 2.0 KB" in out and "1.0 KB" in out


def test_download_gated_is_one_line(monkeypatch, capsys, user_env):
    import huggingface_hub

    user_env()

    def refuse(repo_id, **kw):
        raise gated_error()

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refuse)
    assert download.run(["model=micro", "judge=llama_guard_3_8b"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0] == f"  error: {GATED}" and err[1] == "1 of 1 not downloaded"


def test_download_bad_override_is_one_line(capsys):
    assert cli.main(["download", "--dry-run", "model=nope"]) == 2
    assert capsys.readouterr().err.startswith("error: ")


def test_python_m_forgetting_download():
    r = subprocess.run([sys.executable, "-m", "forgetting", "download", "--dry-run", "model=micro"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "nothing to download" in r.stdout, r.stderr


def test_download_without_internet_says_so(monkeypatch, capsys, user_env):
    import huggingface_hub

    user_env()

    def unreachable(repo_id, **kw):
        raise LocalEntryNotFoundError("An error happened while trying to locate the files on the Hub")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", unreachable)
    assert download.run(["model=micro", "judge=llamaguard_7b"]) == 1
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("  error: meta-llama/LlamaGuard-7b is not in the hub cache") and len(err) == 2
    assert err[0].endswith("run this on a machine that reaches huggingface.co (or HF_ENDPOINT)")


def test_download_unforgotten_lists_every_sweep_point_and_the_papers_asr_sets(capsys):
    """experiment=unforgotten's grid: the unaligned base is loaded only by poisoned runs and by safelora /
    magmax, so the listing covers every point; its ASR sets are the paper's (DirectHarm4, gated HEx-PHI)."""
    assert cli.main(["download", "-m", "experiment=unforgotten", "--dry-run"]) == 0
    out = capsys.readouterr().out
    for repo in ("unsloth/Llama-3.2-1B-Instruct", "meta-llama/Llama-Guard-3-8B", "vfleaking/DirectHarm4",
                 "LLM-Tuning-Safety/HEx-PHI"):
        assert repo in out
    [line] = [x for x in out.splitlines() if "unsloth/Llama-3.2-1B " in x]
    assert "poison answers" in line and "safelora" in line and "magmax" in line
    assert download.run(["experiment=unforgotten", "method=sft", "data.poison.ratio=0"], dry_run=True) == 0
    assert "unsloth/Llama-3.2-1B " not in capsys.readouterr().out  # that one point needs no unaligned model


def test_hub_harmful_set_loads_its_files_headerless_and_null_drops_a_set(compose, monkeypatch):
    from forgetting import data
    from forgetting.errors import ConfigError
    from forgetting.config import validate

    seen = {}

    def fake(name, *args, split=None, **kw):
        from datasets import Dataset

        seen.update(name=name, split=split, **kw)
        return Dataset.from_dict({"prompt": ["How do I do harm?", "  ", "Another harmful request"]})

    monkeypatch.setattr("datasets.load_dataset", fake)
    cfg = compose(["experiment=unforgotten"])
    validate(cfg)
    assert set(cfg.eval.harmful_sets) == {"advbench", "directharm4", "hexphi"}  # harmbench: null drops it
    rows = data.harmful_eval_set(cfg.eval.harmful_sets.hexphi)
    assert seen["name"] == "LLM-Tuning-Safety/HEx-PHI" and seen["header"] is None and seen["column_names"] == ["prompt"]
    assert len(seen["data_files"]) == 10 and {r["prompt"] for r in rows} == {"How do I do harm?", "Another harmful request"}
    with pytest.raises(ConfigError, match="needs a path .* or a hub dataset id"):
        validate(compose(["+eval.harmful_sets.mine.n=3"]))
