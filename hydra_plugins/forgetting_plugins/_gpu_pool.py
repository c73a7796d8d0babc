"""Implementation of ``hydra/launcher=gpus`` (see gpu_launcher.py for what and why).

Parent: composes each job's config with Hydra's config loader (as the basic launcher does),
fills in what ``run_job`` would (job id/num, runtime.output_dir) and resolves the whole config;
then keeps one spawned process per free slot (a GPU, or a CPU worker), the slot's environment
set before the process starts, so CUDA and the thread pools see it from their first import.
Child: ``run_job`` (Hydra's own) on the resolved config, and sends back the JobReturn.
"""
from __future__ import annotations

import contextlib
import copy
import logging
import multiprocessing as mp
import os
import pickle
import shutil
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import wait as mp_wait
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

from hydra.core.hydra_config import HydraConfig
from hydra.core.singleton import Singleton
from hydra.core.utils import (
    JobReturn,
    JobRuntime,
    JobStatus,
    configure_log,
    filter_overrides,
    run_job,
    setup_globals,
)
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

log = logging.getLogger(__name__)

#: Thread-pool sizes set per job (torch's intra-op pool follows OMP_NUM_THREADS at import).
THREAD_ENV_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                   "NUMEXPR_NUM_THREADS")
#: Set in every job: which slot of the pool it runs in (a GPU id, or cpu<k>).
SLOT_ENV_VAR = "FORGETTING_LAUNCHER_SLOT"
_GRACE_S = 30.0


# --------------------------------------------------------------------- devices and threads
def detect_gpus() -> List[str]:
    """GPUs the launching process may use: its CUDA_VISIBLE_DEVICES when set, else every GPU
    nvidia-smi lists, else none. Without importing torch (no CUDA context in the parent)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        devices = [d.strip() for d in visible.split(",") if d.strip()]
        return [] if not devices or devices[0].startswith("-") else devices
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return []
    try:
        out = subprocess.run([smi, "--query-gpu=index", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=60, check=True).stdout
    except (OSError, subprocess.SubprocessError) as e:
        log.warning(f"nvidia-smi failed ({e}); running on CPU workers")
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def make_slots(gpus: Sequence[str], jobs_per_gpu: int, n_workers: int) -> List[str]:
    """One entry per concurrent job: GPU ids (interleaved, so the first jobs spread over all
    GPUs), or cpu0..cpuN-1 without GPUs."""
    if gpus:
        return [str(g) for _ in range(jobs_per_gpu) for g in gpus]
    return [f"cpu{k}" for k in range(n_workers)]


def job_env(slot: str, threads: int, gpu_mode: bool) -> Dict[str, str]:
    env = {name: str(threads) for name in THREAD_ENV_VARS}
    env[SLOT_ENV_VAR] = slot
    if gpu_mode:
        env["CUDA_VISIBLE_DEVICES"] = slot
        if "CUDA_DEVICE_ORDER" not in os.environ:  # ids as nvidia-smi numbers them
            env["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    else:
        env["CUDA_VISIBLE_DEVICES"] = ""  # CPU mode: no job grabs a GPU by accident
    return env


@contextlib.contextmanager
def _patched_environ(env: Dict[str, str]) -> Iterator[None]:
    # spawn starts the child with the parent's environment of that moment
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# --------------------------------------------------------------------- what goes to a worker
def task_reference(fn: Any) -> Tuple[str, ...] | Tuple[str, Any]:
    """How the child finds the task function. ``@hydra.main`` hands Hydra the undecorated
    function while the module attribute is the decorated one, so plain pickle refuses it:
    send (module, qualname, number of ``__wrapped__`` hops) instead."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", "")
    if module in sys.modules and qualname and "<locals>" not in qualname:
        obj: Any = sys.modules[module]
        try:
            for part in qualname.split("."):
                obj = getattr(obj, part)
        except AttributeError:
            obj = None
        hops = 0
        while obj is not None and obj is not fn and hops < 16:
            obj, hops = getattr(obj, "__wrapped__", None), hops + 1
        if obj is fn:
            return ("ref", module, qualname, str(hops))
    return ("object", fn)  # must pickle by itself


def resolve_task(ref: Tuple[Any, ...]) -> Any:
    if ref[0] == "object":
        return ref[1]
    _, module, qualname, hops = ref
    if module == "__main__":
        obj: Any = sys.modules["__main__"]  # spawn re-imports the main script under this name
    else:
        import importlib

        obj = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    for _ in range(int(hops)):
        obj = obj.__wrapped__
    return obj


def _picklable(obj: Any) -> bool:
    try:
        pickle.dumps(obj)
        return True
    except Exception:  # noqa: BLE001 - any pickling failure means no
        return False


