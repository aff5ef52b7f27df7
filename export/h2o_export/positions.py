"""Rolling positions (StreamingLLM's renumbering, Xiao et al. 2023): a policy's `@rolling` option
and the positions it gives, shared by the reference loop and the tests.

With rolling positions keys are cached before the rotary embedding and rotated at every step by
their place in the cache: per layer, the n entries a (row, head) holds are numbered by their
original positions, oldest first; the new tokens of a step take positions P, P+1, ... with P
the most entries any layer holds (every head of a layer holds the same count; with uniform
budgets every layer too, so P = n, StreamingLLM's cache length), and layer l's entries are
numbered P - n_l .. P - 1, so the newest cached key sits right before the new token in every
layer. Absolute positions (the default) number every token by its place in the text.

The option is parsed here rather than in policies/ (which knows the families and schedules):
`split_rolling` takes `@rolling` off a spec and `rolling_spec` puts it back in canonical place,
last, as the engine writes it (e.g. `h2o:192+64@pyramid@rolling`).
"""

from __future__ import annotations

from .errors import ReferenceError

OPTION = "rolling"


def split_rolling(spec: str) -> tuple[str, bool]:
    """(the spec without `@rolling`, whether it was there); refuses it given twice or on `full`."""
    head, *opts = spec.strip().split("@")
    rolling = [o for o in opts if o == OPTION]
    if len(rolling) > 1:
        raise ReferenceError(f"invalid policy spec {spec!r}: option `@{OPTION}` is given twice")
    core = "@".join([head] + [o for o in opts if o != OPTION])
    if rolling and head == "full":
        raise ReferenceError(f"invalid policy spec {spec!r}: `@{OPTION}` applies to bounded policies only, "
                             f"not `full` (a full cache keeps every position; nothing is renumbered)")
    return core, bool(rolling)


def rolling_spec(canonical: str, rolling: bool) -> str:
    """The canonical spec with `@rolling` appended when `rolling`."""
    return canonical + (f"@{OPTION}" if rolling else "")


def key_positions(counts: list[int]) -> tuple[int, list[list[int]]]:
    """Rolling positions for a step whose layers hold `counts[l]` entries per head: (P, the new
    tokens' first position; per layer the positions of its entries in ascending original order)."""
    top = max(counts, default=0)
    return top, [list(range(top - n, top)) for n in counts]
