"""Arithmetic word problems in GSM8K's format (a short worked solution ending in `#### N`), generated
deterministically: a math task the offline tiny preset can learn (`data=arith`; GSM8K leaves it at chance).
One- and two-step problems (add, subtract, multiply) whose numbers and results all lie in [2, 200]. A
question's split follows from a hash of its text, so train and test never share one, whatever the seed."""
from __future__ import annotations

import hashlib
import random

from .errors import ConfigError

NAMES = ["Tom", "Anna", "Ben", "Lucy", "Sam", "Mia", "Jack", "Emma", "Leo", "Sara", "Max", "Nina", "Omar", "Ella",
         "Ravi", "Zoe", "Hugo", "Lily", "Ian", "Maya", "Noah", "Ruby", "Owen", "Chloe", "Ali", "Grace", "Finn", "Ava",
         "Luis", "Ivy", "Theo", "Rosa", "Kai", "Nora", "Eli", "Jade", "Ken", "Amy", "Dan", "Lena"]
OBJECTS = ["apples", "oranges", "pears", "plums", "lemons", "cherries", "cookies", "muffins", "cupcakes", "eggs",
           "pencils", "crayons", "markers", "erasers", "books", "stickers", "stamps", "cards", "coins", "marbles",
           "buttons", "beads", "shells", "rocks", "feathers", "ribbons", "balloons", "candles", "flowers", "seeds",
           "blocks", "toy cars", "puzzles", "bottles", "tickets", "socks"]
CONTAINERS = [("box", "boxes"), ("bag", "bags"), ("basket", "baskets"), ("jar", "jars"), ("crate", "crates"),
              ("bucket", "buckets"), ("tray", "trays"), ("bowl", "bowls"), ("tin", "tins"), ("drawer", "drawers")]
LOW = 2  # every number and result lies in [LOW, max_value]
OPS = {"+": lambda x, y: x + y, "-": lambda x, y: x - y, "*": lambda x, y: x * y}


