"""What every eviction policy of the PyTorch reference answers (docs/architecture.md, "Cache and
policy semantics"); a family (one module each) is a frozen dataclass over it.

Per layer and step the reference loop hands a policy the candidates of each head: `positions`
[heads, n] (ascending along n; the cached entries, then the token just fed) and `scores`
[heads, n], the policy's own per-token score (`update_scores`: accumulated attention for h2o,
this step's attention for tova, minus the count of below-average steps for scissor, minus the
squared key norm for knorm, a random key for random). The rule shared by every family here:
after the step, a head holding more than `budget` entries evicts down to exactly `budget`;
protected entries (the last `recent` positions, pos > t - recent, and the first `sinks`
positions, pos < sinks) stay; among the rest the lowest ranking score goes first, then the
oldest position. A budget schedule (`@pyramid`, schedule.py) gives each layer its own numbers
(`for_layer`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar, Optional

import torch

from .schedule import free_parts


class Policy:
    """Base of the policy families. Subclasses are frozen dataclasses holding their numbers
    (sinks, heavy, recent, scope, schedule where they have them; the defaults below otherwise)."""

    FORMS: ClassVar[tuple[str, ...]]  # spec forms for help texts, e.g. ("local:R",)
    KEYWORDS: ClassVar[tuple[str, ...]]  # spec keywords, e.g. ("h2o", "h2o-layer")
    ARITY: ClassVar[int]  # numbers after the keyword: 0, 1 (A) or 2 (A+B)
    OPTIONS: ClassVar[tuple[str, ...]] = ()  # `@key=N` options the family takes, e.g. ("rng",)
    kind: ClassVar[str]  # family name
    uses_scores: ClassVar[bool] = False  # whether victims depend on the scores

    sinks: int = 0
    heavy: int = 0
    recent: int = 0
    scope: str = "head"
    schedule: str = "uniform"

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Policy":
        """The policy for `keyword:numbers` (len(numbers) == ARITY, checked by the parser) with
        its `@key=N` options (keys from OPTIONS; absent ones take their defaults)."""
        raise NotImplementedError

    @property
    def budget(self) -> Optional[int]:
        """Most entries kept per head between steps (per layer on average under a schedule);
        None for an unbounded cache."""
        return self.sinks + self.heavy + self.recent

    @property
    def core_spec(self) -> str:
        """The canonical spec without the schedule, e.g. `random:256@rng=7`."""
        raise NotImplementedError

    @property
    def spec(self) -> str:
        """Canonical spec string (what results and traces record)."""
        return self.core_spec + ("@pyramid" if self.schedule == "pyramid" else "")

    def option_error(self) -> Optional[str]:
        """What is wrong with the family's numbers beyond a zero budget (e.g. scissor's recent
        window above its budget), as the start of an error message; None if nothing."""
        return None

    # ---- per-layer budgets

    def split(self) -> tuple[int, int]:
        """(fixed, free): the part of the budget a schedule leaves alone (what the policy
        protects) and the part it spreads over the layers."""
        return self.sinks + self.recent, self.heavy

    def with_free(self, free: int) -> "Policy":
        """The policy with its free part set to `free`."""
        return dataclasses.replace(self, heavy=free)

    @property
    def same_in_every_layer(self) -> bool:
        """Whether every layer runs this policy (no schedule, no layer left whole); a graph with
        one attention mask for all layers runs only such policies."""
        return self.schedule == "uniform"

    def for_layer(self, layer: int, layers: int) -> "Policy":
        """Layer `layer`'s policy (of `layers`): itself under the uniform schedule, else the
        family with that layer's free part (schedule.py)."""
        if self.schedule == "uniform" or self.budget is None:
            return self
        fixed, free = self.split()
        part = free_parts(self.schedule, free, layers, 1 if fixed == 0 else 0)[layer]
        return dataclasses.replace(self.with_free(part), schedule="uniform")

    # ---- scoring and choice

    def update_scores(self, cached: torch.Tensor, probs: torch.Tensor, *, key: torch.Tensor, position: int,
                      layer: int, extra: Optional[torch.Tensor]) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
        """Candidate scores [heads, n] from the cached entries' scores [heads, n-1], this step's
        attention row probs [heads, n], the new token's rotated key [heads, head_dim] at
        `position` in `layer`, and the policy's extra state per cached entry [heads, n-1, ...]
        (None if it keeps none). Returns the scores and the extra state [heads, n, ...] of the
        candidates. Here: accumulated attention (H2O's score), the new token starting at what
        its own query gives it; families ranking by something else override it."""
        return torch.cat((cached + probs[:, :-1], probs[:, -1:]), dim=1), extra

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
