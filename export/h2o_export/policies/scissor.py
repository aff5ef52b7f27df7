"""`scissor:B` (`@window=W`, `@recent=R`; Scissorhands, Liu et al. 2023, "Scissorhands:
Exploiting the Persistence of Importance Hypothesis for LLM KV Cache Compression at Test Time"):
count for every cached token in how many of the last W steps its attention fell below the
step's mean share (1/n for one query over n tokens), protect the last R positions, evict the
most often unimportant (score = minus the count), then the oldest. Defaults W = 400, R = 10
(the engine's src/policy/scissor.rs). Under a schedule the window R stays and the rest varies.

The history is kept here as a shift register [heads, n, W] of booleans per entry (the engine
keeps a ring of bit rows and entry steps instead): a new step drops the oldest column and
appends this step's; a new token starts with zeros.

The authors' variants, opt-in: `@sinks=S` protects the first S positions too (S + R within B);
`@normalized` ranks by the share of a token's seen steps in which it was unimportant: a second
register of "seen" bits beside the first ([heads, n, W, 2]: below, seen) counts the steps in the
window since the token arrived, and the score is minus count / seen (float32)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Optional

import torch

from .base import Policy

DEFAULT_WINDOW = 400
DEFAULT_RECENT = 10


@dataclass(frozen=True)
class Scissor(Policy):
    FORMS = ("scissor:B",)
    KEYWORDS = ("scissor",)
    ARITY = 1
    OPTIONS = ("window", "recent", "sinks", "normalized")
    kind = "scissor"
    uses_scores = True

    keep: int = 0
    window: int = DEFAULT_WINDOW
    recent: int = DEFAULT_RECENT
    sinks: int = 0
    normalized: bool = False
    schedule: str = "uniform"
    # query heads summed into each attention row (grouped-query attention: G per KV head); the
    # mean share a row is compared with is group / n (one query over n tokens, G of them)
    group: int = 1

    @classmethod
    def from_numbers(cls, keyword: str, numbers: list[int], options: dict[str, int]) -> "Scissor":
        return cls(keep=numbers[0], window=options.get("window", DEFAULT_WINDOW),
                   recent=options.get("recent", DEFAULT_RECENT), sinks=options.get("sinks", 0),
                   normalized=bool(options.get("normalized", 0)))

    @property
    def budget(self) -> Optional[int]:
        return self.keep

    @property
    def core_spec(self) -> str:
        s = f"scissor:{self.keep}"
        if self.window != DEFAULT_WINDOW:
            s += f"@window={self.window}"
        if self.recent != DEFAULT_RECENT:
            s += f"@recent={self.recent}"
        if self.sinks:
            s += f"@sinks={self.sinks}"
        if self.normalized:
            s += "@normalized"
        return s

    def option_error(self) -> Optional[str]:
        if self.window == 0:
            return "scissor's history window is 0 steps; "
        if self.recent > self.keep > 0:
            return (f"scissor's recent window {self.recent} is larger than its budget {self.keep} "
                    f"(lower it with @recent=R); ")
        if self.recent + self.sinks > self.keep > 0:
            return (f"scissor's recent window and sinks ({self.recent + self.sinks} together) are more than "
                    f"its budget {self.keep}; ")
        return None

    def split(self) -> tuple[int, int]:
        fixed = self.recent + self.sinks
        return fixed, self.keep - fixed

    def with_free(self, free: int) -> "Scissor":
        return dataclasses.replace(self, keep=self.recent + self.sinks + free)

    def update_scores(self, cached, probs, *, key, position, layer, extra):
        if self.normalized:
            return self._normalized_scores(probs, extra)
        heads, n = probs.shape
        if extra is None:
            extra = torch.zeros(heads, 0, self.window, dtype=torch.bool, device=probs.device)
        share = torch.tensor(self.group / n, dtype=torch.float32, device=probs.device)  # G queries over n tokens
        below = probs < share  # [heads, n]
        hist = torch.cat((extra, torch.zeros(heads, 1, self.window, dtype=torch.bool, device=probs.device)), dim=1)
        hist = torch.cat((hist[:, :, 1:], below[:, :, None]), dim=2)  # [heads, n, window]
        return -hist.sum(dim=2).to(torch.float32), hist

    def _normalized_scores(self, probs, extra):
        """Minus (steps below the mean) / (steps seen), both over the window; extra [heads, n, W, 2]."""
        heads, n = probs.shape
        dev = probs.device
        if extra is None:
            extra = torch.zeros(heads, 0, self.window, 2, dtype=torch.bool, device=dev)
        share = torch.tensor(self.group / n, dtype=torch.float32, device=dev)
        now = torch.stack((probs < share, torch.ones_like(probs, dtype=torch.bool)), dim=-1)  # [heads, n, 2]
        hist = torch.cat((extra, torch.zeros(heads, 1, self.window, 2, dtype=torch.bool, device=dev)), dim=1)
        hist = torch.cat((hist[:, :, 1:], now[:, :, None]), dim=2)  # [heads, n, window, 2]
        below = hist[..., 0].sum(dim=2).to(torch.float32)
        seen = hist[..., 1].sum(dim=2).to(torch.float32)
        return -(below / seen), hist
