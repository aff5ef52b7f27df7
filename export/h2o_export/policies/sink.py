"""`sink:S+R` (StreamingLLM, Xiao et al. 2023): the first S positions (attention sinks) and the
last R (budget S+R); scores are ignored. Under a schedule the sinks stay and the window varies."""

from __future__ import annotations

import dataclasses
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
    schedule: str = "uniform"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Sink":
        return cls(sinks=numbers[0], recent=numbers[1])

    @property
    def core_spec(self) -> str:
        return f"sink:{self.sinks}+{self.recent}"

    def split(self) -> tuple[int, int]:
        return self.sinks, self.recent

    def with_free(self, free: int) -> "Sink":
        return dataclasses.replace(self, recent=free)
