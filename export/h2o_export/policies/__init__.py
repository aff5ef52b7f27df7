"""Eviction policies of the PyTorch reference: the spec grammar and one module per family
(full, local, sink, h2o, tova, scissor, knorm, random over base.py; budget schedules in
schedule.py). A new family is one more module whose class is listed in FAMILIES; the grammar,
help texts and the reference loop pick it up from there.

Spec grammar (the engine's src/policy/spec/, the same canonical strings and messages):
`KEYWORD`, `KEYWORD:A` or `KEYWORD:A+B` (non-negative integers), then options each after an
`@`: `@uniform` / `@pyramid` (any bounded family), `@rng=N` (random), `@window=W`,
`@recent=R`, `@sinks=S` and the switch `@normalized` (scissor), `@skip=N` (knorm's first N layers
kept whole); every bounded policy needs a budget of at least 1.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Optional

from ..errors import ReferenceError
from .base import Policy
from .full import Full
from .h2o import H2O
from .knorm import Knorm
from .local import Local
from .random import Random
from .schedule import SCHEDULES
from .scissor import Scissor
from .sink import Sink
from .tova import Tova

FAMILIES: tuple[type[Policy], ...] = (Full, Local, Sink, H2O, Tova, Scissor, Knorm, Random)
_BY_KEYWORD = {kw: fam for fam in FAMILIES for kw in fam.KEYWORDS}
ACCEPTED_FORMS = (
    " | ".join(form for fam in FAMILIES for form in fam.FORMS)
    + ", then optional options: @pyramid or @uniform (any bounded family), @rng=N (random), "
    "@window=W, @recent=R, @sinks=S and @normalized (scissor), @skip=N (knorm: its first N layers "
    "keep every token), @rolling (any bounded family: rolling positions) "
    "(non-negative integers, budget >= 1; e.g. local:256, sink:4+252, "
    "h2o:192+64, h2o:192+64@pyramid, random:256@rng=7, knorm:256@skip=2, "
    "scissor:256@sinks=4@normalized)"
)
_HEAD_RE = re.compile(r"^([a-z][a-z0-9-]*)(?::([0-9]+)(?:\+([0-9]+))?)?$")
_NUMBER_OPTIONS = ("rng", "window", "recent", "sinks", "skip")
_SWITCHES = ("normalized",)  # written `@key`, no value
# the order in which a refusal names an option the family does not take
_OPTION_ORDER = ("rng", "window", "recent", "sinks", "normalized", "skip")

__all__ = ["ACCEPTED_FORMS", "FAMILIES", "Policy", "Full", "Local", "Sink", "H2O", "Tova", "Scissor", "Knorm",
           "Random", "parse_policy"]


def _arity_text(keyword: str, arity: int, form: str) -> str:
    if arity == 0:
        return f"`{keyword}` takes no numbers"
    if arity == 1:
        return f"`{keyword}` takes one number ({form})"
    return f"`{keyword}` takes two numbers ({keyword}:A+B)"


def _options(opts: list[str]) -> tuple[Optional[str], dict[str, int]]:
    """The schedule and the `@key=N` options; raises ValueError with the message's start."""
    schedule, numbers = None, {}
    for opt in opts:
        key, eq, value = opt.partition("=")
        if key in SCHEDULES and not eq:
            if schedule is not None:
                raise ValueError("the schedule is given twice; ")
            schedule = key
        elif key in _NUMBER_OPTIONS:
            if key in numbers:
                raise ValueError(f"option `@{key}` is given twice; ")
            if not eq or not re.fullmatch(r"[0-9]+", value):
                raise ValueError(f"option `@{key}` takes a number (@{key}=N); ")
            numbers[key] = int(value)
        elif key in _SWITCHES:
            if key in numbers:
                raise ValueError(f"option `@{key}` is given twice; ")
            if eq:
                raise ValueError(f"option `@{key}` takes no value (@{key}); ")
            numbers[key] = 1
        else:
            raise ValueError(f"unknown option `@{opt}`; ")
    return schedule, numbers


def _applicable(keyword: str, fam: type[Policy], schedule: Optional[str], numbers: dict[str, int]) -> None:
    """Refuses options the family does not take; raises ValueError with the message's start."""
    for key in _OPTION_ORDER:
        if key in numbers and key not in fam.OPTIONS:
            takers = ", ".join(f.KEYWORDS[0] for f in FAMILIES if key in f.OPTIONS)
            raise ValueError(f"`@{key}` applies to {takers} only, not `{keyword}`; ")
    if fam is Full and schedule is not None:
        raise ValueError("`full` has no budget to schedule; ")


def parse_policy(text: str, max_positions: Optional[int] = None, layers: Optional[int] = None) -> Policy:
    """Parse a policy spec; refuse malformed specs, budget 0 and budgets above `max_positions`
    (each layer's under a schedule, when `layers` is given)."""
    raw = text
    head, *opts = text.strip().split("@")
    m = _HEAD_RE.match(head)
    fam = _BY_KEYWORD.get(m.group(1)) if m else None
    if fam is None:
        raise ReferenceError(f"invalid policy spec {raw!r}: accepted forms are {ACCEPTED_FORMS}")
    keyword = m.group(1)
    numbers = [int(x) for x in m.group(2, 3) if x is not None]
    if len(numbers) != fam.ARITY:
        form = fam.FORMS[fam.KEYWORDS.index(keyword)]
        raise ReferenceError(
            f"invalid policy spec {raw!r}: {_arity_text(keyword, fam.ARITY, form)}; accepted forms are {ACCEPTED_FORMS}"
        )
    try:
        schedule, options = _options(opts)
        _applicable(keyword, fam, schedule, options)
    except ValueError as e:
        raise ReferenceError(f"invalid policy spec {raw!r}: {e}accepted forms are {ACCEPTED_FORMS}") from None
    pol = fam.from_numbers(keyword, numbers, options)
    if schedule is not None and fam is not Full:
        pol = dataclasses.replace(pol, schedule=schedule)
    problem = pol.option_error()
    if problem:
        raise ReferenceError(f"invalid policy spec {raw!r}: {problem}accepted forms are {ACCEPTED_FORMS}")
    if pol.budget == 0:
        raise ReferenceError(f"invalid policy spec {raw!r}: the budget is 0; accepted forms are {ACCEPTED_FORMS}")
    if max_positions is not None and pol.budget is not None:
        if pol.budget > max_positions:
            raise ReferenceError(
                f"policy {pol.spec}: budget {pol.budget} exceeds the model's {max_positions} positions; "
                f"use a smaller budget or `full`"
            )
        for layer in range(layers or 0):
            b = pol.for_layer(layer, layers).budget
            if b is not None and b > max_positions:
                raise ReferenceError(
                    f"policy {pol.spec}: layer {layer}'s budget {b} exceeds the model's {max_positions} "
                    f"positions; use a smaller budget or @uniform"
                )
    return pol
