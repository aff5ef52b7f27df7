"""`knorm:B` (key norm, Devoto et al. 2024, "A Simple and Effective L2 Norm-Based Strategy for
KV Cache Compression"; kvpress's KnormPress): per head keep the B tokens whose (rotated) key has
the smallest L2 norm; the score is minus the squared norm rounded to 12 significant bits
(`rounded_square_norm`, as the engine's src/policy/knorm.rs: the same token at two positions has
the same norm in exact arithmetic, and the rounding keeps float noise in the rotation from
breaking such ties differently here and in the engine), computed when the token arrives. Reads
no attention; nothing is protected.

`@skip=N` (the authors' setting, N = 2): layers 0..N-1 are not compressed at all; `for_layer`
gives them the full cache, the other layers the policy (and its schedule's budget)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from .base import Policy
from .full import Full

NORM_BITS = 12  # significant bits the squared norm keeps


def rounded_square_norm(key: torch.Tensor) -> torch.Tensor:
    """Squared L2 norm over the last axis in float32, rounded to NORM_BITS significant bits (half
    away from zero), [...]."""
    sq = (key.to(torch.float32) ** 2).sum(dim=-1)
    drop = 24 - NORM_BITS
    bits = (sq.view(torch.int32) + (1 << (drop - 1))) & ~((1 << drop) - 1)
    return bits.view(torch.float32)


@dataclass(frozen=True)
class Knorm(Policy):
    FORMS = ("knorm:B",)
    KEYWORDS = ("knorm",)
    ARITY = 1
    OPTIONS = ("skip",)
    kind = "knorm"
    uses_scores = True

    keep: int = 0
    skip: int = 0  # first layers kept whole
    schedule: str = "uniform"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Knorm":
        return cls(keep=numbers[0], skip=options.get("skip", 0))

    @property
    def budget(self) -> Optional[int]:
        return self.keep

    @property
    def core_spec(self) -> str:
        return f"knorm:{self.keep}" + (f"@skip={self.skip}" if self.skip else "")

    @property
    def same_in_every_layer(self) -> bool:
        return self.schedule == "uniform" and self.skip == 0

    def for_layer(self, layer: int, layers: int) -> Policy:
        if layer < self.skip:
            return Full()
        return super().for_layer(layer, layers)

    def split(self) -> tuple[int, int]:
        return 0, self.keep

    def with_free(self, free: int) -> "Knorm":
        return dataclasses.replace(self, keep=free)

    def update_scores(self, cached, probs, *, key, position, layer, extra):
        new = -rounded_square_norm(key)  # [heads]
        return torch.cat((cached, new[:, None]), dim=1), extra
