"""What every eviction policy of the PyTorch reference answers (docs/architecture.md, "Cache and
policy semantics"); a family (full.py, local.py, sink.py, h2o.py) is a frozen dataclass over it.

Per layer and step the reference loop hands a policy the candidates of each head: `positions`
[heads, n] (ascending along n; the cached entries, then the token just fed) and `scores`
[heads, n]. The rule shared by every family here: after the step, a head holding more than
`budget` entries evicts down to exactly `budget`; protected entries (the last `recent`
positions, pos > t - recent, and the first `sinks` positions, pos < sinks) stay; among the rest
the lowest ranking score goes first, then the oldest position.
"""

from __future__ import annotations

import math
from typing import ClassVar, Optional

import torch


class Policy:
    """Base of the policy families. Subclasses are frozen dataclasses holding their numbers
    (sinks, heavy, recent, scope where they have them; the defaults below otherwise)."""

    FORMS: ClassVar[tuple[str, ...]]  # spec forms for help texts, e.g. ("local:R",)
    KEYWORDS: ClassVar[tuple[str, ...]]  # spec keywords, e.g. ("h2o", "h2o-layer")
    ARITY: ClassVar[int]  # numbers after the keyword: 0, 1 (A) or 2 (A+B)
    kind: ClassVar[str]  # family name
    uses_scores: ClassVar[bool] = False  # whether victims depend on the attention scores

    sinks: int = 0
    heavy: int = 0
    recent: int = 0
    scope: str = "head"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int]) -> "Policy":
        """The policy for `keyword:numbers` (len(numbers) == ARITY, checked by the parser)."""
        raise NotImplementedError

    @property
    def budget(self) -> Optional[int]:
        """Most entries kept per head between steps; None for an unbounded cache."""
        return self.sinks + self.heavy + self.recent

    @property
    def spec(self) -> str:
        """Canonical spec string (what results and traces record)."""
        raise NotImplementedError

    # ---- scoring and choice

    def update_scores(self, cached: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
        """Candidate scores [heads, n] from the cached entries' scores [heads, n-1] and this
        step's attention row probs [heads, n]: accumulated attention (H2O's score), the new
        token starting at what its own query gives it. Every family here keeps this score
        (the engine's contract); a family ranking by something else overrides it."""
        return torch.cat((cached + probs[:, :-1], probs[:, -1:]), dim=1)

    def ranking(self, scores: torch.Tensor) -> torch.Tensor:
        """Scores the policy ranks by, [heads, n]: per head, summed over heads (layer scope), or 0
        for policies that ignore scores (their victims are fixed by position alone)."""
        if not self.uses_scores:
            return torch.zeros_like(scores)
        if self.scope == "layer":
            return scores.sum(dim=0, keepdim=True).expand_as(scores)
        return scores

    def protected(self, positions: torch.Tensor, t: int) -> torch.Tensor:
        """[heads, n] bool: the recent window (pos > t - recent) and the sinks (pos < sinks)."""
        return (positions > t - self.recent) | (positions < self.sinks)

    def choose_victims(self, t: int, positions: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """Candidate indices to evict per head, [heads, k]: lowest ranking score first, then oldest."""
        heads, n = positions.shape
        budget = self.budget
        if budget is None or n <= budget:
            return torch.empty(heads, 0, dtype=torch.int64, device=positions.device)
        k = n - budget
        rank = self.ranking(scores).masked_fill(self.protected(positions, t), math.inf)
        # Positions ascend along n, so a stable sort by score breaks ties by the oldest position.
        order = torch.sort(rank, dim=1, stable=True).indices  # [heads, n]
        victims = order[:, :k]
        if torch.isinf(rank.gather(1, victims)).any():
            raise RuntimeError(f"policy {self.spec}: fewer than {k} evictable candidates at step {t}")
        return victims