def ranges(max_value: int) -> dict[str, tuple[int, int]]:
    """Number ranges: S factors, M addends, L starting amounts (at max_value 200: 2-12, 2-60, 10-150)."""
    return {"S": (2, min(12, max_value // 2)), "M": (2, min(60, max_value)),
            "L": (min(10, max_value // 2), min(150, max_value))}


S, M, L = "S", "M", "L"

# (question, ranges of a, b, c, steps); a step (sentence, x, op, y) writes "x op y = r" as {eq}; results are r1, r2
TEMPLATES = [
    ("{A} has {a} {obj}. {A} buys {b} more. How many {obj} does {A} have now?", (L, M),
     [("{A} has {eq} {obj} now.", "a", "+", "b")]),
    ("{A} has {a} {obj} and {B} has {b} {obj}. How many {obj} do they have together?", (L, L),
     [("Together they have {eq} {obj}.", "a", "+", "b")]),
    ("{A} had {a} {obj} and gave {b} of them to {B}. How many {obj} does {A} have left?", (L, M),
     [("{A} has {eq} {obj} left.", "a", "-", "b")]),
    ("There are {a} {obj} in the {box}. {A} takes {b} of them out. How many {obj} are still in the {box}?", (L, M),
     [("The {box} still holds {eq} {obj}.", "a", "-", "b")]),
    ("{A} has {a} {boxes} with {b} {obj} in each. How many {obj} does {A} have?", (S, S),
     [("{A} has {eq} {obj}.", "a", "*", "b")]),
    ("{A} buys {a} {obj} for {b} dollars each. How many dollars does {A} spend?", (S, S),
     [("{A} spends {eq} dollars.", "a", "*", "b")]),
    ("{A} has {a} {obj}. {B} has {b} fewer {obj} than {A}. How many {obj} does {B} have?", (L, M),
     [("{B} has {eq} {obj}.", "a", "-", "b")]),
    ("{A} has {a} {obj}. {B} has {b} more {obj} than {A}. How many {obj} does {B} have?", (L, M),
     [("{B} has {eq} {obj}.", "a", "+", "b")]),
    ("{A} has {a} {obj} and {B} has {b} {obj}. How many more {obj} does {A} have than {B}?", (L, M),
     [("{A} has {eq} more {obj} than {B}.", "a", "-", "b")]),
    ("{A} has {a} {obj}. {A} buys {b} more and then gives {c} to {B}. How many {obj} does {A} have now?", (L, M, M),
     [("After buying, {A} has {eq} {obj}.", "a", "+", "b"),
      ("After giving {c} away, {A} has {eq} {obj}.", "r1", "-", "c")]),
    ("{A} has {a} {boxes} with {b} {obj} in each and {c} more {obj} on the table. How many {obj} does {A} have "
     "in total?", (S, S, M),
     [("The {boxes} hold {eq} {obj}.", "a", "*", "b"), ("{A} has {eq} {obj} in total.", "r1", "+", "c")]),
    ("{A} buys {a} {boxes} of {obj} with {b} in each and gives {c} of the {obj} to {B}. How many {obj} does {A} "
     "have left?", (S, S, M),
     [("{A} buys {eq} {obj}.", "a", "*", "b"), ("{A} has {eq} {obj} left.", "r1", "-", "c")]),
    ("{A} has {a} {obj}. {B} has {b} more {obj} than {A}. How many {obj} do they have together?", (M, M),
     [("{B} has {eq} {obj}.", "a", "+", "b"), ("Together they have {eq} {obj}.", "a", "+", "r1")]),
    ("{A} collects {a} {obj} each day for {b} days and then loses {c} of them. How many {obj} does {A} have now?",
     (S, S, M),
     [("{A} collects {eq} {obj}.", "a", "*", "b"), ("{A} has {eq} {obj} now.", "r1", "-", "c")]),
    ("{A} has {a} {obj}, {B} has {b} and {C} has {c}. How many {obj} do they have in all?", (M, M, M),
     [("{A} and {B} have {eq} {obj}.", "a", "+", "b"), ("All three have {eq} {obj}.", "r1", "+", "c")]),
    ("There are {a} {obj} in the {box}. {A} puts in {b} more and {B} takes out {c}. How many {obj} are in the "
     "{box} now?", (L, M, M),
     [("After {A} adds some, the {box} holds {eq} {obj}.", "a", "+", "b"),
      ("After {B} takes some out, it holds {eq} {obj}.", "r1", "-", "c")]),
    ("{A} had {a} {obj}. {A} gave {b} to {B} and {c} to {C}. How many {obj} does {A} have left?", (L, M, M),
     [("{A} gave away {eq} {obj}.", "b", "+", "c"), ("{A} has {eq} {obj} left.", "a", "-", "r1")]),
    ("{A} has {a} {obj} and {B} has {b} fewer than {A}. How many {obj} do they have in all?", (M, M),
     [("{B} has {eq} {obj}.", "a", "-", "b"), ("In all they have {eq} {obj}.", "a", "+", "r1")]),
]


def split_of(question: str) -> str:
    """'test' for a fifth of all questions, 'train' for the rest: a function of the text alone."""
    return "test" if int(hashlib.sha256(question.encode()).hexdigest(), 16) % 5 == 0 else "train"


def problem(rng: random.Random, max_value: int = 200) -> dict | None:
    """One random problem {"question", "answer"}, or None when a result leaves [LOW, max_value]."""
    question, kinds, steps = rng.choice(TEMPLATES)
    span = ranges(max_value)
    a, b, c = rng.sample(NAMES, 3)
    box, boxes = rng.choice(CONTAINERS)
    words = {"A": a, "B": b, "C": c, "obj": rng.choice(OBJECTS), "box": box, "boxes": boxes}
    v = {k: rng.randint(*span[kind]) for k, kind in zip("abc", kinds)}
    lines = []
    for i, (text, x, op, y) in enumerate(steps, 1):
        r = OPS[op](v[x], v[y])
        if not LOW <= r <= max_value:
            return None
        lines.append(text.format(**words, **v, eq=f"{v[x]} {op} {v[y]} = {r}"))
        v[f"r{i}"] = r
    return {"question": question.format(**words, **v), "answer": "\n".join(lines) + f"\n#### {r}"}


def rows(split: str, n: int, seed: int = 0, max_value: int = 200) -> list[dict]:
    """n distinct problems of `split` (train | test), the same for the same seed."""
    if split not in ("train", "test"):
        raise ConfigError(f"arith has splits 'train' and 'test', not {split!r}")
    rng, out, seen = random.Random(seed), [], set()
    for _ in range(50 * n + 1000):
        if len(out) >= n:
            break
        p = problem(rng, max_value)
        if p and p["question"] not in seen and split_of(p["question"]) == split:
            seen.add(p["question"])
            out.append(p)
    if len(out) < n:
        raise ConfigError(f"arith: could only generate {len(out)} distinct {split} problems, {n} asked")
    return out
