"""Eviction traces, format "h2o-evict-trace/1" (shared with the engine's `h2o ppl --trace`):
reading and checking them, the kept sets they imply, and lockstep replay (the reference evicts
what a trace says and checks each victim against the policy by its own scores).

A trace is {"format", "policy", "tokens", "layers", "heads", "steps"}; each step is
{"pos": t, "evicted": [layer][head] -> positions evicted after feeding token t}. `tokens` is
what was fed, position p holding tokens[p]; for a model that declares a BOS the trace also has
"prepend_bos_token_id": id, and tokens[0] is that BOS (fed, not scored), the text after it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Optional

import torch

from .config import PREPEND_BOS_KEY
from .errors import ReferenceError
from .policies import Policy, parse_policy

TRACE_FORMAT = "h2o-evict-trace/1"
DEFAULT_REL_TOL = 1e-5


def check_header(trace: Any) -> None:
    if not isinstance(trace, dict) or trace.get("format") != TRACE_FORMAT:
        got = trace.get("format") if isinstance(trace, dict) else type(trace).__name__
        raise ReferenceError(f"not an eviction trace: format is {got!r}, expected {TRACE_FORMAT!r}")
    for key in ("policy", "tokens", "layers", "heads", "steps"):
        if key not in trace:
            raise ReferenceError(f"eviction trace lacks the field {key!r} (format {TRACE_FORMAT})")
    toks = trace["tokens"]
    if not isinstance(toks, list) or not all(isinstance(x, int) and not isinstance(x, bool) for x in toks):
        raise ReferenceError("eviction trace: `tokens` must be a list of integer token ids")
    for key in ("layers", "heads"):
        if not isinstance(trace[key], int) or trace[key] < 1:
            raise ReferenceError(f"eviction trace: `{key}` must be a positive integer, got {trace[key]!r}")
    if not isinstance(trace["policy"], str):
        raise ReferenceError("eviction trace: `policy` must be a spec string such as h2o:192+64")
    if not isinstance(trace["steps"], list):
        raise ReferenceError("eviction trace: `steps` must be a list of {pos, evicted}")


def text_tokens(trace: dict) -> list[int]:
    """The text of a checked trace: its tokens less the declared BOS in front, if any."""
    toks = [int(x) for x in trace["tokens"]]
    bos = trace.get(PREPEND_BOS_KEY)
    if bos is None:
        return toks
    if not toks or toks[0] != bos:
        raise ReferenceError(f"eviction trace: {PREPEND_BOS_KEY} is {bos!r} but tokens do not start with it")
    return toks[1:]


def steps(trace: dict) -> list[tuple[int, list]]:
    """The trace's steps as (pos, evicted) sorted by pos, validated for shape and duplicates."""
    layers, heads = int(trace["layers"]), int(trace["heads"])
    seen: set[int] = set()
    out = []
    for i, step in enumerate(trace["steps"]):
        if not isinstance(step, dict) or "pos" not in step or "evicted" not in step:
            raise ReferenceError(f"eviction trace: steps[{i}] must be an object with `pos` and `evicted`")
        pos = step["pos"]
        if not isinstance(pos, int) or pos < 0:
            raise ReferenceError(f"eviction trace: steps[{i}].pos = {pos!r} is not a non-negative integer")
        if pos in seen:
            raise ReferenceError(f"eviction trace: step pos {pos} appears twice")
        seen.add(pos)
        ev = step["evicted"]
        if not isinstance(ev, list) or len(ev) != layers or any(
            not isinstance(row, list) or len(row) != heads for row in ev
        ):
            raise ReferenceError(
                f"eviction trace: step pos {pos}: `evicted` must be [layers={layers}][heads={heads}] lists of positions"
            )
        for layer_row in ev:
            for victims in layer_row:
                if not isinstance(victims, list) or not all(
                    isinstance(p, int) and not isinstance(p, bool) for p in victims
                ):
                    raise ReferenceError(f"eviction trace: step pos {pos}: victims must be lists of integer positions")
        out.append((pos, ev))
    out.sort(key=lambda s: s[0])
    return out


