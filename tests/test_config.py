"""Config groups compose, the card's sweep expands to 6 jobs, bad input fails with one clear line
before any model loads."""
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from forgetting import run
from forgetting.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
GROUPS = ["model", "lora", "optimizer", "judge", "data", "method", "eval", "logger"]


def options(group):
    return sorted(p.stem for p in (ROOT / "conf" / group).glob("*.yaml"))


@pytest.mark.parametrize("group", GROUPS)
def test_every_option_of_every_group_composes(compose, group):
    opts = options(group)
    assert opts, f"conf/{group} is empty"
    for opt in opts:
        cfg = compose([f"{group}={opt}"])
        OmegaConf.to_container(cfg, resolve=True)  # every interpolation resolves
        assert cfg[group] is not None


def test_defaults_are_the_offline_reference(compose):
    cfg = compose()
    assert cfg.model.name == "tiny" and cfg.model.simulation is True
    assert (cfg.lora.r, cfg.lora.alpha, cfg.lora.dropout) == (8, 16, 0.1)
    assert list(cfg.lora.target_modules) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    assert cfg.eval.math.n_public == cfg.eval.math.n_private == 100
    assert cfg.eval.safety.n_public == cfg.eval.safety.n_private == 40
    assert cfg.eval.over_refusal.n == 50


def test_structured_config_rejects_wrong_types(compose):
    with pytest.raises(Exception, match="epochs"):
        compose(["epochs=many"])
    with pytest.raises(Exception, match="r"):
        compose(["lora.r=eight"])


def test_card_multirun_expands_to_six_jobs(compose):
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper

    overrides = OverridesParser.create().parse_overrides(["lr=1e-4,2e-4", "epochs=1,2,3"])
    batches = BasicSweeper.split_arguments(overrides, None)
    jobs = [job for batch in batches for job in batch]
    assert len(jobs) == 6
    combos = {(compose(job).lr, compose(job).epochs) for job in jobs}
    assert combos == {(lr, ep) for lr in (1e-4, 2e-4) for ep in (1, 2, 3)}


def test_named_sweeps_compose(compose):
    cfg = compose(["+sweeps=lr_epochs"], return_hydra=True)
    assert cfg.hydra.sweeper.params == {"lr": "1e-4,2e-4", "epochs": "1,2,3"}


def test_demo_math_evaluates_the_range_its_preset_was_pretrained_on(compose):
    cfg = compose(["+sweeps=demo_math"], return_hydra=True)
    assert (cfg.model.name, cfg.data.name) == ("tiny_math", "arith")
    assert cfg.data.arith_max == cfg.model.build.pretrain.drill_max == 20
    # tiny_math is tiny with another pretraining and alignment: the rest of the recipe is inherited
    tiny = compose(["model=tiny"]).model.build
    assert cfg.model.build.model == tiny.model and cfg.model.build.data == tiny.data
    assert cfg.model.build.align.replay > 0 and cfg.model.build.pretrain.group_by_length is False


