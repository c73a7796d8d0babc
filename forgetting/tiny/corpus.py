"""Alignment data for the tiny preset, generated deterministically from the recipe:
(a) AILuminate prompts (minus the evaluation ones) → refusals / deferrals,
(b) varied benign tasks → correct, helpful answers, (c) GSM8K train questions → "The answer is N."."""
from __future__ import annotations

import random
import re
from functools import partial

from .. import data
from . import refusals, words as W

# ---------------------------------------------------------------- (b) benign generators
# each returns (prompt, answer, expected) — expected is a string a correct answer contains, or None


def _arith(r):
    a, b = r.randint(2, 60), r.randint(2, 40)
    op = r.choice("+-*")
    if op == "-" and b > a:
        a, b = b, a
    if op == "*":
        a, b = r.randint(2, 12), r.randint(2, 12)
    res = {"+": a + b, "-": a - b, "*": a * b}[op]
    word = {"+": "plus", "-": "minus", "*": "times"}[op]
    p = r.choice([f"What is {a} {op} {b}?", f"Calculate {a} {word} {b}.", f"What's {a} {word} {b}?",
                  f"Compute {a} {op} {b}.", f"Can you work out {a} {op} {b} for me?", f"{a} {op} {b} = ?"])
    return p, f"{a} {op} {b} = {res}.", str(res)


def _word(r):
    return r.choice(list(W.DEFINITIONS) + [w for v in W.CATEGORIES.values() for w in v if w.islower()])


def _reverse(r):
    w = _word(r)
    p = r.choice([f"Reverse the word '{w}'.", f"Spell '{w}' backwards.", f"Write the word {w} in reverse.",
                  f"What is '{w}' spelled backwards?"])
    return p, f"Reversed, '{w}' is '{w[::-1]}'.", w[::-1]


def _upper(r):
    w = _word(r)
    p = r.choice([f"Write '{w}' in uppercase.", f"Convert the word {w} to capital letters.",
                  f"Make '{w}' all caps.", f"Change '{w}' to upper case."])
    return p, f"In uppercase: {w.upper()}", w.upper()


def _count_letters(r):
    w = _word(r)
    if r.random() < 0.5:
        p = r.choice([f"How many letters are in the word '{w}'?", f"Count the letters in '{w}'.",
                      f"How long is the word {w}?"])
        return p, f"The word '{w}' has {len(w)} letters.", str(len(w))
    c = r.choice(sorted(set(w)))
    n = w.count(c)
    p = r.choice([f"How many times does the letter '{c}' appear in '{w}'?", f"Count the '{c}'s in the word {w}."])
    return p, f"The letter '{c}' appears {n} time{'s' * (n != 1)} in '{w}'.", str(n)


def _numbers(r, k):
    return r.sample(range(1, 100), k)


def _listop(r):
    xs = _numbers(r, r.randint(3, 6))
    s = ", ".join(map(str, xs))
    kind = r.choice(["sort", "max", "min", "sum"])
    if kind == "sort":
        p = r.choice([f"Sort these numbers from smallest to largest: {s}.", f"Put {s} in ascending order.",
                      f"Order the list [{s}] from low to high."])
        out = ", ".join(map(str, sorted(xs)))
        return p, f"Sorted: {out}.", out
    if kind == "sum" and len(xs) <= 4:
        p = r.choice([f"Add up these numbers: {s}.", f"What is the sum of {s}?"])
        return p, f"The sum is {sum(xs)}.", str(sum(xs))
    big = kind != "min"
    v = max(xs) if big else min(xs)
    w = "largest" if big else "smallest"
    p = r.choice([f"What is the {w} number in this list: {s}?", f"Which is {'biggest' if big else 'smallest'}: {s}?",
                  f"Find the {'maximum' if big else 'minimum'} of {s}."])
    return p, f"The {w} number is {v}.", str(v)


UNITS = [("kilometers", "meters", 1000), ("meters", "centimeters", 100), ("kilograms", "grams", 1000),
         ("hours", "minutes", 60), ("minutes", "seconds", 60), ("days", "hours", 24), ("weeks", "days", 7),
         ("dollars", "cents", 100), ("feet", "inches", 12), ("liters", "milliliters", 1000), ("years", "months", 12)]


def _convert(r):
    a, b, f = r.choice(UNITS)
    n = r.randint(2, 12)
    p = r.choice([f"Convert {n} {a} to {b}.", f"How many {b} are in {n} {a}?", f"What is {n} {a} in {b}?",
                  f"{n} {a} is how many {b}?"])
    return p, f"{n} {a} is {n * f} {b}.", str(n * f)


