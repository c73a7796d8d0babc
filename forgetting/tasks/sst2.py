"""SST-2 sentiment classification: the model reads a review and writes its label, `positive` or `negative`;
accuracy = share of items whose first label word in the response is the gold one (a response naming neither
is wrong). source=hub: the hub's SST-2 (GLUE; train for training, validation for evaluation, as its test
labels are hidden); source=generated: a stand-in built here from word lists (nothing to download), short
templated reviews whose sentiment words are clear, that the offline tiny preset can learn. A review's split
follows from a hash of its text, so train and test never share one."""
from __future__ import annotations

import hashlib
import random
import re

from ..errors import ConfigError
from .base import Task, find, keyed

LABELS = ("negative", "positive")  # GLUE's label ids 0 and 1
LABEL = re.compile(r"\b(positive|negative)\b", re.IGNORECASE)

THINGS = ["movie", "film", "plot", "story", "acting", "cast", "script", "ending", "soundtrack", "dialogue", "director",
          "pacing", "sequel", "comedy", "drama", "thriller", "documentary", "animation", "performance", "screenplay",
          "music", "lead actor", "villain", "hero", "photography", "opening scene", "finale", "premise", "humor",
          "characters"]
WORDS = {  # polarity: (adjectives, verbs a viewer does, how the viewer felt)
    "positive": (["wonderful", "brilliant", "delightful", "charming", "moving", "superb", "gripping", "beautiful",
                  "funny", "clever", "touching", "excellent", "fresh", "stunning", "heartfelt", "warm", "smart",
                  "lovely", "great", "memorable", "inspiring", "joyful", "masterful", "engaging"],
                 ["loved", "enjoyed", "adored", "admired", "treasured", "savored"],
                 ["happy", "thrilled", "delighted", "moved", "amazed", "uplifted"]),
    "negative": (["terrible", "boring", "dull", "awful", "clumsy", "tedious", "bland", "painful", "lifeless", "messy",
                  "stupid", "weak", "dreadful", "predictable", "tiresome", "shallow", "ugly", "pointless", "poor",
                  "forgettable", "annoying", "hollow", "sloppy", "miserable"],
                 ["hated", "disliked", "regretted", "endured", "resented", "loathed"],
                 ["bored", "annoyed", "disappointed", "angry", "tired", "miserable"]),
}
INTENSIFIERS = ["", "really ", "very ", "truly ", "so ", "quite ", "utterly ", "simply "]
TEMPLATES = [
    "The {thing} was {int}{adj}.",
    "What a {adj} {thing}.",
    "I {verb} the {thing}, it was {int}{adj}.",
    "The {thing} is {adj} and {adj2}.",
    "A {int}{adj} {thing} that left me {felt}.",
    "I left the theater {felt}: the {thing} was {adj}.",
    "{Adj}, {adj2} and {int}{adj3}.",
    "Honestly, the {thing} felt {adj} from start to finish.",
    "The {thing} and the {thing2} were both {adj}.",
    "I {verb} every minute of this {adj} {thing}.",
    "It is a {adj} {thing} with a {adj2} {thing2}.",
    "This {thing} made me feel {felt}.",
]


def split_of(text: str) -> str:
    """'test' for a fifth of all reviews, 'train' for the rest: a function of the text alone."""
    return "test" if int(hashlib.sha256(text.encode()).hexdigest(), 16) % 5 == 0 else "train"


def review(rng: random.Random) -> tuple[str, str]:
    label = rng.choice(LABELS)
    adjs, verbs, felt = WORDS[label]
    a, a2, a3 = rng.sample(adjs, 3)
    t, t2 = rng.sample(THINGS, 2)
    text = rng.choice(TEMPLATES).format(thing=t, thing2=t2, adj=a, adj2=a2, adj3=a3, Adj=a.capitalize(),
                                        int=rng.choice(INTENSIFIERS), verb=rng.choice(verbs), felt=rng.choice(felt))
    return text, label


def generated(split: str, n: int, seed: int = 0) -> list[dict]:
    """n distinct reviews of `split` (train | test) with their labels, the same for the same seed."""
    rng, out, seen = random.Random(seed), [], set()
    for _ in range(50 * n + 1000):
        if len(out) >= n:
            break
        text, label = review(rng)
        if text not in seen and split_of(text) == split:
            seen.add(text)
            out.append({"sentence": text, "label": label})
    if len(out) < n:
        raise ConfigError(f"sst2 stand-in: could only generate {len(out)} distinct {split} reviews, {n} asked")
    return out


def label_of(response: str) -> str | None:
    """The first label word in a response (any case), or None."""
    m = LABEL.search(response or "")
    return m.group(1).lower() if m else None


class SST2(Task):
    source = "generated"      # generated | hub
    hub_name = "stanfordnlp/sst2"
    hub_config = None
    hub_test_split = "validation"  # SST-2's test labels are hidden (-1)
    n_train_generated = 2000
    n_test_generated = 400
    seed = 0
    prompt_template = "Is the sentiment of this review positive or negative?\n\n{sentence}"

    def rows(self, split: str) -> list[dict]:
        if self.source == "generated":
            return generated(split, self.n_train_generated if split == "train" else self.n_test_generated, self.seed)
        if self.source != "hub":
            raise ConfigError(f"task.source must be 'generated' or 'hub', got {self.source!r}")
        from ..hub import load_dataset  # hub access failures as one line

        ds = load_dataset(self.hub_name, self.hub_config, split="train" if split == "train" else self.hub_test_split)
        return [{"sentence": r["sentence"].strip(), "label": LABELS[int(r["label"])]} for r in ds if r["label"] in (0, 1)]

    def examples(self, cfg, split: str) -> list[dict]:
        return [{"key": r["sentence"], "sentence": r["sentence"], "label": r["label"],
                 "prompt": self.prompt_template.format(sentence=r["sentence"]), "completion": r["label"]}
                for r in self.rows(split)]

    def hub_needs(self, cfg):
        return [(self.hub_name, "sst2 data (task.source=hub)", {})] if self.source == "hub" else []

    def grade(self, items: list[dict], responses: list[str]) -> list[dict]:
        return [{"split": it.get("split"), "sentence": it["sentence"], "reference": it["label"], "response": resp,
                 "extracted": label_of(resp), "correct": label_of(resp) == it["label"]}
                for it, resp in zip(items, responses)]

    def lookup(self, cfg, row: dict, line: int) -> dict:
        ref = row.get("label", row.get("reference"))
        if ref is not None:  # the row carries its label: positive / negative, or GLUE's 1 / 0
            ref = LABELS[int(ref)] if str(ref) in ("0", "1") else str(ref).strip().lower()
            if ref not in LABELS:
                raise ConfigError(f"line {line}: label must be positive / negative (or 1 / 0), got {ref!r}")
            return {"sentence": str(row.get("sentence") or row.get("prompt") or ""), "label": ref}
        if not hasattr(self, "_index"):
            self._index = keyed(self.examples(cfg, "test") + self.examples(cfg, "train"), "sentence", "prompt")
        return find(self._index, row, ("sentence", "prompt", "question"), f"{self.name} (nor does the row carry a "
                    "'label')", line)
