"""Several Optuna sweepers on one study (hydra_plugins/forgetting_plugins/_optuna_workers.py): two
workers on one journal file share n_trials without running a configuration twice or failing each
other's trials; a killed worker's trial goes stale and the other runs it again."""
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

ROOT = Path(__file__).resolve().parents[1]
APP = ROOT / "tests" / "fixtures" / "dummy_app" / "app.py"
FAST = ["model=micro", "eval=smoke", "data.n_train=16", "optimizer.batch_size=8", "logger=none"]


def worker(cwd, *args):
    env = {**os.environ, "HYDRA_FULL_ERROR": "1"}
    return subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)


def finish(procs, timeout=420):
    outs = [p.communicate(timeout=timeout)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    return outs


def study_of(log: Path, name: str):
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(log)))
    return optuna.load_study(study_name=name, storage=storage)


def test_two_workers_share_one_journal_study(tmp_path):
    log, sweep = tmp_path / "study.log", tmp_path / "sweep"
    args = ["launch.py", "-m", *FAST, "experiment=pareto", "epochs=1", "lora.r=4",
            "lr=choice(1e-3,2e-3,3e-3,5e-3)",  # 4 points for 4 trials: none may run twice
            "hydra.sweeper.n_trials=4", f"hydra.sweeper.storage=journal://{log}",
            f"hydra.sweep.dir={sweep}"]
    outs = finish([worker(ROOT, *args), worker(ROOT, *args)])
    trials = study_of(log, "pareto").trials
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == 4
    assert sorted(t.params["lr"] for t in complete) == [1e-3, 2e-3, 3e-3, 5e-3]  # none twice
    for t in trials:  # a FAIL is a trial a worker did not run (surplus, duplicate), never stale
        assert t.state == TrialState.COMPLETE or "skipped" in t.user_attrs, t
        assert "failed_trial" not in t.system_attrs
    assert len({t.user_attrs["worker"] for t in complete}) == 2, "both workers ran trials"
    runs = [json.loads(p.read_text()) for p in sweep.glob("*/metrics.json")]
    assert len(runs) == 4 and {r["status"] for r in runs} == {"ok"}  # one job dir per trial
    for t in complete:
        assert Path(t.user_attrs["output_dir"]).name.startswith(f"{t.number}_")
    assert not any("went stale" in out for out in outs)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc")
def test_killed_workers_trial_is_retried_by_the_other(tmp_path):
    log = tmp_path / "study.log"
    common = [str(APP), "-m", "hydra/sweeper=optuna_ask_tell",
              '+hydra.sweeper.params.lr="tag(log, interval(1e-5, 1e-2))"',
              "hydra.sweeper.directions=[maximize,maximize]", "hydra.sweeper.n_trials=3",
              f"hydra.sweeper.storage=journal://{log}", "hydra.sweeper.heartbeat_interval=1",
              "hydra.sweep.dir=sweep"]
    doomed = worker(tmp_path, *common, "sleep=120")
    try:  # wait until its job runs, then SIGKILL: no cleanup code of the sweeper runs
        deadline = time.time() + 120
        while not list((tmp_path / "sweep").glob("*/executions.txt")):
            assert time.time() < deadline and doomed.poll() is None, "the first job never started"
            time.sleep(0.2)
    finally:
        doomed.send_signal(signal.SIGKILL)
        doomed.communicate()
    [out] = finish([worker(tmp_path, *common, "sleep=0.5")])
    trials = study_of(log, "app").trials
    assert [t.state for t in trials] == [TrialState.FAIL] + [TrialState.COMPLETE] * 3
    retry = next(t for t in trials if "failed_trial" in t.system_attrs)
    assert retry.system_attrs["failed_trial"] == 0 and retry.params == trials[0].params
    assert trials[0].user_attrs["worker"] != retry.user_attrs["worker"]
    assert "trial 0 went stale" in out
    assert sorted(int(p.parent.name) for p in (tmp_path / "sweep").glob("*/metrics.json")) == [1, 2, 3]


def test_counting_and_skips():
    from optuna.distributions import FloatDistribution

    from hydra_plugins.forgetting_plugins._optuna_workers import counted, skip_reason

    d = {"lr": FloatDistribution(1e-5, 1e-2, log=True)}

    def trial(n, lr, state=TrialState.COMPLETE, **attrs):
        t = optuna.trial.create_trial(params={"lr": lr}, distributions=d, state=state,
                                      values=[1.0] if state == TrialState.COMPLETE else None,
                                      system_attrs=attrs.get("system", {}),
                                      user_attrs=attrs.get("user", {}))
        t.number = n
        return t

    trials = [trial(0, 1e-3, TrialState.FAIL),  # stale, retried by 3
              trial(1, 2e-3), trial(2, 2e-3, TrialState.FAIL, user={"skipped": "duplicate"}),
              trial(3, 1e-3, TrialState.RUNNING, system={"retry_history": [0]}),
              trial(4, 4e-3, TrialState.RUNNING)]
    assert [t.number for t in counted(trials)] == [1, 3, 4]
    assert skip_reason(trials[3], trials, 3) == ""  # a retry may repeat its original's params
    assert skip_reason(trials[4], trials, 3) == ""
    assert skip_reason(trials[4], trials, 2).startswith("surplus")
    assert skip_reason(trial(5, 2e-3, TrialState.RUNNING), trials, 9) == "duplicate of trial 1"


def test_job_dirs_are_trial_numbers_when_the_numbers_interleave(tmp_path):
    from optuna.distributions import FloatDistribution

    log = tmp_path / "study.log"
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(str(log)))
    study = optuna.create_study(study_name="app", storage=storage,
                                directions=["maximize", "maximize"])
    study.enqueue_trial({"lr": 1e-4})  # trial 0: waiting
    study.add_trial(optuna.trial.create_trial(  # trial 1: another worker's, finished
        params={"lr": 1e-3}, distributions={"lr": FloatDistribution(1e-5, 1e-2, log=True)},
        values=[0.5, 0.5]))
    subprocess.run([sys.executable, str(APP), "-m", "hydra/sweeper=optuna_ask_tell",
                    '+hydra.sweeper.params.lr="tag(log, interval(1e-5, 1e-2))"',
                    "hydra.sweeper.directions=[maximize,maximize]", "hydra.sweeper.n_trials=3",
                    "hydra.sweeper.n_jobs=2", f"hydra.sweeper.storage=journal://{log}",
                    "hydra.sweep.dir=sweep"], cwd=tmp_path, check=True, capture_output=True)
    assert [t.state for t in study_of(log, "app").trials] == [TrialState.COMPLETE] * 3
    assert sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/metrics.json")) == ["0", "2"]


def test_n_jobs_follows_the_launcher():
    from omegaconf import OmegaConf

    from hydra_plugins.forgetting_plugins._optuna_workers import launcher_parallelism

    gpus = "hydra_plugins.forgetting_plugins.gpu_launcher.GpuPoolLauncher"
    cases = [({"_target_": gpus, "gpus": ["0", "1", "2", "3"], "jobs_per_gpu": 2}, 8),
             ({"_target_": gpus, "gpus": [], "n_workers": 3}, 3),
             ({"_target_": "x.submitit_launcher.SlurmLauncher", "array_parallelism": 64}, 64),
             ({"_target_": "hydra._internal.core_plugins.basic_launcher.BasicLauncher"}, 1)]
    for launcher, n in cases:
        assert launcher_parallelism(OmegaConf.create(launcher)) == n