def iter_kept_sets(trace: dict) -> Iterator[tuple[int, list[list[list[int]]]]]:
    """Yield (pos, kept) after each recorded step; kept[layer][head] = sorted positions.

    The kept set after step t is positions 0..t minus everything evicted so far. Raises
    ReferenceError if a step evicts a position that is not held at that point.
    """
    check_header(trace)
    layers, heads = int(trace["layers"]), int(trace["heads"])
    held = [[set() for _ in range(heads)] for _ in range(layers)]
    next_pos = 0
    for pos, ev in steps(trace):
        new = range(next_pos, pos + 1)
        next_pos = max(next_pos, pos + 1)
        for layer in range(layers):
            for head in range(heads):
                s = held[layer][head]
                s.update(new)
                for p in ev[layer][head]:
                    if p not in s:
                        raise ReferenceError(
                            f"eviction trace: step {pos} layer {layer} head {head} evicts position {p}, "
                            f"which is not held then"
                        )
                    s.remove(p)
        yield pos, [[sorted(held[layer][head]) for head in range(heads)] for layer in range(layers)]


def kept_sets(trace: dict, pos: Optional[int] = None) -> list[list[list[int]]]:
    """kept[layer][head] after step `pos` (default: the last recorded step)."""
    kept = None
    for p, k in iter_kept_sets(trace):
        if pos is not None and p > pos:
            break
        kept = k
    if kept is None:
        raise ReferenceError(f"eviction trace has no step at or before pos {pos}")
    return kept


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------

_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def victims_from_trace(
    trace_ev: list, t: int, layer: int, positions: torch.Tensor
) -> tuple[torch.Tensor, list[list[int]]]:
    """Map the trace's victim positions at (t, layer) to candidate indices [heads, k]."""
    heads = positions.shape[0]
    per_head = [list(trace_ev[layer][h]) for h in range(heads)]
    counts = {len(v) for v in per_head}
    if len(counts) != 1:
        raise ReferenceError(
            f"replay: step {t} layer {layer}: heads evict different counts {[len(v) for v in per_head]}; "
            "every head must hold the same number of entries"
        )
    k = counts.pop()
    if k == 0:
        return torch.empty(heads, 0, dtype=torch.int64, device=positions.device), per_head
    for h, v in enumerate(per_head):
        if len(set(v)) != len(v):
            raise ReferenceError(f"replay: step {t} layer {layer} head {h}: a position is evicted twice: {v}")
    want = torch.tensor(per_head, dtype=torch.int64, device=positions.device)  # [heads, k]
    match = positions[:, :, None] == want[:, None, :]  # [heads, n, k]
    found = match.any(dim=1)  # [heads, k]
    if not bool(found.all()):
        h, j = (~found).nonzero()[0].tolist()
        raise ReferenceError(
            f"replay: step {t} layer {layer} head {h}: victim position {per_head[h][j]} is not in the cache "
            "(the trace does not match this model/policy/text)"
        )
    return match.to(torch.int8).argmax(dim=1), per_head  # [heads, k]


def check_victims(
    policy: Policy,
    t: int,
    layer: int,
    positions: torch.Tensor,
    scores: torch.Tensor,
    victims: torch.Tensor,
    rel_tol: float,
) -> list[dict]:
    """Violations of the policy by replayed victims [heads, k] at (t, layer)."""
    out: list[dict] = []
    heads, n = positions.shape
    k = victims.shape[1]
    budget = policy.budget
    left = n - k
    if budget is None:
        if k:
            out.append({"step": t, "layer": layer, "head": None, "kind": "full-evicts",
                        "detail": f"the full cache evicted {k} entries per head"})
        return out
    if left > budget:
        out.append({"step": t, "layer": layer, "head": None, "kind": "over-budget",
                    "detail": f"{left} entries kept per head, budget {budget}"})
    if left < min(budget, n):
        out.append({"step": t, "layer": layer, "head": None, "kind": "over-eviction",
                    "detail": f"{left} entries kept per head, {min(budget, n)} required"})
    if k == 0:
        return out
    prot = policy.protected(positions, t)
    vict_prot = prot.gather(1, victims)  # [heads, k]
    for h, j in vict_prot.nonzero().tolist():
        p = int(positions[h, victims[h, j]])
        what = "recent window" if p > t - policy.recent else "sinks"
        out.append({"step": t, "layer": layer, "head": h, "kind": "protected",
                    "detail": f"victim position {p} is in the {what}"})
    if policy.scope == "layer":
        vpos = positions.gather(1, victims).sort(dim=1).values
        for h in range(1, heads):
            if not torch.equal(vpos[h], vpos[0]):
                out.append({"step": t, "layer": layer, "head": h, "kind": "layer-scope",
                            "detail": f"victims {vpos[h].tolist()} differ from head 0's {vpos[0].tolist()}"})
    if policy.uses_scores:
        rank = policy.ranking(scores).double()
        evictable = ~prot
        is_victim = torch.zeros(heads, n, dtype=torch.bool, device=positions.device)
        is_victim.scatter_(1, victims, True)
        kept_ev = rank.masked_fill(~evictable | is_victim, math.inf)
        lowest_kept, lowest_idx = kept_ev.min(dim=1)  # [heads]
        vs = rank.gather(1, victims)  # [heads, k]
        limit = lowest_kept + rel_tol * lowest_kept.abs()
        bad = (vs > limit[:, None]) & torch.isfinite(lowest_kept)[:, None] & ~vict_prot
        for h, j in bad.nonzero().tolist():
            out.append({
                "step": t, "layer": layer, "head": h, "kind": "not-lowest",
                "detail": (f"victim position {int(positions[h, victims[h, j]])} score {float(vs[h, j]):.9g} > "
                           f"kept position {int(positions[h, lowest_idx[h]])} score {float(lowest_kept[h]):.9g} "
                           f"(rel tol {rel_tol:g})"),
            })
    return out



