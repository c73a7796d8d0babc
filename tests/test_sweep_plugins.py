"""The sweep machinery: hydra_plugins/forgetting_plugins (Optuna ask/tell sweeper, GPU-pool
launcher), the submitit launcher configs in conf/hydra, and forgetting/resume.py.

End-to-end tests run the dummy Hydra app (tests/fixtures/dummy_app) in a subprocess, in a
temporary directory, and read back what its jobs wrote (metrics.json records the job's pid,
CUDA_VISIBLE_DEVICES, OMP_NUM_THREADS and start/end times)."""
import importlib.util
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from forgetting.resume import config_hash, finished, write_metrics  # noqa: E402

APP = ROOT / "tests" / "fixtures" / "dummy_app" / "app.py"
SEARCHPATH = f"hydra.searchpath=[file://{ROOT / 'conf'}]"  # the project's conf/hydra/*
HAS_SUBMITIT = importlib.util.find_spec("hydra_plugins.hydra_submitit_launcher") is not None
OPTUNA_ARGS = [
    "hydra/sweeper=optuna_ask_tell",
    '+hydra.sweeper.params.lr="tag(log, interval(1e-5, 1e-2))"',
    '+hydra.sweeper.params.epochs="int(interval(1, 3))"',
    '+hydra.sweeper.params.batch_size="choice(4, 8, 16)"',
    "hydra.sweeper.directions=[maximize,maximize]",
    "hydra.sweeper.sampler.seed=0",
    "hydra.sweeper.n_jobs=2",
]


def run_app(cwd: Path, *args: str, sweep: str = "sweep", multirun: bool = True,
            check: bool = True, env: dict | None = None) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(APP)] + (["-m"] if multirun else []) + list(args)
    if multirun:
        cmd.append(f"hydra.sweep.dir={sweep}")
    full_env = {**os.environ, "HYDRA_FULL_ERROR": "1", **(env or {})}
    proc = subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=300)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} exited {proc.returncode}\n"
                             f"stdout:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr[-8000:]}")
    return proc


def jobs(sweep_dir: Path) -> dict:
    """job number -> metrics.json of every job dir that has one."""
    out = {}
    for d in sorted(sweep_dir.iterdir()):
        if d.is_dir() and d.name.isdigit() and (d / "metrics.json").exists():
            out[int(d.name)] = json.loads((d / "metrics.json").read_text())
    return out


def executions(sweep_dir: Path, num: int) -> int:
    f = sweep_dir / str(num) / "executions.txt"
    return len(f.read_text().splitlines()) if f.exists() else 0


def max_concurrency(records) -> int:
    events = sorted([(r["info"]["start"], 1) for r in records]
                    + [(r["info"]["end"], -1) for r in records], key=lambda e: (e[0], e[1]))
    now = peak = 0
    for _, step in events:
        now += step
        peak = max(peak, now)
    return peak


def expected(lr: float, epochs: int):
    x = math.log10(lr)
    return 1.0 - (x + 3.0) ** 2 / 4.0 + 0.05 * epochs, 0.5 - 0.1 * (x + 5.0) - 0.03 * epochs


# --------------------------------------------------------------------- grid sweeps
def test_grid_basic_launcher(tmp_path):
    run_app(tmp_path, "lr=1e-4,1e-3", "epochs=1,2")
    got = jobs(tmp_path / "sweep")
    assert sorted(got) == [0, 1, 2, 3]
    assert {r["status"] for r in got.values()} == {"ok"}
    assert len({r["info"]["pid"] for r in got.values()}) == 1  # in-process, one after another
    for num, r in got.items():
        acc, safety = expected(r["info"]["lr"], r["info"]["epochs"])
        assert r["metrics"]["math/accuracy"] == pytest.approx(acc)
        assert r["metrics"]["safety/rate"] == pytest.approx(safety)
        assert r["info"]["metrics_file"] == str(tmp_path / "sweep" / str(num) / "metrics.json")


