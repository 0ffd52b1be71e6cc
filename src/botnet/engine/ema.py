"""Exponential moving average of a model's weights (evaluated in place of the raw weights)."""
from __future__ import annotations

import copy

import torch
from torch import nn


class ModelEma(nn.Module):
    """``ema = decay * ema + (1 - decay) * weights`` after each update.

    Floating-point buffers (BatchNorm running statistics) are averaged too, so the copy is
    self-consistent; integer buffers (``num_batches_tracked``) are copied. The early-step decay is
    ``min(decay, (1 + n) / (10 + n))`` so that the average is not dominated by the random
    initialisation in short runs.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999):
        super().__init__()
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay = decay
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))

    def current_decay(self) -> float:
        n = int(self.num_updates)
        return min(self.decay, (1.0 + n) / (10.0 + n))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.current_decay()
        ema_state = self.module.state_dict()
        float_ema, float_new = [], []
        for name, new in model.state_dict().items():
            ema = ema_state[name]
            if ema.is_floating_point():
                float_ema.append(ema)
                float_new.append(new.detach().to(ema.dtype))
            else:
                ema.copy_(new)
        if float_ema:
            torch._foreach_lerp_(float_ema, float_new, 1.0 - d)
        self.num_updates += 1

    def forward(self, *args, **kwargs):
        return self.module(*args, **kwargs)
