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


# Layers per dimensionality: convolution, transposed convolution, dropout, max pooling.
_OPS = {2: (nn.Conv2d, nn.ConvTranspose2d, nn.Dropout2d, F.max_pool2d),
        3: (nn.Conv3d, nn.ConvTranspose3d, nn.Dropout3d, F.max_pool3d)}


def _two_convs(cin: int, cout: int, dropout: float, dims: int, final_relu: bool) -> nn.Sequential:
    """conv-norm-ReLU-(dropout)-conv-norm(-ReLU): the body of both block types."""
    conv, _, drop, _ = _OPS[dims]
    layers = [conv(cin, cout, 3, padding=1, bias=False), _norm(cout), nn.ReLU(inplace=True),
              drop(dropout) if dropout > 0 else nn.Identity(), conv(cout, cout, 3, padding=1, bias=False), _norm(cout)]
    return nn.Sequential(*layers, *([nn.ReLU(inplace=True)] if final_relu else []))


class DoubleConv(nn.Module):
    """Two 3x3(x3) convolutions with normalisation and ReLU (the plain U-Net block)."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0, dims: int = 2):
        super().__init__()
        self.body = _two_convs(cin, cout, dropout, dims, final_relu=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)


class ResidualBlock(nn.Module):
    """Pre-activation residual block: (norm, ReLU, conv) x2 plus a 1x1 projection shortcut when widths differ."""

    def __init__(self, cin: int, cout: int, dropout: float = 0.0, dims: int = 2):
        super().__init__()
        conv = _OPS[dims][0]
        self.body = _two_convs(cin, cout, dropout, dims, final_relu=False)
        self.shortcut = nn.Identity() if cin == cout else nn.Sequential(conv(cin, cout, 1, bias=False), _norm(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


class UNet(nn.Module):
    """Encoder-decoder with skip connections; ``block`` decides plain or residual levels, ``dims`` 2D or 3D
    (the 3D variant is the volumetric U-Net of Cicek et al., MICCAI 2016, for patches)."""

    def __init__(self, in_channels: int, out_channels: int, base_channels: int = 16, depth: int = 4,
                 block: Callable[..., nn.Module] = DoubleConv, dropout: float = 0.0, dims: int = 2):
        super().__init__()
        if depth < 1 or base_channels < 4:
            raise ValueError("depth must be >= 1 and base_channels >= 4")
        conv, up, _, self._pool = _OPS[dims]
        widths = [base_channels * 2 ** d for d in range(depth + 1)]
        self.depth = depth
        self.encoders = nn.ModuleList([block(in_channels, widths[0], dims=dims)])
        self.encoders.extend(block(widths[d - 1], widths[d], dropout if d == depth else 0.0, dims=dims)
                             for d in range(1, depth + 1))
        self.ups = nn.ModuleList(up(widths[d + 1], widths[d], 2, stride=2) for d in reversed(range(depth)))
        self.decoders = nn.ModuleList(block(2 * widths[d], widths[d], dims=dims) for d in reversed(range(depth)))
        self.head = conv(widths[0], out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for level, enc in enumerate(self.encoders):
            x = enc(x if level == 0 else self._pool(x, 2))
            skips.append(x)
        skips.pop()
        for up, dec in zip(self.ups, self.decoders):
            x = dec(torch.cat([up(x), skips.pop()], dim=1))
        return self.head(x)


# The declarative table: architecture name -> builder. A model card names one of these and its parameters.
ARCHITECTURES: dict[str, Callable[..., nn.Module]] = {
    "unet": lambda **p: UNet(block=DoubleConv, **p),
    "resunet": lambda **p: UNet(block=ResidualBlock, **p),
    "unet3d": lambda **p: UNet(block=DoubleConv, dims=3, **p),
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
