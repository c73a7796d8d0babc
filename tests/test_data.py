"""Deterministic, disjoint, stratified evaluation splits; the JSONL readers."""
import json
import random

import pytest

from forgetting import data
from forgetting.errors import ConfigError

AIL = "pkg://ailuminate/airr_official_1.0_demo_en_us_prompt_set_release.csv"


def test_math_split_is_deterministic_and_order_independent():
    rows = data.gsm8k("pkg://gsm8k/test.jsonl")
    a = data.math_eval_split(rows, 100, 100, 0)
    shuffled = rows[:]
    random.Random(1).shuffle(shuffled)
    b = data.math_eval_split(shuffled, 100, 100, 0)
    assert [r["question"] for r in a[0]] == [r["question"] for r in b[0]]
    assert {r["question"] for r in a[0]}.isdisjoint(r["question"] for r in a[1])
    c = data.math_eval_split(rows, 100, 100, 1)
    assert [r["question"] for r in c[0]] != [r["question"] for r in a[0]]


def test_safety_split_is_stratified_disjoint_and_deterministic():
    rows = data.ailuminate(AIL)
    pub, priv = data.safety_eval_split(rows, 40, 40, 0)
    assert len(pub) == len(priv) == 40
    ids_pub, ids_priv = {r["release_prompt_id"] for r in pub}, {r["release_prompt_id"] for r in priv}
    assert ids_pub.isdisjoint(ids_priv)
    hazards = {r["hazard"] for r in rows}
    assert {r["hazard"] for r in pub} == hazards  # every hazard represented
    for h in hazards:  # proportional: each of the 11 big hazards gets 3-4 of 40
        k = sum(r["hazard"] == h for r in pub)
        assert (1 if h.startswith("spc_") else 3) <= k <= 4
    again = data.safety_eval_split(list(reversed(rows)), 40, 40, 0)
    assert [r["release_prompt_id"] for r in again[0]] == [r["release_prompt_id"] for r in pub]


def test_xstest_subset_only_safe_prompts():
    sub = data.xstest_safe_subset("pkg://xstest/xstest_prompts.csv", 50, 0)
    assert len(sub) == 50 and {r["label"] for r in sub} == {"safe"}
    assert len({r["type"] for r in sub}) == 10


def _jsonl_readers():
    from forgetting import grade
    from forgetting.tasks import jsonl

    return {"gsm8k": data.gsm8k, "harmful": data.harmful, "grade": grade.read_rows, "task=jsonl": jsonl.read}


def test_every_jsonl_reader_skips_blank_lines_and_names_a_malformed_one(tmp_path):
    """GSM8K, the harmful sets, `forgetting grade` and task=jsonl read JSONL through data.json_lines."""
    good = {"question": "1 + 1?", "answer": "2 #### 2", "prompt": "p", "response": "r", "completion": "c"}
    text = json.dumps(good) + "\n\n" + json.dumps(good) + "\n"
    for name, read in _jsonl_readers().items():
        f = tmp_path / f"{name}.jsonl"
        f.write_text(text, encoding="utf-8")
        assert len(read(str(f))) == 2, name  # the blank line 2 is skipped
        f.write_text(text + '{"question": oops}\n', encoding="utf-8")
        with pytest.raises(ConfigError, match=rf"{f.name}:4: malformed JSON line"):
            read(str(f))
    f.write_text(text, encoding="utf-8")
    assert [i for i, _ in data.json_lines(f)] == [1, 3]