def test_grid_gpus_launcher_cpu_workers(tmp_path):
    run_app(tmp_path, "hydra/launcher=gpus", "hydra.launcher.gpus=[]",
            "hydra.launcher.n_workers=2", "hydra.launcher.threads_per_job=1",
            "lr=1e-4,1e-3", "epochs=1,2", "sleep=1.0")
    sweep = tmp_path / "sweep"
    got = jobs(sweep)
    assert sorted(got) == [0, 1, 2, 3]
    assert {r["status"] for r in got.values()} == {"ok"}
    pids = [r["info"]["pid"] for r in got.values()]
    assert len(set(pids)) == 4, "a fresh process per job"
    assert os.getpid() not in pids
    assert {r["info"]["CUDA_VISIBLE_DEVICES"] for r in got.values()} == {""}
    assert {r["info"]["OMP_NUM_THREADS"] for r in got.values()} == {"1"}
    assert max_concurrency(got.values()) == 2, "two workers run side by side, never more"
    for num, r in got.items():  # ${hydra:runtime.output_dir} resolved for this job
        assert r["info"]["metrics_file"] == str(sweep / str(num) / "metrics.json")
        assert (sweep / str(num) / ".hydra" / "config.yaml").exists()
        assert (sweep / str(num) / ".hydra" / "overrides.yaml").exists()