def singleton_instances() -> Dict[Any, Any]:
    """Hydra's singletons (ConfigStore, JobRuntime, GlobalHydra, ...) that pickle. OmegaConf
    resolvers are not sent (lambdas): configs arrive resolved, and the re-imported main
    module registers its own."""
    instances = Singleton.get_state()["instances"]
    return {k: v for k, v in instances.items() if _picklable(k) and _picklable(v)}


def prepare_job_config(config_loader: Any, master: DictConfig, overrides: Sequence[str],
                       idx: int) -> DictConfig:
    """The job's config as ``run_job`` would see it, with every interpolation resolved here,
    in the launching process (``${hydra:...}`` and ``${now:...}`` do not resolve in a spawned
    child: different HydraConfig singleton, different clock)."""
    cfg = config_loader.load_sweep_config(master, list(overrides))
    with open_dict(cfg):
        cfg.hydra.job.id = f"{cfg.hydra.job.name}_{idx}"
        cfg.hydra.job.num = idx
    previous = HydraConfig.instance().cfg
    try:
        HydraConfig.instance().set_config(cfg)
        output_dir = os.path.join(str(OmegaConf.select(cfg, "hydra.sweep.dir")),
                                  str(OmegaConf.select(cfg, "hydra.sweep.subdir")))
        with read_write(cfg.hydra.runtime), open_dict(cfg.hydra.runtime):
            cfg.hydra.runtime.output_dir = os.path.abspath(output_dir)
        HydraConfig.instance().set_config(cfg)
        with read_write(cfg), read_write(cfg.hydra):
            OmegaConf.resolve(cfg)
    finally:
        HydraConfig.instance().cfg = previous
    return cfg


def failed_return(overrides: Sequence[str], cfg: Optional[DictConfig],
                  error: BaseException) -> JobReturn:
    ret = JobReturn()
    ret.overrides = list(overrides)
    if cfg is not None:
        task_cfg = copy.deepcopy(cfg)
        with read_write(task_cfg), open_dict(task_cfg):
            task_cfg.pop("hydra", None)
        ret.cfg = task_cfg
        ret.hydra_cfg = OmegaConf.masked_copy(cfg, "hydra")
    ret.working_dir = os.getcwd()
    try:
        ret.task_name = JobRuntime.instance().get("name")
    except KeyError:
        pass
    ret.status = JobStatus.FAILED
    ret.return_value = error
    return ret


# --------------------------------------------------------------------- child side
def _dumps_return(ret: JobReturn) -> bytes:
    try:
        return pickle.dumps(ret)
    except Exception as e:  # noqa: BLE001 - an unpicklable value or exception of the task
        what = ret._return_value
        kind = "exception" if ret.status == JobStatus.FAILED else "return value"
        ret.status = JobStatus.FAILED
        ret.return_value = RuntimeError(
            f"the job's {kind} cannot be sent back to the launcher ({e}): {what!r}")
        return pickle.dumps(ret)


def _exit_with_parent() -> None:
    """A job whose launcher died (killed, OOM) stops too, instead of holding its GPU with
    nobody left to collect the result."""
    parent = mp.parent_process()
    if parent is None:
        return

    def watch() -> None:
        mp_wait([parent.sentinel])
        os._exit(70)

    threading.Thread(target=watch, name="launcher-watch", daemon=True).start()


def _worker(conn: Any, payload: bytes) -> None:
    """Entry point of a job's process."""
    _exit_with_parent()
    job: Dict[str, Any] = {}
    try:
        job = pickle.loads(payload)
        threads = int(job["threads"])
        if "torch" in sys.modules:  # imported by the main module before we got here
            sys.modules["torch"].set_num_threads(threads)
        setup_globals()
        Singleton._instances.update(job["singletons"])
        hydra_context = job["hydra_context"]
        if hydra_context is None:
            from hydra._internal.callbacks import Callbacks
            from hydra.types import HydraContext

            hydra_context = HydraContext(config_loader=None, callbacks=Callbacks(job["config"]))
        ret = run_job(hydra_context=hydra_context, task_function=resolve_task(job["task"]),
                      config=job["config"], job_dir_key="hydra.sweep.dir",
                      job_subdir_key="hydra.sweep.subdir")
    except BaseException as e:  # noqa: BLE001 - SystemExit of the task too: a failed job
        ret = failed_return(job.get("overrides", []), job.get("config"), e)
    if ret.status == JobStatus.FAILED and isinstance(ret._return_value, BaseException):
        error = ret._return_value
        text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
        logging.getLogger(__name__).error(f"job {job.get('idx')} failed:\n{text}")
        if hasattr(error, "add_note"):  # the parent only gets the pickled exception
            error.add_note(f"--- traceback in the job's process (pid {os.getpid()}) ---\n{text}")
    data = _dumps_return(ret)
    sys.stdout.flush()
    sys.stderr.flush()
    conn.send_bytes(data)
    conn.close()


# --------------------------------------------------------------------- parent side
@dataclass
class _Running:
    i: int
    idx: int
    proc: Any
    slot: str
    cfg: DictConfig
    deadline: Optional[float]


