"""Class-aware focal loss (thesis App. C.6): alpha = inverse square root of class frequency, mean 1."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def class_alpha(counts: Sequence[int]) -> list[float]:
    """Per-class weights 1 / sqrt(frequency), normalised to mean 1; a zero count is a ValueError."""
    for index, count in enumerate(counts):
        if count <= 0:
            raise ValueError(f"class {index} has {count} training samples; alpha needs every class present")
    total = sum(counts)
    raw = [1.0 / math.sqrt(count / total) for count in counts]
    mean = sum(raw) / len(raw)
    return [w / mean for w in raw]


class FocalLoss(nn.Module):
    """Softmax focal loss: mean over the batch of -alpha[y] * (1 - p_y) ** gamma * log p_y.

    The batch mean is a plain mean over samples, not divided by the sum of the alpha weights used:
    alpha has mean 1 over classes, so the loss keeps the scale of cross-entropy and gamma=0 with no
    alpha is exactly F.cross_entropy. Computed in float32 from log_softmax, so fp16 logits under
    autocast (and logits of any size) give finite values and gradients.
    """

    def __init__(self, gamma: float = 2.0, alpha: Sequence[float] | torch.Tensor | None = None) -> None:
        super().__init__()
        self.gamma = float(gamma)
        # A buffer so it follows .to(device) and lands in state_dict; None when unweighted.
        self.register_buffer("alpha", None if alpha is None
                             else torch.as_tensor(alpha, dtype=torch.float32).flatten().clone())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar loss for logits [B, C] and integer targets [B]."""
        # float32 at least (float64 stays float64, for gradcheck).
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        log_p = F.log_softmax(logits, dim=1).gather(1, target.long().unsqueeze(1)).squeeze(1)
        # (1 - p)^gamma via -expm1(log p): exact near p = 1, where 1 - exp(log p) would cancel.
        loss = -(-torch.expm1(log_p)).pow(self.gamma) * log_p
        if self.alpha is not None:
            loss = self.alpha.to(loss.dtype)[target] * loss
        return loss.mean()

    def extra_repr(self) -> str:
        return f"gamma={self.gamma}, alpha={'None' if self.alpha is None else self.alpha.tolist()}"
