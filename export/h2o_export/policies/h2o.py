"""`h2o:H+R` and `h2o-layer:H+R` (Heavy-Hitter Oracle, Zhang et al. 2023): the last R positions
plus the H heavy hitters, the entries with the largest accumulated attention (budget H+R).
`h2o` ranks each head by its own scores; `h2o-layer` by the scores summed over the layer's
heads, so every head of a layer keeps the same positions. Under a schedule the window stays and
the heavy part varies by layer."""

from __future__ import annotations

from dataclasses import dataclass

from .base import Policy


@dataclass(frozen=True)
class H2O(Policy):
    FORMS = ("h2o:H+R", "h2o-layer:H+R")
    KEYWORDS = ("h2o", "h2o-layer")
    ARITY = 2
    kind = "h2o"
    uses_scores = True

    heavy: int = 0
    recent: int = 0
    scope: str = "head"
    schedule: str = "uniform"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "H2O":
        return cls(heavy=numbers[0], recent=numbers[1], scope="head" if keyword == "h2o" else "layer")

    @property
    def core_spec(self) -> str:
        name = "h2o" if self.scope == "head" else "h2o-layer"
        return f"{name}:{self.heavy}+{self.recent}"
