"""A tiny stand-in for the HPA DPN-UNet models (same interface: (B, 3, H, W) -> (B, 3, H, W) logits).

It undoes the models' input normalisation, takes the brightest channel as the
"signal", and returns logits whose softmax channel 2 (foreground) is high where
the signal is bright and channel 1 (touching border) high along the rim of
bright regions. Saved with ``torch.save(module)`` and loaded through the
adapter, it exercises the real loading, batching, resizing and labelling code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class StandInUNet(nn.Module):
    def __init__(self, threshold: float = 0.3) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor([124.0, 117.0, 104.0]).view(1, 3, 1, 1) / 255.0)
        self.register_buffer("std", torch.tensor(1.0 / (0.0167 * 255.0)))
        self.threshold = threshold
        self.calls: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        signal = (x * self.std + self.mean).amax(dim=1, keepdim=True)  # back to [0, 1]
        fg = torch.sigmoid(12.0 * (signal - self.threshold))
        rim = (F.max_pool2d(fg, 3, 1, 1) + F.max_pool2d(-fg, 3, 1, 1)).clamp(min=0)  # local max - min
        zero = torch.zeros_like(signal)
        return torch.cat([zero, 6.0 * rim - 3.0, 8.0 * (fg - 0.5)], dim=1)


class NotAModule:
    """Something picklable that is not a torch module (for the error test)."""