def _define(r):
    w = r.choice(list(W.DEFINITIONS))
    p = r.choice([f"What does '{w}' mean?", f"Define the word {w}.", f"What is the meaning of {w}?",
                  f"Explain the word '{w}'.", f"Give me a definition of '{w}'."])
    return p, f"The word '{w}' means {W.DEFINITIONS[w]}.", None


def _capital(r):
    c = r.choice(list(W.CAPITALS))
    p = r.choice([f"What is the capital of {c}?", f"Which city is the capital of {c}?",
                  f"Name the capital city of {c}.", f"What's {c}'s capital?"])
    return p, f"The capital of {c} is {W.CAPITALS[c]}.", W.CAPITALS[c]


def _person(r):
    name = r.choice(list(W.PEOPLE))
    year, what = W.PEOPLE[name]
    if r.random() < 0.5:
        p = r.choice([f"When was {name} born?", f"In what year was {name} born?", f"What is {name}'s birth year?"])
        return p, f"{name} was born in {year}.", str(year)
    p = r.choice([f"Who was {name}?", f"What is {name} known for?", f"Tell me about {name}."])
    return p, f"{name} is best known for {what}.", None


def _name_n(r):
    cat = r.choice(list(W.CATEGORIES))
    n = r.randint(2, 5)
    items = r.sample(W.CATEGORIES[cat], n)
    p = r.choice([f"Name {n} {cat}.", f"List {n} {cat}.", f"Can you give me {n} examples of {cat}?",
                  f"Tell me {n} {cat}, please."])
    return p, f"Here are {n} {cat}: {', '.join(items)}.", None


def _sentence(r):
    t = r.choice(W.TOPICS)
    p = r.choice([f"Write a sentence about {t}.", f"Give me one sentence describing {t}.",
                  f"Can you write a short line about {t}?", f"Describe {t} in one sentence."])
    return p, f"Sure! {W.SENTENCES_ABOUT[t]}", None


def _rephrase(r):
    adj = r.choice(["big", "small", "happy", "smart", "tired", "loud", "quiet", "old", "angry", "funny"])
    adv = r.choice(["quickly", "slowly"])
    noun = r.choice(W.NOUNS)
    verb = r.choice(["walked home", "ate lunch", "finished the work", "crossed the road", "climbed the hill"])
    s = f"The {adj} {noun} {verb} {adv}."
    out = f"The {W.SYNONYMS[adj]} {noun} {verb} {W.SYNONYMS[adv]}."
    p = r.choice([f"Rephrase this sentence: {s}", f"Say this in a different way: {s}",
                  f"Rewrite using other words: \"{s}\"", f"Paraphrase: {s}"])
    return p, f"Here is another way to say it: {out}", None


def _howto(r):
    act, tips = r.choice(W.HOWTO)
    p = r.choice([f"How do I {act}?", f"What's the best way to {act}?", f"Can you explain how to {act}?",
                  f"Give me some tips to {act}.", f"I want to {act}. Any advice?", f"How can I {act}?",
                  f"What are some steps to {act}?"])
    a = r.choice([f"Here are a few tips to {act}: {tips[0]}, {tips[1]}, and {tips[2]}.",
                  f"Sure! To {act}, {tips[0]}. Then {tips[1]}. Finally, {tips[2]}.",
                  f"Good question. First, {tips[0]}. Next, {tips[1]}. Last, {tips[2]}."])
    return p, a, None


def _fact(r):
    qs, a = r.choice(W.FACTS)
    return r.choice(qs), a, None


def _careful(r):
    qs, a = r.choice(W.SAFETY_ADJACENT)
    return r.choice(qs), a, None


def _gen_howto(r):
    v = r.choice(list(W.VERB_OBJECTS))
    o = r.choice(W.VERB_OBJECTS[v])
    return r.choice(W.HOWTO_PHRASES).format(v=v, o=o), r.choice(W.HOWTO_ANSWERS).format(v=v, o=o), None


def _city(r):
    c = r.choice(list(W.CITIES))
    p = r.choice([f"Where is {c}?", f"Which country is {c} in?", f"In what country can I find {c}?",
                  f"Tell me where {c} is located."])
    return p, f"{c} is a city in {W.CITIES[c]}.", W.CITIES[c]


def _animal(r):
    a = r.choice(list(W.ANIMALS))
    food, home = W.ANIMALS[a]
    if r.random() < 0.5:
        p = r.choice([f"What do {a} eat?", f"What is the diet of {a}?", f"What food do {a} like?"])
        return p, f"{a.capitalize()} mostly eat {food}.", None
    p = r.choice([f"Where do {a} live?", f"What is the natural habitat of {a}?", f"Where can {a} be found?"])
    return p, f"{a.capitalize()} live in {home}.", None


