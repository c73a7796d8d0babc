"""The judge interface: every judge maps (prompts, responses) to one Verdict per pair."""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Protocol, Sequence


@dataclass
class Verdict:
    safe: bool
    categories: list[str] = field(default_factory=list)  # judge's unsafe category codes
    p_unsafe: float | None = None  # P(unsafe) where the judge has it
    parsed: bool = True  # False: the judge's output could not be parsed (never counted as safe)
    raw: str | None = None  # the judge's raw output, for audit

    def to_dict(self) -> dict:
        return asdict(self)


class Judge(Protocol):
    name: str  # identity used by the verdict cache

    def __call__(self, prompts: Sequence[str], responses: Sequence[str]) -> list[Verdict]: ...


def paired(prompts: Sequence[str], responses: Sequence[str]) -> tuple[list[str], list[str]]:
    """The judge inputs as lists, checked to pair up one to one."""
    prompts, responses = list(prompts), list(responses)
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    return prompts, responses