def _stop(proc: Any) -> None:
    if proc.is_alive():
        proc.terminate()
        proc.join(10)
    if proc.is_alive():
        proc.kill()
        proc.join(10)


def launch(launcher: Any, job_overrides: Sequence[Sequence[str]],
           initial_job_idx: int) -> Sequence[JobReturn]:
    setup_globals()
    config, hydra_context = launcher.config, launcher.hydra_context
    assert config is not None and hydra_context is not None
    assert launcher.task_function is not None
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    sweep_dir = Path(str(config.hydra.sweep.dir))
    sweep_dir.mkdir(parents=True, exist_ok=True)

    gpus = detect_gpus() if launcher.gpus is None else list(launcher.gpus)
    gpu_mode = bool(gpus)
    slots = make_slots(gpus, launcher.jobs_per_gpu, launcher.n_workers)
    threads = int(launcher.threads_per_job or max(1, usable_cpus() // len(slots)))
    where = f"GPUs {','.join(gpus)} x{launcher.jobs_per_gpu}" if gpu_mode else "CPU"
    log.info(f"GPU-pool launcher: {len(job_overrides)} jobs, {len(slots)} at a time on {where}, "
             f"{threads} threads each; sweep output dir: {sweep_dir}")

    task = task_reference(launcher.task_function)
    singletons = singleton_instances()
    context = hydra_context if _picklable(hydra_context) else None
    timeout_s = None if launcher.timeout_min is None else float(launcher.timeout_min) * 60
    ctx = mp.get_context("spawn")

    results: List[Optional[JobReturn]] = [None] * len(job_overrides)
    pending = deque(range(len(job_overrides)))
    free = list(slots)
    running: Dict[Any, _Running] = {}
    try:
        while pending or running:
            while pending and free:
                i = pending.popleft()
                idx, overrides = initial_job_idx + i, list(job_overrides[i])
                log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
                cfg: Optional[DictConfig] = None
                try:
                    cfg = prepare_job_config(hydra_context.config_loader, config, overrides, idx)
                    payload = pickle.dumps({
                        "idx": idx, "overrides": overrides, "config": cfg, "task": task,
                        "threads": threads, "singletons": singletons,
                        "hydra_context": context})
                except Exception as e:  # noqa: BLE001 - a job that cannot start fails alone
                    log.error(f"job #{idx} could not be prepared: {type(e).__name__}: {e}")
                    results[i] = failed_return(overrides, cfg, e)
                    continue
                slot = free.pop(0)
                reader, writer = ctx.Pipe(duplex=False)
                proc = ctx.Process(target=_worker, args=(writer, payload),
                                   name=f"hydra-job-{idx}")
                with _patched_environ(job_env(slot, threads, gpu_mode)):
                    proc.start()
                writer.close()  # the child holds the only write end: EOF when it dies
                deadline = None if timeout_s is None else time.monotonic() + timeout_s
                running[reader] = _Running(i, idx, proc, slot, cfg, deadline)
                log.debug(f"job #{idx} started, pid {proc.pid}, slot {slot}")
            if not running:
                continue

            deadlines = [r.deadline for r in running.values() if r.deadline is not None]
            wait_s = None if not deadlines else max(0.0, min(deadlines) - time.monotonic())
            for reader in mp_wait(list(running), timeout=wait_s):
                job = running.pop(reader)
                overrides = list(job_overrides[job.i])
                try:
                    ret = pickle.loads(reader.recv_bytes())
                except EOFError:
                    job.proc.join(_GRACE_S)
                    ret = failed_return(overrides, job.cfg, RuntimeError(
                        f"job #{job.idx} (pid {job.proc.pid}) died without a result, "
                        f"exit code {job.proc.exitcode}"))
                except Exception as e:  # noqa: BLE001 - result that does not unpickle here
                    ret = failed_return(overrides, job.cfg, e)
                reader.close()
                job.proc.join(_GRACE_S)
                _stop(job.proc)
                results[job.i] = ret
                free.append(job.slot)
                if ret.status != JobStatus.COMPLETED:
                    log.warning(f"job #{job.idx} failed: {ret._return_value!r}")
            now = time.monotonic()
            for reader, job in list(running.items()):
                if job.deadline is not None and now >= job.deadline:
                    del running[reader]
                    _stop(job.proc)
                    reader.close()
                    log.warning(f"job #{job.idx} killed after timeout_min={launcher.timeout_min}")
                    results[job.i] = failed_return(
                        list(job_overrides[job.i]), job.cfg,
                        TimeoutError(f"job #{job.idx} exceeded {launcher.timeout_min} min"))
                    free.append(job.slot)
    finally:
        for job in running.values():  # interrupted: stop the jobs this call started
            _stop(job.proc)
    configure_log(config.hydra.hydra_logging, config.hydra.verbose)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]