def read_trace(path: str | Path) -> dict:
    """A trace from a JSON file: a trace itself or a whole result document holding one
    under "trace" (what `h2o ppl --json` and the reference write)."""
    try:
        trace = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ReferenceError(f"{path}: cannot read the trace JSON ({e})") from e
    if isinstance(trace, dict) and "trace" in trace and "format" not in trace:
        trace = trace["trace"]
    check_header(trace)
    return trace


@dataclass
class Replay:
    """A trace prepared for lockstep replay of one run: its victims by step, handed out per
    (step, layer) and checked against the policy by the run's own scores."""

    steps: dict[int, list]
    heads: int
    layers: int
    rel_tol: float
    ignored: int = 0
    checked: int = 0
    violations: list[dict] = field(default_factory=list)

    @classmethod
    def prepare(cls, trace: dict, layers: int, heads: int, ids: list[int], policy: Policy,
                rel_tol: float = DEFAULT_REL_TOL, bos: Optional[int] = None) -> "Replay":
        """Refuse a trace for another geometry, text, BOS or policy; index its steps by position.
        `ids` is what the run feeds (the BOS `bos`, if any, first). The trace's step for the
        last token is ignored (that token predicts nothing and is not fed)."""
        check_header(trace)
        if trace.get(PREPEND_BOS_KEY) != bos:
            raise ReferenceError(
                f"replay: the trace has {PREPEND_BOS_KEY} {trace.get(PREPEND_BOS_KEY)!r}, the model declares "
                f"{bos!r}; replay a trace made with this model"
            )
        if int(trace["layers"]) != layers or int(trace["heads"]) != heads:
            raise ReferenceError(
                f"replay: trace is for {trace['layers']} layers x {trace['heads']} heads, "
                f"the model has {layers} x {heads}"
            )
        if [int(x) for x in trace["tokens"]] != ids:
            raise ReferenceError("replay: the trace's tokens differ from the tokens given to the reference")
        try:
            trace_policy = parse_policy(str(trace["policy"]))
        except ReferenceError as e:
            raise ReferenceError(f"replay: the trace's policy: {e}") from e
        if trace_policy != policy:
            raise ReferenceError(f"replay: the trace is for policy {trace_policy.spec}, not {policy.spec}")
        rep = cls({}, heads, layers, rel_tol)
        n_tok = len(ids)
        for pos, ev in steps(trace):
            if pos > n_tok - 1:
                raise ReferenceError(f"replay: trace step pos {pos} lies beyond the {n_tok} tokens")
            if pos == n_tok - 1:  # the last token predicts nothing; the reference does not feed it
                rep.ignored += 1
                continue
            rep.steps[pos] = ev
        return rep

    def victims(self, policy: Policy, t: int, layer: int, positions: torch.Tensor,
                scores: torch.Tensor) -> tuple[torch.Tensor, list[list[int]]]:
        """The trace's victims at (t, layer) as candidate indices [heads, k] and as positions per
        head; violations of the policy found in them are recorded."""
        ev = self.steps.get(t, [[[]] * self.heads] * self.layers)
        victims, ev_lists = victims_from_trace(ev, t, layer, positions)
        self.violations.extend(check_victims(policy, t, layer, positions, scores, victims, self.rel_tol))
        self.checked += victims.numel()
        return victims, ev_lists

    def summary(self) -> dict:
        return {
            "rel_tol": self.rel_tol,
            "victims_checked": self.checked,
            "ignored_steps": self.ignored,
            "n_violations": len(self.violations),
            "violations": self.violations,
        }
