"""Small pieces shared by the modules."""

from __future__ import annotations

import torch

# Paper 001 §2: "an additional layer at the input of each model which normalised all counts
# to 10000, followed by a ln(1 + x) operation"; CapVI's classifier reads the same input.
TARGET_SUM = 1e4


def normalize_log1p(x: torch.Tensor, target_sum: float = TARGET_SUM) -> torch.Tensor:
    """Scale each cell to ``target_sum`` counts, then ``log1p`` (all-zero cells stay zero)."""
    size = x.sum(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.log1p(x / size * target_sum)
