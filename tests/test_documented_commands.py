"""Every `python launch.py …` and `make …` command that the README, docs/*.md and the sweeps/ and conf/experiment/
headers show still composes (as `--cfg job` would, no model loaded) and passes `config.validate`; for a multirun, each point of
its grid as Hydra's sweeper expands it (Optuna: each choice and both ends of each interval)."""
import os
import re
import shlex
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
ENV_PREFIX = re.compile(r"^(?:[A-Z_][A-Z0-9_]*=\S+\s+)+")


def _command(text: str) -> str | None:
    """`python launch.py …` or `make …` from one shell line: env assignments and a trailing comment off."""
    text = ENV_PREFIX.sub("", " ".join(text.split()))
    text = re.split(r"\s+#", text)[0].strip()
    return text if text.startswith(("python launch.py", "make ")) else None


def readme_commands(md: str) -> list[str]:
    out = []
    for block in re.findall(r"```[a-z]*\n(.*?)```", md, flags=re.S):
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            out.append(_command(line))
    prose = re.sub(r"```.*?```", "", md, flags=re.S)
    out += [_command(span) for span in re.findall(r"`([^`]+)`", prose)]  # inline spans may wrap lines
    return [c for c in out if c]


def sweep_header_commands(yaml_text: str) -> list[str]:
    header = []
    for line in yaml_text.splitlines():
        if not line.startswith("#"):
            break
        header.append(line.lstrip("# "))
    out = []
    for line in header:
        out += [_command(span) for span in re.findall(r"`([^`]+)`", line)]
        m = re.search(r"python launch\.py.*?(?=\s{2}|\s\(|`|$)", line)
        if m:
            out.append(_command(m.group(0)))
    return [c for c in out if c]


def documented() -> list[tuple[str, str]]:
    found = [("README.md", c) for c in readme_commands((ROOT / "README.md").read_text())]
    for f in sorted((ROOT / "docs").glob("*.md")):
        found += [(f"docs/{f.name}", c) for c in readme_commands(f.read_text())]
    for f in sorted((ROOT / "sweeps").glob("*.yaml")) + sorted((ROOT / "conf/experiment").glob("*.yaml")):
        found += [(str(f.relative_to(ROOT)), c) for c in sweep_header_commands(f.read_text())]
    return list(dict.fromkeys(found))


def launch_invocations(command: str) -> list[list[str]]:
    """The launch.py argument lists a command runs: its own, or those of the make recipe (`make -n`)."""
    if command.startswith("python launch.py"):
        return [shlex.split(command)[2:]]
    r = subprocess.run(["make", "-n", *shlex.split(command)[1:]], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 0, f"`{command}`: {r.stderr.strip()}"
    calls = []
    for line in r.stdout.replace("\\\n", " ").splitlines():
        for part in re.split(r";|&&|\|\|", line):
            words = shlex.split(part)
            if len(words) > 1 and words[1] == "launch.py":
                calls.append(words[2:])
    return calls


def grid(compose, args: list[str]) -> list[list[str]]:
    """The override list of every job `launch.py <args>` would run."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = [a for a in args if not a.startswith("-") and a != "job"]
    if not {"-m", "--multirun"} & set(args):
        return [overrides]
    hydra_cfg = compose([o for o in overrides if not OverridesParser.create().parse_override(o).is_sweep_override()],
                        return_hydra=True).hydra
    params = [f"{k}={v}" for k, v in (hydra_cfg.sweeper.get("params") or {}).items()]
    parsed = OverridesParser.create().parse_overrides(params + overrides)
    if "optuna" not in str(hydra_cfg.sweeper._target_).lower():
        return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]
    from hydra_plugins.forgetting_plugins._optuna_impl import SearchSpace

    space = SearchSpace(parsed)
    first = {n: d.choices[0] if hasattr(d, "choices") else d.low for n, d in space.distributions.items()}
    jobs = [space.overrides(first)]
    for name, d in space.distributions.items():
        for value in (d.choices if hasattr(d, "choices") else (d.low, d.high)):
            jobs.append(space.overrides({**first, name: value}))
    return jobs


COMMANDS = documented()


def test_the_docs_show_commands_of_both_kinds():
    """The extraction itself: the README's two commands, its real sweep and multi-line command, a docs page's
    command and a sweep header are found."""
    readme = [c for s, c in COMMANDS if s == "README.md"]
    assert "make demo" in readme and "make test" in readme
    assert "python launch.py -m experiment=seed000 lr=1e-4,2e-4 epochs=1,2,3" in readme
    assert ("python launch.py +eval.harmful_sets.mine.path=my.csv +eval.harmful_sets.mine.prompt_column=prompt"
            in readme)  # a command continued with a backslash
    assert ("docs/configuration.md", "python launch.py -m lr=1e-4,2e-4 epochs=1,2,3") in COMMANDS
    assert ("sweeps/der_search.yaml", "python launch.py -m +sweeps=der_search "
            "hydra.sweep.dir=outputs/sweeps/der_search") in COMMANDS


@pytest.mark.parametrize("source,command", COMMANDS, ids=[f"{s}: {c}" for s, c in COMMANDS])
def test_documented_command_composes(compose, monkeypatch, source, command):
    from forgetting.config import validate

    monkeypatch.setenv("SLURM_PARTITION", "gpu")
    monkeypatch.setenv("SLURM_ACCOUNT", "me")
    jobs = [job for args in launch_invocations(command) for job in grid(compose, args)]
    for job in jobs:
        try:
            validate(compose(job))
        except Exception as e:
            pytest.fail(f"{source}: `{command}` -> job {job}: {type(e).__name__}: {str(e).splitlines()[0]}")
