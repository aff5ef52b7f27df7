"""Per-layer budget schedules (the engine's src/policy/schedule.rs, the same integers):
`uniform` (every layer the spec's budget) and `pyramid` (PyramidKV, Cai et al. 2024: more budget
in the lower layers, the same total).

A bounded spec's budget splits into a fixed part (what the policy protects) and a free part F.
Under `pyramid` layer l of L gets the fixed part + F_l, the F_l falling linearly from 2F - m at
layer 0 to m at layer L-1, m = F / 20 (PyramidKV's beta), at least `at_least` (1 when nothing is
protected); each F_l is rounded down and the tokens this loses go one each to the lowest layers,
so the F_l add up to exactly L*F.
"""

from __future__ import annotations

PYRAMID_BETA = 20
SCHEDULES = ("uniform", "pyramid")


def free_parts(schedule: str, free: int, layers: int, at_least: int) -> list[int]:
    """The free part of each of `layers` layers for `free` per layer on average."""
    if schedule == "uniform":
        return [free] * layers
    if schedule != "pyramid":
        raise ValueError(f"unknown schedule {schedule!r}")
    beta = PYRAMID_BETA
    min_num = max(free, beta * at_least)  # the top layer's share is min_num / beta
    if layers < 2 or min_num > free * beta:
        return [free] * layers
    den = beta * (layers - 1)
    top = (2 * free * beta - min_num) * (layers - 1)
    drop = 2 * free * beta - 2 * min_num
    parts = [(top - drop * i) // den for i in range(layers)]
    short = free * layers - sum(parts)
    return [p + (1 if i < short else 0) for i, p in enumerate(parts)]