def test_gpus_launcher_one_device_per_job(tmp_path):
    # two "GPUs" by id: nothing here touches CUDA, the assignment is what is tested
    run_app(tmp_path, "hydra/launcher=gpus", "hydra.launcher.gpus=[0,1]",
            "lr=1e-4,3e-4,1e-3,3e-3", "sleep=1.0")
    got = list(jobs(tmp_path / "sweep").values())
    assert len(got) == 4 and {r["status"] for r in got} == {"ok"}
    assert {r["info"]["CUDA_VISIBLE_DEVICES"] for r in got} == {"0", "1"}
    threads = max(1, len(os.sched_getaffinity(0)) // 2)
    assert {r["info"]["OMP_NUM_THREADS"] for r in got} == {str(threads)}
    for a in got:  # jobs that overlap in time never share a device
        for b in got:
            if a is not b and a["info"]["start"] < b["info"]["end"] \
                    and b["info"]["start"] < a["info"]["end"]:
                assert a["info"]["CUDA_VISIBLE_DEVICES"] != b["info"]["CUDA_VISIBLE_DEVICES"]
    assert max_concurrency(got) == 2


def test_gpus_launcher_failed_jobs_do_not_stop_the_pool(tmp_path):
    proc = run_app(tmp_path, "hydra/launcher=gpus", "hydra.launcher.gpus=[]",
                   "lr=1e-4,3e-4,1e-3,3e-3", "raise_on=[1]", "exit_on=[2]", check=False)
    # the basic sweeper re-raises a failed job's exception once the batch is done...
    assert proc.returncode != 0
    assert "injected failure in job 1" in proc.stderr
    assert "job #2" in proc.stdout and "exit code 3" in proc.stdout  # Hydra logs to stdout
    # ... but every other job ran to the end
    got = jobs(tmp_path / "sweep")
    assert got[0]["status"] == "ok" and got[3]["status"] == "ok"
    assert got[1]["status"] == "failed" and 2 not in got


def _alive(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in status  # an exited orphan not yet reaped is dead


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_gpus_launcher_jobs_stop_when_the_launcher_dies(tmp_path):
    import signal
    import time

    cmd = [sys.executable, str(APP), "-m", "hydra/launcher=gpus", "hydra.launcher.gpus=[]",
           "lr=1e-4,1e-3", "sleep=60", "hydra.sweep.dir=sweep"]
    parent = subprocess.Popen(cmd, cwd=tmp_path, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        files = [tmp_path / "sweep" / str(n) / "executions.txt" for n in (0, 1)]
        deadline = time.time() + 60
        while not all(f.exists() and f.read_text().strip() for f in files):
            assert time.time() < deadline and parent.poll() is None, "jobs did not start"
            time.sleep(0.1)
        pids = [int(f.read_text().split()[0]) for f in files]
        assert all(_alive(p) for p in pids)
    finally:
        parent.send_signal(signal.SIGKILL)  # no cleanup code of the launcher runs
        parent.wait()
    deadline = time.time() + 15
    while any(_alive(p) for p in pids) and time.time() < deadline:
        time.sleep(0.1)
    assert not any(_alive(p) for p in pids), "orphaned jobs kept running"


@pytest.mark.skipif(not HAS_SUBMITIT, reason="hydra-submitit-launcher not installed")
def test_grid_submitit_local(tmp_path):
    run_app(tmp_path, SEARCHPATH, "hydra/launcher=submitit_local", "lr=1e-4,1e-3")
    got = jobs(tmp_path / "sweep")
    assert sorted(got) == [0, 1] and {r["status"] for r in got.values()} == {"ok"}
    assert len({r["info"]["pid"] for r in got.values()}) == 2
    assert (tmp_path / "sweep" / ".submitit").is_dir()


@pytest.mark.skipif(not HAS_SUBMITIT, reason="hydra-submitit-launcher not installed")
def test_slurm_launcher_config(tmp_path):
    proc = run_app(tmp_path, SEARCHPATH, "hydra/launcher=slurm", "--cfg", "hydra", "-p",
                   "hydra.launcher", "--resolve", multirun=False,
                   env={"SLURM_PARTITION": "gpuq", "SLURM_ACCOUNT": "proj"})
    launcher = yaml.safe_load(proc.stdout)
    assert launcher["_target_"].endswith("submitit_launcher.SlurmLauncher")
    assert launcher["partition"] == "gpuq" and launcher["account"] == "proj"
    assert launcher["gpus_per_node"] == 1 and launcher["tasks_per_node"] == 1
    for key in ("timeout_min", "mem_gb", "cpus_per_task"):
        assert isinstance(launcher[key], int)


def test_grid_resume_skips_finished_runs(tmp_path):
    args = ["lr=1e-4,1e-3", "epochs=1,2"]
    run_app(tmp_path, *args)
    sweep = tmp_path / "sweep"
    before = {n: r["info"]["end"] for n, r in jobs(sweep).items()}
    run_app(tmp_path, *args)  # same sweep dir, same configs: every job returns early
    assert [executions(sweep, n) for n in range(4)] == [1, 1, 1, 1]
    assert {n: r["info"]["end"] for n, r in jobs(sweep).items()} == before
    run_app(tmp_path, *args, "batch_size=16")  # another config: every job runs again
    assert [executions(sweep, n) for n in range(4)] == [2, 2, 2, 2]
    run_app(tmp_path, *args, "batch_size=16", "logger.project=other")  # logger: ignored
    assert [executions(sweep, n) for n in range(4)] == [2, 2, 2, 2]


# --------------------------------------------------------------------- optuna sweeper
def load_study(sweep: Path, name: str = "app"):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{sweep / 'optuna.db'}")


def test_optuna_sweep_failures_results_and_resume(tmp_path):
    import optuna
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    common = [*OPTUNA_ARGS, "hydra/launcher=gpus", "hydra.launcher.gpus=[]",
              "raise_on=[1]", "nan_on=[2]"]
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=4")
    study = load_study(sweep)
    states = [t.state for t in study.trials]
    assert states == [TrialState.COMPLETE, TrialState.FAIL, TrialState.FAIL, TrialState.COMPLETE]
    assert "injected failure" in study.trials[1].user_attrs["fail_reason"]
    assert "non-finite" in study.trials[2].user_attrs["fail_reason"]
    got = jobs(sweep)
    for t in study.trials:
        assert 1e-5 <= t.params["lr"] <= 1e-2 and t.params["epochs"] in (1, 2, 3)
        assert t.params["batch_size"] in (4, 8, 16)
        assert t.user_attrs["output_dir"] == str(sweep / str(t.number))
        if t.state == TrialState.COMPLETE:  # the values Optuna got are the job's metrics
            m = got[t.number]["metrics"]
            assert t.values == pytest.approx([m["math/accuracy"], m["safety/rate"]])
            assert got[t.number]["info"]["lr"] == pytest.approx(t.params["lr"])
            assert got[t.number]["info"]["epochs"] == t.params["epochs"]

    results = yaml.safe_load((sweep / "optuna_results.yaml").read_text())
    assert results["directions"] == ["maximize", "maximize"]
    assert results["trials"] == {"complete": 2, "fail": 2}
    front = {t.number for t in study.best_trials}
    assert front and {b["number"] for b in results["best_trials"]} == front <= {0, 3}
    for b in results["best_trials"]:
        assert set(b["params"]) == {"lr", "epochs", "batch_size"} and len(b["values"]) == 2

    # rerun into the same sweep dir with n_trials=6: only trials 4 and 5 run
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=6")
    study = load_study(sweep)
    assert len(study.trials) == 6
    assert [t.state for t in study.trials[4:]] == [TrialState.COMPLETE] * 2
    assert [executions(sweep, n) for n in range(6)] == [1, 1, 1, 1, 1, 1]
    assert [r["status"] for _, r in sorted(jobs(sweep).items())] == \
        ["ok", "failed", "failed", "ok", "ok", "ok"]
    assert yaml.safe_load((sweep / "optuna_results.yaml").read_text())["trials"] == \
        {"complete": 4, "fail": 2}
    # a third run with the same n_trials asks nothing
    run_app(tmp_path, *common, "hydra.sweeper.n_trials=6")
    assert len(load_study(sweep).trials) == 6
    assert int(optuna.__version__.split(".")[0]) >= 3  # the point of the hand-written plugin


def test_optuna_interrupted_trial_is_asked_again(tmp_path):
    import optuna
    from optuna.distributions import FloatDistribution
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    sweep.mkdir()
    storage = f"sqlite:///{sweep / 'optuna.db'}"
    study = optuna.create_study(study_name="app", storage=storage,
                                directions=["maximize", "maximize"])
    killed = study.ask({"lr": FloatDistribution(1e-5, 1e-2, log=True)})  # never told: RUNNING
    args = ["hydra/sweeper=optuna_ask_tell", "hydra.sweeper.directions=[maximize,maximize]",
            '+hydra.sweeper.params.lr="tag(log, interval(1e-5, 1e-2))"',
            "hydra.sweeper.n_trials=2", "hydra.sweeper.n_jobs=1",
            "hydra.sweeper.heartbeat_interval=1"]  # it goes stale 2 s after the sweeper sees it
    run_app(tmp_path, *args)
    trials = load_study(sweep).trials
    assert [t.state for t in trials] == [TrialState.FAIL, TrialState.COMPLETE, TrialState.COMPLETE]
    assert trials[2].system_attrs["failed_trial"] == 0  # Optuna's RetryHeartbeatStaleTrialCallback
    assert trials[2].params["lr"] == killed.params["lr"]
    assert sorted(jobs(sweep)) == [1, 2]  # job number = trial number
    run_app(tmp_path, *args)  # the interrupted trial does not eat the budget on later runs
    assert len(load_study(sweep).trials) == 3

    # a batch that cannot be composed stops the sweep, and its trials are not left RUNNING
    proc = run_app(tmp_path, *args[:-2], "hydra.sweeper.n_trials=4", "no_such_key=1",
                   check=False)
    assert proc.returncode != 0
    assert TrialState.RUNNING not in [t.state for t in load_study(sweep).trials]


def test_optuna_single_objective_basic_launcher_none_return(tmp_path):
    from optuna.trial import TrialState

    sweep = tmp_path / "sweep"
    run_app(tmp_path, "hydra/sweeper=optuna_ask_tell",
            '+hydra.sweeper.params.lr="tag(log, interval(1e-4, 1e-2))"',
            "hydra.sweeper.directions=[maximize]", "hydra.sweeper.n_trials=3",
            "hydra.sweeper.n_jobs=1", "hydra.sweeper.sampler.name=random",
            "objectives=[math/accuracy]", "epochs=2", "none_on=[1]")
    study = load_study(sweep)
    assert [t.state for t in study.trials] == \
        [TrialState.COMPLETE, TrialState.FAIL, TrialState.COMPLETE]
    assert "None" in study.trials[1].user_attrs["fail_reason"]
    assert all("epochs=2" in t.user_attrs["overrides"] for t in study.trials)  # fixed value
    results = yaml.safe_load((sweep / "optuna_results.yaml").read_text())
    assert results["best_value"] == pytest.approx(study.best_value)
    assert results["best_params"] == {"lr": pytest.approx(study.best_params["lr"])}


def test_optuna_project_preset(tmp_path):
    """conf/hydra/sweeper/optuna.yaml composes and runs (objective names from the config)."""
    run_app(tmp_path, SEARCHPATH, "hydra/sweeper=optuna", "hydra.sweeper.n_trials=2")
    study = load_study(tmp_path / "sweep", name="forgetting")
    assert study.metric_names == ["math/accuracy", "safety/rate"]
    assert len(study.trials) == 2 and set(study.trials[0].params) == {"lr", "epochs"}


# --------------------------------------------------------------------- search space, values
def parse(*lines):
    from hydra.core.override_parser.overrides_parser import OverridesParser

    return OverridesParser.create().parse_overrides(list(lines))


def test_search_space_grammar():
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    from hydra_plugins.forgetting_plugins._optuna_impl import SearchSpace

    space = SearchSpace(parse(
        "lr=tag(log, interval(1e-5, 1e-3))", "epochs=int(interval(1, 3))",
        "r=choice(4, 8, 16)", "k=range(1, 3)", "w=range(0.1, 0.5, 0.1)", "x=interval(0, 1)",
        "name=choice('a b', c)", "batch=8", "epochs=2"))  # the later epochs=2 fixes it
    d = space.distributions
    assert d["lr"] == FloatDistribution(1e-5, 1e-3, log=True)
    assert d["r"] == CategoricalDistribution((4, 8, 16))
    assert d["k"] == IntDistribution(1, 2)  # Hydra's range excludes its stop
    assert d["w"] == FloatDistribution(0.1, 0.4, step=0.1)
    assert d["x"] == FloatDistribution(0.0, 1.0)
    assert "epochs" not in d and space.fixed == ["batch=8", "epochs=2"]
    over = space.overrides({"lr": 1.5e-4, "r": 8, "k": 2, "w": 0.2, "x": 0.5, "name": "a b"})
    assert over == ["lr=0.00015", "r=8", "k=2", "w=0.2", "x=0.5", "name=a\\ b", "batch=8",
                    "epochs=2"]
    for line, value in zip(over[:6], (1.5e-4, 8, 2, 0.2, 0.5, "a b")):  # parse back
        assert parse(line)[0].value() == value
    assert SearchSpace(parse("e=int(interval(1, 3))")).distributions["e"] == IntDistribution(1, 3)


def test_objective_values():
    from hydra.core.utils import JobReturn, JobStatus

    from hydra_plugins.forgetting_plugins._optuna_impl import objective_values

    def ret(value, status=JobStatus.COMPLETED):
        r = JobReturn()
        r.status, r.return_value = status, value
        return r

    assert objective_values(ret((0.5, 0.25)), 2, None) == ([0.5, 0.25], "")
    assert objective_values(ret(0.5), 1, None) == ([0.5], "")
    assert objective_values(ret([0.5]), 1, None) == ([0.5], "")
    assert objective_values(ret({"a": 1, "b": 2}), 2, ["b", "a"]) == ([2.0, 1.0], "")
    for bad in (None, (float("nan"), 1.0), (float("inf"), 1.0), (1.0,), "0.5", {"a": 1},
                (1.0, "x")):
        values, reason = objective_values(ret(bad), 2, None)
        assert values is None and reason, bad
    values, reason = objective_values(ret(RuntimeError("boom"), JobStatus.FAILED), 2, None)
    assert values is None and "boom" in reason


# --------------------------------------------------------------------- forgetting.resume
def test_config_hash_ignores_hydra_logger_threads_only():
    base = OmegaConf.create({"lr": 1e-4, "epochs": 1, "model": {"name": "tiny"},
                             "logger": {"name": "wandb"}, "threads": 0})
    h = config_hash(base)
    assert len(h) == 64 and h == config_hash(OmegaConf.create(OmegaConf.to_container(base)))
    reordered = {"threads": 0, "model": {"name": "tiny"}, "epochs": 1, "lr": 1e-4,
                 "logger": {"name": "wandb"}}
    assert config_hash(reordered) == h  # key order does not matter
    same = OmegaConf.merge(base, {"logger": {"name": "none", "project": "x"}, "threads": 8,
                                  "hydra": {"run": {"dir": "elsewhere"}}})
    assert config_hash(same) == h
    for change in ({"lr": 2e-4}, {"epochs": 2}, {"model": {"name": "llama"}}, {"seed": 1}):
        assert config_hash(OmegaConf.merge(base, change)) != h, change
    interpolated = OmegaConf.create({"lr": 1e-4, "epochs": "${one}", "one": 1,
                                     "model": {"name": "tiny"}})
    literal = OmegaConf.create({"lr": 1e-4, "epochs": 1, "one": 1, "model": {"name": "tiny"}})
    assert config_hash(interpolated) == config_hash(literal)  # hashed resolved


def test_finished(tmp_path):
    h = "a" * 64
    assert finished(tmp_path, h) is None  # no metrics.json
    (tmp_path / "metrics.json").write_text("{not json")
    assert finished(tmp_path, h) is None
    write_metrics(tmp_path, "running", config_hash=h)
    assert finished(tmp_path, h) is None
    write_metrics(tmp_path, "failed", reason="boom", metrics={"x": 1.0}, config_hash=h)
    assert finished(tmp_path, h) is None
    write_metrics(tmp_path, "ok", metrics={"math/accuracy": 0.5}, config_hash="b" * 64)
    assert finished(tmp_path, h) is None  # another config
    (tmp_path / "metrics.json").write_text(json.dumps({"status": "ok", "metrics": {"m": 1}}))
    assert finished(tmp_path, h) is None  # no hash recorded
    write_metrics(tmp_path, "ok", metrics={"math/accuracy": 0.5, "safety/rate": 0.9},
                  config_hash=h, label="x")
    done = finished(tmp_path, h)
    assert done["metrics"] == {"math/accuracy": 0.5, "safety/rate": 0.9}
    assert done["status"] == "ok" and done["label"] == "x"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temp files left
