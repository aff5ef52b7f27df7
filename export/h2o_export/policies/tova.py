"""`tova:B` and `tova-head:B` (TOVA, Oren et al. 2024, "Transformers are Multi-State RNNs"): over
budget, drop the token the current query attends to least, the attention averaged over the
layer's heads (`tova`, every head keeps the same tokens; ranked by the sum over heads, the same
order) or per head (`tova-head`). The score is this step's attention only; nothing is
protected."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from .base import Policy


@dataclass(frozen=True)
class Tova(Policy):
    FORMS = ("tova:B", "tova-head:B")
    KEYWORDS = ("tova", "tova-head")
    ARITY = 1
    kind = "tova"
    uses_scores = True

    keep: int = 0
    scope: str = "layer"
    schedule: str = "uniform"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Tova":
        return cls(keep=numbers[0], scope="layer" if keyword == "tova" else "head")

    @property
    def budget(self) -> Optional[int]:
        return self.keep

    @property
    def core_spec(self) -> str:
        return f"{'tova' if self.scope == 'layer' else 'tova-head'}:{self.keep}"

    def split(self) -> tuple[int, int]:
        return 0, self.keep

    def with_free(self, free: int) -> "Tova":
        return dataclasses.replace(self, keep=free)

    def update_scores(self, cached, probs, *, key, position, layer, extra):
        return probs.to(torch.float32).clone(), extra
