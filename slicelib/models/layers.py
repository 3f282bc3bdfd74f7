"""Building blocks shared by the architectures.

Every block maps ``(N, C, H, W) -> (N, C', H, W)`` unless its docstring says otherwise,
and works on ``channels_last`` tensors (reshapes, never ``view`` on a permuted layout).
"""

from __future__ import annotations

import math
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import nn

# GroupNorm groups in the diffusion denoiser; :func:`group_norm` lowers it to a divisor.
NORM_GROUPS = 32

M = TypeVar("M", bound=nn.Module)


def conv3x3(
    in_channels: int, out_channels: int, *, stride: int = 1, bias: bool = True
) -> nn.Conv2d:
    """A 3x3 convolution with padding 1 (same size at stride 1)."""
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=bias)


class ConvReLU(nn.Sequential):
    """``n`` 3x3 convolutions, each followed by ReLU: the U-Net's "two 3x3 convs + ReLU"."""

    def __init__(self, in_channels: int, out_channels: int, *, n: int = 2) -> None:
        layers: list[nn.Module] = []
        for i in range(n):
            layers += [conv3x3(in_channels if i == 0 else out_channels, out_channels), nn.ReLU()]
        super().__init__(*layers)


class ResidualBlock(nn.Module):
    """EDSR residual block ``x + f(x)`` at constant width.

    ``convs=1``: ``f = ReLU(conv(x))`` (36,928 parameters at 64 channels, the supplement's
    count); ``convs=2``: ``f = conv(ReLU(conv(x)))`` (EDSR and the supplement's text).
    """

    def __init__(self, channels: int, *, convs: int = 1) -> None:
        super().__init__()
        if convs == 1:
            self.body: nn.Sequential = nn.Sequential(conv3x3(channels, channels), nn.ReLU())
        elif convs == 2:
            self.body = nn.Sequential(
                conv3x3(channels, channels), nn.ReLU(), conv3x3(channels, channels)
            )
        else:
            raise ValueError(f"convs must be 1 or 2, got {convs}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class SpatialAttention(nn.Module):
    """CBAM-style spatial attention (Woo et al. 2018): one weight in (0, 1) per pixel.

    The channel-wise mean and max of the features, stacked, go through a
    ``kernel x kernel`` convolution and a sigmoid; the features are multiplied by the
    resulting map. 2 * kernel^2 + 1 parameters (99 for 7x7), linear cost in H * W.
    """

    def __init__(self, *, kernel: int = 7) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = torch.cat(
            [x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1
        )  # (N, 2, H, W)
        weights = torch.sigmoid(self.conv(pooled))  # (N, 1, H, W)
        return x * weights


def zero_init(module: M) -> M:
    """``module`` with every parameter set to zero (a residual branch that starts off)."""
    for parameter in module.parameters():
        nn.init.zeros_(parameter)
    return module


def group_norm(channels: int) -> nn.GroupNorm:
    """GroupNorm with the largest divisor of ``channels`` not above :data:`NORM_GROUPS`.

    ``gcd`` keeps every width valid (8, 16, 64, and concatenations such as 96 or 768).
    """
    return nn.GroupNorm(math.gcd(NORM_GROUPS, channels), channels)


class SelfAttention2d(nn.Module):
    """Multi-head self-attention over all H * W positions, with a residual connection.

    GroupNorm, a 1x1 convolution to queries/keys/values, scaled dot-product attention
    (PyTorch's fused kernels where available) and a 1x1 output projection, initialised
    to zero so that the block starts as the identity.
    """

    def __init__(self, channels: int, *, heads: int = 4) -> None:
        super().__init__()
        if channels % heads:
            raise ValueError(f"channels ({channels}) must be divisible by heads ({heads})")
        self.heads = heads
        self.norm = group_norm(channels)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.proj = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        qkv = self.qkv(self.norm(x)).reshape(n, 3, self.heads, c // self.heads, h * w)
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # (N, heads, HW, C/heads)
        attended = F.scaled_dot_product_attention(q, k, v)  # (N, heads, HW, C/heads)
        attended = attended.transpose(-1, -2).reshape(n, c, h, w)
        return x + self.proj(attended)


class SinusoidalTimeEmbedding(nn.Module):
    """Transformer-style sinusoidal encoding of integer timesteps: (N,) -> (N, dim)."""

    def __init__(self, dim: int, *, max_period: float = 10_000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dimension must be even, got {dim}")
        self.dim = dim
        self.max_period = max_period

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.dim // 2
        exponent = torch.arange(half, device=t.device, dtype=torch.float32) / half
        freqs = torch.exp(-math.log(self.max_period) * exponent)
        angles = t.float()[:, None] * freqs[None, :]
        return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class TimeResBlock(nn.Module):
    """Residual block with a time embedding added between its two convolutions.

    ``GN, SiLU, conv3x3 -> + Linear(SiLU(emb)) -> GN, SiLU, dropout, conv3x3``, plus a
    1x1 convolution on the skip path when the width changes. The second convolution
    starts at zero so that the block starts as its skip path.
    """

    def __init__(
        self, in_channels: int, out_channels: int, *, time_dim: int, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.in_layers = nn.Sequential(
            group_norm(in_channels), nn.SiLU(), conv3x3(in_channels, out_channels)
        )
        self.time = nn.Sequential(nn.SiLU(), nn.Linear(time_dim, out_channels))
        self.out_layers = nn.Sequential(
            group_norm(out_channels),
            nn.SiLU(),
            nn.Dropout(dropout),
            zero_init(conv3x3(out_channels, out_channels)),
        )
        self.skip: nn.Module = (
            nn.Identity()
            if in_channels == out_channels
            else nn.Conv2d(in_channels, out_channels, 1)
        )

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        """x (N, C_in, H, W), emb (N, time_dim) -> (N, C_out, H, W)."""
        hidden = self.in_layers(x) + self.time(emb)[:, :, None, None]
        return self.skip(x) + self.out_layers(hidden)


def pad_to_multiple(x: torch.Tensor, multiple: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """Pad H and W at the bottom/right to a multiple of ``multiple``; return the original size.

    Reflect padding where the image is large enough for it, replicate otherwise.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % multiple, -w % multiple
    if pad_h or pad_w:
        mode = "reflect" if pad_h < h and pad_w < w else "replicate"
        x = F.pad(x, (0, pad_w, 0, pad_h), mode=mode)
    return x, (h, w)


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters of ``module``."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
