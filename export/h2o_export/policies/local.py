"""`local:R`: a sliding window, the last R positions (budget R); scores are ignored. Under a
schedule the window itself is what varies by layer."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .base import Policy


@dataclass(frozen=True)
class Local(Policy):
    FORMS = ("local:R",)
    KEYWORDS = ("local",)
    ARITY = 1
    kind = "local"

    recent: int = 0
    schedule: str = "uniform"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Local":
        return cls(recent=numbers[0])

    @property
    def core_spec(self) -> str:
        return f"local:{self.recent}"

    def split(self) -> tuple[int, int]:
        return 0, self.recent

    def with_free(self, free: int) -> "Local":
        return dataclasses.replace(self, recent=free)