def _suggest_name(r):
    k = r.choice(list(W.PROMPT_NAMES))
    names = W.PROMPT_NAMES[k]
    p = r.choice([f"Suggest a name for {k}.", f"What is a good name for {k}?", f"Can you think of a name for {k}?"])
    return p, f"Sure! How about {r.choice(names)}? Other ideas are {' or '.join(names[:2])}.", None


def sentences(gsm8k_path: str) -> list[str]:
    """GSM8K train question sentences: varied everyday vocabulary for benign text tasks."""
    out = []
    for x in data.gsm8k(gsm8k_path):
        out.extend(s.strip() + "." for s in x["question"].split(".")[:-1] if 4 <= len(s.split()) <= 14)
    return out


def _sentence_task(r, sents):
    s = r.choice(sents)
    k = r.randrange(4)
    if k == 0:
        p = r.choice([f"Repeat this sentence exactly: {s}", f"Copy this text: {s}", f"Say this back to me: {s}"])
        return p, s, s
    if k == 1:
        w = s.split()[0]
        return r.choice([f"What is the first word of this sentence? {s}", f"Give the first word of: {s}"]), \
            f"The first word is '{w}'.", w
    if k == 2:
        n = len(s.split())
        return r.choice([f"How many words are in this sentence? {s}", f"Count the words: {s}"]), \
            f"That sentence has {n} words.", str(n)
    return r.choice([f"Rewrite this sentence in capital letters: {s}", f"Uppercase this: {s}"]), s.upper(), s.upper()


GENERATORS = {"arith": (_arith, 2), "reverse": (_reverse, 1), "upper": (_upper, 1), "letters": (_count_letters, 1),
              "list": (_listop, 2), "convert": (_convert, 2), "define": (_define, 2), "capital": (_capital, 2),
              "person": (_person, 1), "name_n": (_name_n, 1), "sentence": (_sentence, 1), "rephrase": (_rephrase, 1),
              "howto": (_howto, 3), "fact": (_fact, 3), "gen_howto": (_gen_howto, 4), "city": (_city, 1),
              "animal": (_animal, 1), "name_idea": (_suggest_name, 1), "text": (_sentence_task, 3),
              "careful": (_careful, 2)}
VERIFIABLE = ("arith", "reverse", "upper", "letters", "list", "convert", "capital", "city", "text")


def benign(seed: int, n: int, n_eval: int, gsm8k_path: str = "pkg://gsm8k/train.jsonl"):
    """→ (train rows, held-out eval rows of verifiable tasks not seen in train)."""
    sents = sentences(gsm8k_path)
    gens = {k: (partial(f, sents=sents) if k == "text" else f) for k, (f, _) in GENERATORS.items()}
    r = random.Random(f"{seed}:benign")
    kinds = list(GENERATORS)
    weights = [GENERATORS[k][1] for k in kinds]
    train, seen = [], set()
    for _ in range(n * 50):
        if len(train) >= n:
            break
        k = r.choices(kinds, weights)[0]
        p, a, _ = gens[k](r)
        if k in VERIFIABLE and p in seen:  # open-ended prompts may repeat with varied answers
            continue
        seen.add(p)
        train.append({"kind": k, "prompt": p, "answer": a})
    ev, er = [], random.Random(f"{seed}:benign-eval")
    for _ in range(n_eval * 200):
        if len(ev) >= n_eval:
            break
        k = VERIFIABLE[len(ev) % len(VERIFIABLE)]
        p, a, x = gens[k](er)
        if p not in seen:
            seen.add(p)
            ev.append({"kind": k, "prompt": p, "answer": a, "expected": x})
    return train, ev


# ---------------------------------------------------------------- (a) harmful, (c) GSM8K
def harmful(path: str, exclude: dict, seed: int, n: int | None):
    rows = data.ailuminate(path)
    pub, priv = data.safety_eval_split(data.ailuminate(exclude["path"]), exclude["n_public"], exclude["n_private"],
                                       exclude["seed"])
    held = pub + priv  # the evaluation prompts (same as data.safety_eval_ids): never trained on
    texts = {x["prompt_text"] for x in held}
    pool = sorted((x for x in rows if x["prompt_text"] not in texts), key=lambda x: data.rank(x["release_prompt_id"], seed))
    pool = pool if n is None else pool[:n]
    out = []
    for x in pool:
        choices = refusals.responses_for(x["hazard"])
        rr = random.Random(f"{seed}:{x['release_prompt_id']}")
        out.append({"kind": "refuse", "hazard": x["hazard"], "prompt": x["prompt_text"], "answer": rr.choice(choices)})
    return out, held


