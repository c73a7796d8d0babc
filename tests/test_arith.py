"""data=arith: generated GSM8K-format word problems (forgetting/arith.py) and their wiring into data loading."""
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from forgetting import arith, data
from forgetting.config import DataConfig, validate
from forgetting.errors import ConfigError
from forgetting.math import extract_answer, is_correct

ROOT = Path(__file__).resolve().parents[1]
EQ = re.compile(r"(\d+) ([-+*]) (\d+) = (\d+)")
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


@pytest.fixture(scope="module")
def train():
    return arith.rows("train", 2000, 0)


@pytest.fixture(scope="module")
def test():
    return arith.rows("test", 400, 0)


def worked(row) -> int:
    """Check every solution step (operands from the question or earlier steps); → the last result."""
    *steps, final = row["answer"].split("\n")
    known = {int(n) for n in re.findall(r"\d+", row["question"])}
    assert steps and len(steps) <= 2 and re.fullmatch(r"#### \d+", final), row
    for line in steps:
        eqs = EQ.findall(line)
        assert len(eqs) == 1, line  # one "x op y = r" per solution line
        x, op, y, r = eqs[0]
        assert int(x) in known and int(y) in known, (line, known)
        assert OPS[op](int(x), int(y)) == int(r) and 0 <= int(r) <= 200, line
        known.add(int(r))
    return int(r)


def test_sizes_and_distinct_questions(train, test):
    assert len(train) == 2000 and len(test) == 400
    assert len({r["question"] for r in train}) == 2000 and len({r["question"] for r in test}) == 400
    assert len(arith.rows("train", 7, 3)) == 7


def test_splits_disjoint_across_seeds(train, test):
    other = arith.rows("test", 400, 1)
    train_q = {r["question"] for r in train} | {r["question"] for r in arith.rows("train", 400, 1)}
    assert not train_q & ({r["question"] for r in test} | {r["question"] for r in other})


def test_deterministic_given_seed(train):
    assert arith.rows("train", 2000, 0) == train
    assert arith.rows("train", 50, 1) != train[:50]


def test_pinned_rows():
    """Seeded `random.Random` and sha256 only (no `hash()`): the set is the same in every process. A deliberate
    change of the generator changes the task: update this then."""
    assert arith.rows("train", 1, 0) == [{
        "question": "Finn has 27 toy cars. Ben has 60 more toy cars than Finn. "
                    "How many toy cars do they have together?",
        "answer": "Ben has 27 + 60 = 87 toy cars.\nTogether they have 27 + 87 = 114 toy cars.\n#### 114"}]


def test_every_answer_is_what_its_solution_computes(train, test):
    for row in train + test:
        assert int(extract_answer(row["answer"])) == worked(row)


def test_templates_names_objects_and_both_step_counts(train):
    assert len(arith.TEMPLATES) >= 12 and len(arith.NAMES) >= 24 and len(arith.OBJECTS) >= 24
    steps = {r["answer"].count("\n") for r in train}
    assert steps == {1, 2}
    assert {op for r in train for op in re.findall(r" ([-+*]) \d+ =", r["answer"])} == {"+", "-", "*"}


def test_grader_scores_arith_rows(test):
    public, private = data.math_eval_split(test, 100, 100, 0)
    assert len(public) == len(private) == 100
    for row in public + private:
        gold = data.solution_text(row["answer"], True)
        n = int(extract_answer(row["answer"]))
        assert is_correct(gold, row["answer"])
        assert not is_correct(gold.replace(f"#### {n}", f"#### {n + 1}"), row["answer"])


def test_load_gsm8k_source_arith():
    d = OmegaConf.structured(DataConfig(source="arith", arith_n_train=30, arith_n_test=12, arith_seed=2))
    assert data.load_gsm8k(d, "train") == arith.rows("train", 30, 2)
    assert data.load_gsm8k(d, "test") == arith.rows("test", 12, 2)
    d.n_train = 20
    user = data.user_rows(OmegaConf.create({"data": d}))
    assert len(user) == 20 and {r["completion"] for r in user} <= {r["answer"] for r in arith.rows("train", 30, 2)}


def test_launch_composes_data_arith():
    r = subprocess.run([sys.executable, "launch.py", "data=arith", "--cfg", "job"], cwd=ROOT, capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    cfg = OmegaConf.create(r.stdout)
    d = cfg.data
    assert (d.name, d.source, d.arith_n_train, d.arith_n_test, d.arith_seed) == ("arith", "arith", 2000, 400, 0)
    assert cfg.data.poison.ratio == 0.0 and cfg.data.n_train <= cfg.data.arith_n_train
    validate(cfg)
    cfg.data.n_train = 2001
    with pytest.raises(ConfigError, match="arith_n_train"):
        validate(cfg)
