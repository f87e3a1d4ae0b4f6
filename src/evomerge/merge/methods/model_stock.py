"""Model Stock (Jang et al. 2024): interpolate the fine-tuned average towards the base by the
angle between task vectors."""

from __future__ import annotations

import torch

from evomerge.merge.registry import merge_method


@merge_method("model_stock", base="required", min_models=2,
              reference="https://arxiv.org/abs/2403.19522")
def model_stock(tensors: list[torch.Tensor], base: torch.Tensor, *,
                filter_wise: bool = False) -> torch.Tensor:
    """t = k cos / (1 + (k - 1) cos), result = t * mean(x_i) + (1 - t) * base, cos the mean
    pairwise cosine between task vectors (per row when ``filter_wise``)."""
    shape = base.shape
    if filter_wise:
        w0 = base.unsqueeze(0) if base.dim() == 1 else base
        ws = [x.unsqueeze(0) if x.dim() == 1 else x for x in tensors]
    else:
        w0 = base.reshape(-1)
        ws = [x.reshape(-1) for x in tensors]
    offsets = [w - w0 for w in ws]
    cosines = []
    for i, a in enumerate(offsets):
        for b in offsets[i + 1:]:
            norms = torch.norm(a, dim=-1) * torch.norm(b, dim=-1)
            cosines.append(((a * b).sum(dim=-1) / norms.clamp(min=1e-6)).clamp(-1, 1))
    cos = torch.stack(cosines).mean(dim=0).unsqueeze(-1)
    k = len(ws)
    denom = 1 + (k - 1) * cos
    singular = denom.abs() < 1e-6
    t = torch.where(singular, torch.zeros_like(cos),
                    k * cos / torch.where(singular, torch.ones_like(denom), denom))
    average = sum(ws) / k
    return (t * average + (1 - t) * w0).reshape(shape)