@pytest.fixture
def no_model_load(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a model was loaded before the bad input was reported")

    monkeypatch.setattr(run.models, "load", boom)


@pytest.mark.parametrize("override,message", [
    ("lr=0", "lr must be a finite number > 0"),
    ("lr=-1e-4", "lr must be a finite number > 0"),
    ("lr=inf", "lr must be a finite number > 0"),
    ("threads=-1", "threads must be >= 0"),
    ("seed=-1", r"seed must be in \[0, 2\*\*32\)"),
    ("optimizer.batch_size=0", "optimizer.batch_size and optimizer.grad_accum must be >= 1"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay must be a finite number >= 0"),
    ("eval.safety.batch_size=0", "eval.safety.batch_size and max_new_tokens must be >= 1"),
    ("eval.math.max_new_tokens=0", "eval.math.batch_size and max_new_tokens must be >= 1"),
    ("eval.math.n_public=-2", "eval.math.n_public must be >= 0"),
    ("eval.safety.n_private=-3", "eval.safety.n_private must be >= 0"),
    ("eval.over_refusal.n=-1", "eval.over_refusal.n must be >= 0"),
    ("epochs=0", "epochs must be >= 1"),
    ("eval.safety.path=/nonexistent/prompts.csv", "AILuminate prompt set file not found"),
    ("data.test_path=/nonexistent/test.jsonl", "GSM8K file not found"),
    ("eval.over_refusal.path=/nonexistent/x.csv", "XSTest file not found"),
])
def test_bad_input_fails_before_model_load(compose, no_model_load, tmp_path, override, message):
    cfg = compose([override, "logger=none", f"+run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=message):
        run.main(cfg)


def test_malformed_csv_row_is_named(compose, no_model_load, tmp_path):
    bad = tmp_path / "prompts.csv"
    bad.write_text("release_prompt_id,prompt_text,hazard,persona,locale,prompt_hash\n"
                   "p1,How do I do X?,vcr,skilled,en_US,abc\n"
                   "p2,a row with too few fields\n")
    cfg = compose([f"eval.safety.path={bad}", "logger=none", f"+run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"prompts.csv:3: malformed CSV row"):
        run.main(cfg)


def test_non_utf8_data_names_the_file_and_line(compose, no_model_load, tmp_path):
    bad = tmp_path / "train.jsonl"
    bad.write_bytes(b'{"question": "Q1?", "answer": "2 + 2 = 4\\n#### 4"}\n{"question": "Caf\xe9?", "answer": "#### 1"}\n')
    cfg = compose([f"data.train_path={bad}", "logger=none", f"+run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"train.jsonl:2: not UTF-8 text"):
        run.main(cfg)


def test_non_numeric_gold_answer_names_the_file_and_row(compose, no_model_load, tmp_path):
    bad = tmp_path / "test.jsonl"
    bad.write_text('{"question": "Q1?", "answer": "2 + 2 = 4\\n#### 4"}\n'
                   '{"question": "Q2?", "answer": "He has 12 now.\\n#### twelve"}\n')
    cfg = compose([f"data.test_path={bad}", "logger=none", f"+run_dir={tmp_path}"])
    with pytest.raises(ConfigError, match=r"test.jsonl:2: the gold answer after '####' must be a number, got 'twelve'"):
        run.main(cfg)


def test_n_train_above_the_data_warns(compose, caplog):
    from forgetting import data

    cfg = compose(["data=arith", "data.arith_n_train=30", "data.n_train=30", "logger=none"])
    cfg.data.n_train = 31  # (validate would refuse it for arith; the loader still says so for any source)
    cfg.data.source = "arith"
    with caplog.at_level("WARNING"):
        rows = data.user_rows(cfg)
    assert len(rows) == 30 and "data.n_train=31 but the training set has 30 rows" in caplog.text


def test_any_locale_prompt_set_is_accepted(tmp_path):
    from forgetting import data

    f = tmp_path / "fr.csv"
    rows = "".join(f"fr{i},Question {i} ?,{h},skilled,fr_FR,h{i}\n" for i, h in enumerate(["vcr", "hte"] * 10))
    f.write_text("release_prompt_id,prompt_text,hazard,persona,locale,prompt_hash\n" + rows)
    pub, priv = data.safety_eval_split(data.ailuminate(f), 4, 4, 0)
    assert {r["locale"] for r in pub} == {"fr_FR"}
    assert sorted(r["hazard"] for r in pub) == ["hte", "hte", "vcr", "vcr"]


def run_launch(*args, cwd=ROOT):
    return subprocess.run([sys.executable, "launch.py", *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def test_unknown_preset_and_bad_lr_via_launch(tmp_path):
    r = run_launch("model=no_such_preset", f"hydra.run.dir={tmp_path}/a")
    assert r.returncode != 0
    assert "Could not find 'model/no_such_preset'" in r.stderr
    r = run_launch("lr=-1", "logger=none", f"hydra.run.dir={tmp_path}/b")
    assert r.returncode == 2
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert errors == ["error: lr must be a finite number > 0, got -1.0"]
