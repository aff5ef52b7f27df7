"""`local:R`: a sliding window, the last R positions (budget R); scores are ignored."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Policy


@dataclass(frozen=True)
class Local(Policy):
    FORMS = ("local:R",)
    KEYWORDS = ("local",)
    ARITY = 1
    kind = "local"

    recent: int = 0

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int]) -> "Local":
        return cls(recent=numbers[0])

    @property
    def spec(self) -> str:
        return f"local:{self.recent}"
