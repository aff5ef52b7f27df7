"""Eviction policies of the PyTorch reference: the spec grammar and one module per family
(full.py, local.py, sink.py, h2o.py over base.py). A new family is one more module whose class
is listed in FAMILIES; the grammar, help texts and the reference loop pick it up from there.

Spec grammar: `KEYWORD`, `KEYWORD:A` or `KEYWORD:A+B` (non-negative integers), as the engine's
(src/policy/spec.rs); every bounded policy needs a budget of at least 1.
"""

from __future__ import annotations

import re
from typing import Optional

from ..errors import ReferenceError
from .base import Policy
from .full import Full
from .h2o import H2O
from .local import Local
from .sink import Sink

FAMILIES: tuple[type[Policy], ...] = (Full, Local, Sink, H2O)
_BY_KEYWORD = {kw: fam for fam in FAMILIES for kw in fam.KEYWORDS}
ACCEPTED_FORMS = (
    " | ".join(form for fam in FAMILIES for form in fam.FORMS)
    + " (non-negative integers, budget >= 1; e.g. local:256, sink:4+252, h2o:192+64)"
)
_SPEC_RE = re.compile(r"^([a-z][a-z0-9-]*)(?::(\d+)(?:\+(\d+))?)?$")

__all__ = ["ACCEPTED_FORMS", "FAMILIES", "Policy", "Full", "Local", "Sink", "H2O", "parse_policy"]


def _arity_text(keyword: str, arity: int, form: str) -> str:
    if arity == 0:
        return f"`{keyword}` takes no numbers"
    if arity == 1:
        return f"`{keyword}` takes one number ({form})"
    return f"`{keyword}` takes two numbers ({keyword}:A+B)"


def parse_policy(text: str, max_positions: Optional[int] = None) -> Policy:
    """Parse a policy spec; refuse malformed specs, budget 0 and budgets above `max_positions`."""
    raw = text
    m = _SPEC_RE.match(text.strip())
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
    pol = fam.from_numbers(keyword, numbers)
    if pol.budget == 0:
        raise ReferenceError(f"invalid policy spec {raw!r}: the budget is 0; accepted forms are {ACCEPTED_FORMS}")
    if max_positions is not None and pol.budget is not None and pol.budget > max_positions:
        raise ReferenceError(
            f"policy {pol.spec}: budget {pol.budget} exceeds the model's {max_positions} positions; "
            f"use a smaller budget or `full`"
        )
    return pol
