"""Training, validation and evaluation windows of pythia-micro, with or without a BOS in front.

A model trained with a BOS (config.json's prepend_bos_token_id, h2o_export.config) sees it at
position 0 of every window; it is fed, never scored, so N text tokens give N-1 scored
predictions with or without it and losses of both kinds of model compare.
"""

from __future__ import annotations

from typing import Optional

import torch

IGNORE = -100  # cross_entropy's ignore_index: a position fed but not scored (the BOS's own prediction)


def lm_window(text: torch.Tensor, bos: Optional[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets of one causal-LM pass over text tokens [..., L].

    no BOS: x = text[:-1], y = text[1:] (L-1 positions);
    BOS:    x = [bos] + text[:-1], y = [IGNORE] + text[1:] (L positions; position 0 holds the
            BOS, whose prediction of text[0] is not scored).
    Either way the scored predictions are text[1:], each from all the text before it."""
    x, y = text[..., :-1], text[..., 1:]
    if bos is None:
        return x, y
    lead = text.new_full(text.shape[:-1] + (1,), bos)
    return torch.cat((lead, x), -1), torch.cat((torch.full_like(lead, IGNORE), y), -1)


def text_len(seq: int, bos: Optional[int]) -> int:
    """Text tokens a training window of `seq` positions reads: after a BOS, seq (seq-1 fed after
    the BOS, the last one only predicted: seq-1 scored predictions); without one seq+1 (the old
    recipe: seq positions, every one scored)."""
    return seq if bos is not None else seq + 1
