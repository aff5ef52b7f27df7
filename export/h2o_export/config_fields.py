"""Reading a config.json's fields with their rules, shared by the GPT-NeoX (config.py) and the
Llama-family (config_llama.py) configs: each refusal is one ExportError naming the origin, the
field, the rule and the value as config.json spells it (`show`)."""

from __future__ import annotations

import json
import math
from typing import Any, Optional

from .errors import ExportError

MAX_DIM = 2**31 - 1
F32_MAX = 3.4028234663852886e38
F32_TINY = 1.1754943508222875e-38  # smallest positive normal float32
NO_VALUE = object()  # "read the field from the config" (an explicit None is a value)


def show(v: Any, limit: int = 60) -> str:
    """A config value as config.json spells it (NaN, Infinity, "text", true, null), cut to `limit`."""
    if isinstance(v, float) and not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("Infinity" if v > 0 else "-Infinity")
    try:
        s = json.dumps(v)
    except (TypeError, ValueError):
        s = repr(v)
    return s if len(s) <= limit else s[: limit - 3] + "..."


class FieldReader:
    """The fields of `raw` (a parsed config.json from `origin`), each read against its rule."""

    def __init__(self, raw: dict[str, Any], origin: str):
        self.raw, self.origin = raw, origin

    def bad(self, field: str, rule: str, value: Any = NO_VALUE) -> ExportError:
        got = show(value if value is not NO_VALUE else self.raw[field])
        return ExportError(f"{self.origin}: {field} must be {rule}, got {got}; correct it in the config")

    def integer(self, name: str, value: Any = NO_VALUE) -> int:
        """A whole number from 1 to MAX_DIM (`value` instead of the field's own when given)."""
        v = self.raw[name] if value is NO_VALUE else value
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_DIM:
            raise self.bad(name, f"an integer from 1 to {MAX_DIM}", v)
        return v

    def number(self, name: str, low: float, high: float, rule: str, value: Any = NO_VALUE,
               low_open: bool = False) -> float:
        """A finite number in [low, high] (`low_open`: low itself refused), as float."""
        v = self.raw[name] if value is NO_VALUE else value
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise self.bad(name, rule, v)
        try:
            f = float(v)
        except OverflowError:  # an integer beyond float's range
            raise self.bad(name, rule, v) from None
        if not (math.isfinite(f) and low <= f <= high) or (low_open and f == low):
            raise self.bad(name, rule, v)
        return f

    def boolean(self, name: str, default: bool) -> bool:
        v = self.raw.get(name, default)
        if not isinstance(v, bool):
            raise self.bad(name, "true or false", v)
        return v

    def token_id(self, name: str, vocab: int, first_of_list: bool = False) -> Optional[int]:
        """A token id below `vocab`, or None when absent or null; `first_of_list`: a list of ids
        (Llama 3 instruct's several eos ids) reads as its first."""
        v = self.raw.get(name)
        if v is None:
            return None
        if first_of_list and isinstance(v, list) and len(v) >= 1:
            v = v[0]
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab:
            raise self.bad(name, f"one token id in [0, vocab_size {vocab}) or null", self.raw.get(name))
        return v
