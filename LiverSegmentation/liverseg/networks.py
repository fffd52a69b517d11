"""2D U-Net, residual U-Net (ResUNet) and 3D U-Net, built from one declarative table.

The ResUNet follows Rahman et al., "ResUNet++/ResUNet for liver and tumor segmentation" (Bioengineering 2022,
9(8):368): each U-Net level's double convolution becomes a pre-activation residual block with a 1x1 projection
shortcut. Networks are built only from (architecture name, integer/float parameters) found in a model card, so a
model file never carries code.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F


def _norm(channels: int) -> nn.Module:
    # GroupNorm rather than BatchNorm: batches are small, and it behaves the same in training and inference.
    return nn.GroupNorm(num_groups=min(8, channels), num_channels=channels)


class DoubleConv(nn.Module):
    """Two 3x3 convolutions with normalisation and ReLU (the plain U-Net block)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: (norm, ReLU, conv) x2 plus a 1x1 projection shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(cin, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
            nn.Dropout2d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv2d(cout, cout, 3, padding=1, bias=False), _norm(cout),
        )
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), _norm(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class UNet2D(nn.Module):
    """Encoder-decoder with skip connections; ``block`` decides plain or residual levels."""

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 16, depth: int = 4,
                 block: Callable[..., nn.Module] = DoubleConv, dropout: float = 0.0):
        super().__init__()
        if depth < 1 or base_channels < 4:
            raise ValueError("depth must be >= 1 and base_channels >= 4")
        widths = [base_channels * 2 ** d for d in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList([block(in_channels, widths[0])])
        self.encoders.extend(block(widths[d - 1], widths[d], dropout if d == depth else 0.0) for d in range(1, depth + 1))
        self.ups = nn.ModuleList(nn.ConvTranspose2d(widths[d + 1], widths[d], 2, stride=2) for d in reversed(range(depth)))
        self.decoders = nn.ModuleList(block(2 * widths[d], widths[d]) for d in reversed(range(depth)))
        self.head = nn.Conv2d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, enc in enumerate(self.encoders):
            x = enc(x if level == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


class DoubleConv3D(nn.Module):
    """Two 3x3x3 convolutions with normalisation and ReLU (the 3D U-Net block)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv3d(cin, cout, 3, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True),
            nn.Dropout3d(dropout) if dropout > 0 else nn.Identity(),
            nn.Conv3d(cout, cout, 3, padding=1, bias=False), nn.GroupNorm(min(8, cout), cout), nn.ReLU(inplace=True),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class UNet3D(nn.Module):
    """Volumetric U-Net (Cicek et al., MICCAI 2016) for patch training and sliding-window inference."""

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 8, depth: int = 3, dropout: float = 0.0):
        super().__init__()
        widths = [base_channels * 2 ** d for d in range(depth + 1)]
        self.encoders = nn.ModuleList([DoubleConv3D(in_channels, widths[0])])
        self.encoders.extend(DoubleConv3D(widths[d - 1], widths[d], dropout if d == depth else 0.0) for d in range(1, depth + 1))
        self.ups = nn.ModuleList(nn.ConvTranspose3d(widths[d + 1], widths[d], 2, stride=2) for d in reversed(range(depth)))
        self.decoders = nn.ModuleList(DoubleConv3D(2 * widths[d], widths[d]) for d in reversed(range(depth)))
        self.head = nn.Conv3d(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, enc in enumerate(self.encoders):
            x = enc(x if level == 0 else F.max_pool3d(x, 2))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


# The declarative table: architecture name -> builder. A model card names one of these and its parameters.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet": lambda **p: UNet2D(block=DoubleConv, **p),
    "resunet": lambda **p: UNet2D(block=ResidualBlock, **p),
    "unet3d": lambda **p: UNet3D(**p),
}
VOLUMETRIC = {"unet3d"}  # architectures that take (N, C, D, H, W) patches
_ALLOWED_PARAMS = {"in_channels": int, "out_channels": int, "base_channels": int, "depth": int, "dropout": float}


def build_network(architecture: str, params: dict) -> nn.Module:
    """Build a network from its card entry; unknown names or parameters raise ``ValueError``."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"Unknown architecture {architecture!r}; this version knows {sorted(ARCHITECTURES)}.")
    clean = {}
    for key, value in params.items():
        if key not in _ALLOWED_PARAMS:
            raise ValueError(f"Unknown parameter {key!r} for architecture {architecture!r}.")
        clean[key] = _ALLOWED_PARAMS[key](value)
    return ARCHITECTURES[architecture](**clean)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
