"""`full`: the whole cache, nothing evicted (the baseline every bounded policy is measured against)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from .base import Policy


@dataclass(frozen=True)
class Full(Policy):
    FORMS = ("full",)
    KEYWORDS = ("full",)
    ARITY = 0
    kind = "full"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Full":
        return cls()

    @property
    def budget(self) -> Optional[int]:
        return None

    @property
    def core_spec(self) -> str:
        return "full"
