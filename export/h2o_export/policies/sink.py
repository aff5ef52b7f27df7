"""`sink:S+R` (StreamingLLM, Xiao et al. 2023): the first S positions (attention sinks) and the
last R (budget S+R); scores are ignored."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Policy


@dataclass(frozen=True)
class Sink(Policy):
    FORMS = ("sink:S+R",)
    KEYWORDS = ("sink",)
    ARITY = 2
    kind = "sink"

    sinks: int = 0
    recent: int = 0

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int]) -> "Sink":
        return cls(sinks=numbers[0], recent=numbers[1])

    @property
    def spec(self) -> str:
        return f"sink:{self.sinks}+{self.recent}"
