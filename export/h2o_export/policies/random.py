"""`random:B` (`@rng=N`): random eviction, the H2O paper's baseline (Zhang et al. 2023). Every
token gets a random key in [0, 1) when it arrives, from (rng, layer, head, position) by the
engine's hash (src/policy/random.rs, the same numbers); per head the B largest keys stay, a
uniform random sample of the tokens so far. Nothing is protected. `rng` is the generator number
("seed" names the PyTorch project elsewhere in this project)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from .base import Policy

_M64 = (1 << 64) - 1


def _mix(z: int) -> int:
    """splitmix64's finaliser on 64 bits."""
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _M64
    return z ^ (z >> 31)


def random_key(rng: int, layer: int, head: int, position: int) -> float:
    """The random key of a token: 24 bits of mix(mix(mix(mix(rng + phi) ^ layer) ^ head) ^ position)
    as k / 2^24 (exact in float32)."""
    h = _mix((rng + 0x9E3779B97F4A7C15) & _M64)
    h = _mix(h ^ layer)
    h = _mix(h ^ head)
    h = _mix(h ^ (position & _M64))
    return (h >> 40) / float(1 << 24)


@dataclass(frozen=True)
class Random(Policy):
    FORMS = ("random:B",)
    KEYWORDS = ("random",)
    ARITY = 1
    OPTIONS = ("rng",)
    kind = "random"
    uses_scores = True

    keep: int = 0
    rng: int = 0
    schedule: str = "uniform"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Random":
        return cls(keep=numbers[0], rng=options.get("rng", 0))

    @property
    def budget(self) -> Optional[int]:
        return self.keep

    @property
    def core_spec(self) -> str:
        return f"random:{self.keep}" + (f"@rng={self.rng}" if self.rng else "")

    def split(self) -> tuple[int, int]:
        return 0, self.keep

    def with_free(self, free: int) -> "Random":
        return dataclasses.replace(self, keep=free)

    def update_scores(self, cached, probs, *, key, position, layer, extra):
        heads = probs.shape[0]
        new = torch.tensor([random_key(self.rng, layer, h, position) for h in range(heads)],
                           dtype=torch.float32, device=probs.device)
        return torch.cat((cached, new[:, None]), dim=1), extra
