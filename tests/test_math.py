"""GSM8K answer extraction and scoring (forgetting.math)."""
import json
import re
from pathlib import Path

import pytest

from forgetting.math import extract_answer, is_correct

ROOT = Path(__file__).resolve().parents[1]

GOLD = ("Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n"
        "Natalia sold 48+24 = <<48+24=72>>72 clips altogether in April and May.\n#### 72")


@pytest.mark.parametrize("text, expected", [
    # formats
    (GOLD, "72"),
    ("so she pays 5 + 7 = 12 dollars\n#### 12", "12"),
    ("####18", "18"),
    ("The answer is 42.", "42"),
    ("the answer is 42", "42"),
    ("THE ANSWER IS 42", "42"),
    ("The final answer is: 1000", "1000"),
    ("The answer is **18**.", "18"),
    ("A: 18", "18"),
    ("Answer: 18", "18"),
    ("answer: 18.", "18"),
    ("First 3 then 4, so the total is \\boxed{15}.", "15"),
    ("The answer is \\boxed{3}", "3"),
    # fallback: the last number
    ("She has 3 apples, buys 4 more and ends with 7 apples.", "7"),
    ("5-3=2", "2"),
    # normalisation
    ("#### 1,234", "1234"),
    ("The answer is 1,234,567.", "1234567"),
    ("The answer is $18.", "18"),
    ("It costs $1,200.00 in total", "1200"),
    ("The answer is 25%", "25"),
    ("#### 12.0", "12"),
    ("Total: 12.00", "12"),
    ("The answer is 007", "7"),
    ("The answer is -5", "-5"),
    ("It dropped to -12 degrees", "-12"),
    ("It dropped to \u221212 degrees", "-12"),  # Unicode minus
    ("The answer is: -$1,200", "-1200"),
    ("Answer: -4 dollars", "-4"),
    ("x = 2.5", "2.5"),
    ("It costs $3.50", "3.5"),
    # no number
    ("I don't know.", None),
    ("", None),
    (None, None),
])
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


def test_marked_answer_beats_later_numbers():
    # a model that answers and then runs on into a made-up next question
    text = "So 24 + 48 = 72.\n#### 72\n\nQuestion: Tom has 5 apples and eats 2. How many are left?"
    assert extract_answer(text) == "72"
    assert extract_answer("The answer is 9. Question: what is 3 + 4?") == "9"


def test_the_first_final_answer_line_wins_whatever_its_format():
    assert extract_answer("The answer is 9.\nQuestion: what is 3 + 4?\n#### 7") == "9"
    assert extract_answer("#### 7\nThe answer is 9.") == "7"
    assert extract_answer("**The final answer is: $1,200**\n#### 5") == "1200"


def test_an_answer_in_mid_sentence_is_not_a_final_answer_line():
    assert extract_answer("So the answer is 5 per box, and 4 boxes.\n#### 20") == "20"
    assert extract_answer("Each gets 3, so the answer is 3 each. The final answer is: $\\boxed{12}$") == "12"


def test_bare_A_colon_opening_the_reasoning_is_not_the_answer():
    text = "A: Natalia sold 48/2 = 24 clips in May. In total she sold 48 + 24 = 72 clips."
    assert extract_answer(text) == "72"  # not the 48 right after "A:"


def test_calculator_annotations_are_stripped_before_the_fallback():
    # without the "####" line the last number must come from the text, not from <<...>>
    text = "She makes 9 * 2 = $<<9*2=18>>18 every day<<18*1=18>>."
    assert extract_answer(text) == "18"
    assert extract_answer("Total 3+4=<<3+4=7>>7 <<7*100=700>>") == "7"


def test_decimal_never_matches_an_integer_reference():
    assert extract_answer("The answer is 2.5") == "2.5"
    assert not is_correct("The answer is 2.5", "#### 2")
    assert not is_correct("The answer is 2.5", "3")


@pytest.mark.parametrize("response, reference, ok", [
    ("#### 72", GOLD, True),
    ("The answer is 72.", GOLD, True),
    ("She sold 72 clips.", "72", True),
    ("The answer is $72.00", 72, True),
    ("The answer is 1,000", "#### 1000", True),
    ("The answer is -3", "-3", True),
    ("#### 73", GOLD, False),            # wrong
    ("The answer is 3", "-3", False),    # sign matters
    ("The answer is 720", GOLD, False),
    ("I cannot solve this.", GOLD, False),  # no number
    ("#### 72", "no number here", False),   # a reference without a number never matches
])
def test_is_correct(response, reference, ok):
    assert is_correct(response, reference) is ok


def test_every_vendored_gsm8k_test_answer_extracts_to_its_gold_number():
    path = ROOT / "forgetting" / "assets" / "gsm8k" / "test.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    assert len(rows) == 1319
    for r in rows:
        gold = r["answer"].split("####")[-1].strip().replace(",", "")
        assert re.fullmatch(r"-?\d+", gold), gold
        assert extract_answer(r["answer"]) == str(int(gold)), r["answer"]
        assert is_correct(f"The answer is {gold}.", r["answer"])
        assert not is_correct(f"The answer is {int(gold) + 1}.", r["answer"])
