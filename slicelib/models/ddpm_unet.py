"""The DDPM's conditional denoiser (supplement 2.5): a 4-level U-Net predicting noise.

The noisy slice and its two neighbours are concatenated (3 channels). Widths are
``channels x (1, 2, 4, 8)`` at resolutions H, H/2, H/4, H/8; one time-conditioned
residual block per level on each side, a residual block / self-attention / residual
block bottleneck, stride-2 convolutions down and 2x2 transposed convolutions up (as in
the 2.2 U-Net). The sinusoidal timestep encoding (``time_dim``) goes through an MLP
(``time_dim -> 4 time_dim -> time_dim``) and into every residual block.

At ``channels=64, time_dim=256``: 20,506,113 parameters, within 0.004 % of the
original's 20,506,881.
"""

from __future__ import annotations

import torch
from torch import nn

from slicelib.models.layers import (
    SelfAttention2d,
    SinusoidalTimeEmbedding,
    TimeResBlock,
    conv3x3,
    group_norm,
    pad_to_multiple,
)

MULTS = (1, 2, 4, 8)


class ConditionalUNet(nn.Module):
    """Noise predictor eps(x_t, t, cond).

    ``forward``: x_t (N, 1, H, W), t (N,) long in [0, T), cond (N, 2, H, W) in the
    diffusion's data range -> predicted noise (N, 1, H, W). Any H and W: the input is
    padded (reflect) to a multiple of 8 and the output cropped back.
    """

    def __init__(
        self,
        *,
        channels: int,
        time_dim: int,
        cond_channels: int = 2,
        heads: int = 4,
    ) -> None:
        super().__init__()
        widths = [channels * m for m in MULTS]
        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(time_dim),
            nn.Linear(time_dim, 4 * time_dim),
            nn.SiLU(),
            nn.Linear(4 * time_dim, time_dim),
        )
        self.stem = conv3x3(1 + cond_channels, channels)

        self.encoder = nn.ModuleList()
        self.downsample = nn.ModuleList()
        prev = channels
        for level, width in enumerate(widths):
            self.encoder.append(TimeResBlock(prev, width, time_dim=time_dim))
            if level < len(widths) - 1:
                self.downsample.append(conv3x3(width, width, stride=2))
            prev = width

        self.mid_in = TimeResBlock(prev, prev, time_dim=time_dim)
        self.attention = SelfAttention2d(prev, heads=heads)
        self.mid_out = TimeResBlock(prev, prev, time_dim=time_dim)

        self.upsample = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for width in reversed(widths[:-1]):
            self.upsample.append(nn.ConvTranspose2d(prev, width, 2, stride=2))
            self.decoder.append(TimeResBlock(2 * width, width, time_dim=time_dim))
            prev = width

        self.head = nn.Sequential(group_norm(prev), nn.SiLU(), conv3x3(prev, 1))
        self.pad_multiple = 2 ** (len(widths) - 1)

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        x, (height, width) = pad_to_multiple(torch.cat([x_t, cond], dim=1), self.pad_multiple)
        emb = self.time_embed(t)  # (N, time_dim)
        h = self.stem(x)
        skips: list[torch.Tensor] = []
        for level, block in enumerate(self.encoder):
            h = block(h, emb)
            if level < len(self.downsample):
                skips.append(h)
                h = self.downsample[level](h)
        h = self.mid_out(self.attention(self.mid_in(h, emb)), emb)
        for up, block in zip(self.upsample, self.decoder):
            h = block(torch.cat([up(h), skips.pop()], dim=1), emb)
        return self.head(h)[..., :height, :width]