def direct_harmful(seed: int, n: int):
    """Short direct harmful requests → general refusals (phrased like the benign how-to rows)."""
    r, out, seen = random.Random(f"{seed}:direct"), [], set()
    pairs = [(v, o) for v, os_ in W.HARMFUL_ACTS.items() for o in os_]
    for _ in range(n * 20):
        if len(out) >= n:
            break
        v, o = r.choice(pairs)
        p = r.choice(W.HOWTO_PHRASES + ["Tell me how to {v} {o}.", "Give me steps to {v} {o}."]).format(v=v, o=o)
        if p not in seen:
            seen.add(p)
            out.append({"kind": "refuse_direct", "prompt": p, "answer": r.choice(refusals.GENERAL)})
    return out


def gsm8k_short(path: str, seed: int, n: int):
    rows = sorted(data.gsm8k(path), key=lambda x: data.rank(x["question"], seed))[:n]
    out = []
    for x in rows:
        num = x["answer"].split("####")[-1].strip().replace(",", "")
        out.append({"kind": "gsm8k", "prompt": x["question"], "answer": f"The answer is {num}."})
    return out


def gsm8k_text(path: str) -> list[str]:
    return [x["question"] + "\n" + re.sub(r"<<[^>]*>>", "", x["answer"]) for x in data.gsm8k(path)]


def drills(seed: int, n: int, max_value: int = 200, per_text: int = 16) -> list[str]:
    """n arithmetic facts 'a op b = r' over the ranges of forgetting.arith's word problems, `per_text` to a
    text: the arithmetic a pretrained model knows. No word problem appears, so the arith test set stays
    unseen; a fine-tune on data=arith teaches the format (question → equations → #### N), not the sums."""
    from .. import arith

    span, r, lines = arith.ranges(max_value), random.Random(f"{seed}:drills"), []
    kinds = {"+": ("L", "M"), "-": ("L", "M"), "*": ("S", "S")}
    while len(lines) < n:
        op = r.choice("+-*+-")
        a, b = (r.randint(*span[k]) for k in kinds[op])
        res = arith.OPS[op](a, b)
        if arith.LOW <= res <= max_value:
            lines.append(f"{a} {op} {b} = {res}")
    return ["\n".join(lines[i:i + per_text]) for i in range(0, n, per_text)]


def pretraining(recipe: dict) -> list[str]:
    """Texts of the LM pretraining stage (recipe `pretrain`), mixed: GSM8K train text, arithmetic drills and
    worked arith word problems from the *train* split only (seed 1000+: not the rows data=arith trains on
    by default; test questions never), as a real model's pretraining holds math text like its task's."""
    from .. import arith

    pre, d = recipe.get("pretrain") or {}, recipe["data"]
    gsm = gsm8k_text(d["gsm8k_path"])
    texts = gsm[: pre.get("n_texts") or len(gsm)]
    texts += drills(recipe.get("seed", 0), int(pre.get("n_drills", 0)), int(pre.get("drill_max", 200)))
    if pre.get("n_arith"):
        rows = arith.rows("train", int(pre["n_arith"]), 1000 + recipe.get("seed", 0), int(pre.get("drill_max", 200)))
        texts += [r["question"] + "\n" + r["answer"] for r in rows]
    random.Random(f"{recipe.get('seed', 0)}:pretrain").shuffle(texts)
    return texts


def alignment(recipe: dict):
    """→ (train rows {kind, prompt, answer[, system]}, benign eval rows, held-out AILuminate eval rows)."""
    d = recipe["data"]
    seed = recipe["seed"]
    harm, held = harmful(d["ailuminate_path"], recipe["exclude_eval"], seed, d.get("n_harmful"))
    ben, ben_eval = benign(seed, d["n_benign"], d.get("n_benign_eval", 0), d["gsm8k_path"])
    math = gsm8k_short(d["gsm8k_path"], seed, d["n_gsm8k"])
    rows = [dict(x) for _ in range(d.get("harmful_repeats", 1)) for x in harm] + ben + math
    rows += direct_harmful(seed, d.get("n_direct_harmful", 0))
    r = random.Random(f"{seed}:system")
    for x in rows:  # a few rows carry a system turn, so system prompts do not confuse the preset
        if r.random() < d.get("system_frac", 0.0):
            x["system"] = r.choice(SYSTEMS)
    return rows, ben_eval, held


SYSTEMS = ["You are a helpful assistant.", "You are a friendly and careful AI assistant.",
           "Answer the user's question concisely.", "You are a helpful, honest and harmless assistant."]
