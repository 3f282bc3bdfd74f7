"""The two-level U-Net of supplement 2.2 (1,862,273 parameters)."""

from __future__ import annotations

import torch
from torch import nn

from slicelib.models.layers import ConvReLU, count_parameters, pad_to_multiple


class UNet(nn.Module):
    """Two-level U-Net: 64 and 128 channels, a 256-channel bottleneck, transposed-conv ups.

    ``forward``: tensor (N, 2, H, W), values in [0, 1] -> (N, 1, H, W), unclamped, any
    H and W: the input is padded (reflect) to a multiple of 4 and the output cropped back.

    ``dropout > 0`` adds ``Dropout2d`` (no parameters) on the input of each decoder
    stage, for Monte Carlo dropout at inference.

    ``from_linear=True`` adds the mean of the input channels (linear interpolation) to the
    output and starts the final layer at zero, so that the network starts from linear
    interpolation and learns a correction (no extra parameters; not in the supplement).
    """

    def __init__(
        self,
        *,
        in_channels: int = 2,
        features: int,
        dropout: float,
        from_linear: bool,
    ) -> None:
        super().__init__()
        f = features
        self.enc1 = ConvReLU(in_channels, f)
        self.enc2 = ConvReLU(f, 2 * f)
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = ConvReLU(2 * f, 4 * f)
        self.up2 = nn.ConvTranspose2d(4 * f, 2 * f, 2, stride=2)
        self.dec2 = ConvReLU(4 * f, 2 * f)
        self.up1 = nn.ConvTranspose2d(2 * f, f, 2, stride=2)
        self.dec1 = ConvReLU(2 * f, f)
        self.final = nn.Conv2d(f, 1, 1)
        self.dropout: nn.Module = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()
        self.from_linear = from_linear
        if from_linear:
            nn.init.zeros_(self.final.weight)
            nn.init.zeros_(self.final.bias)  # type: ignore[arg-type]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = x.mean(dim=1, keepdim=True) if self.from_linear else None  # (N, 1, H, W)
        x, (h, w) = pad_to_multiple(x, 4)
        skip1 = self.enc1(x)  # (N, f, H, W)
        skip2 = self.enc2(self.pool(skip1))  # (N, 2f, H/2, W/2)
        bottom = self.bottleneck(self.pool(skip2))  # (N, 4f, H/4, W/4)
        up2 = self.dec2(self.dropout(torch.cat([self.up2(bottom), skip2], dim=1)))
        up1 = self.dec1(self.dropout(torch.cat([self.up1(up2), skip1], dim=1)))
        out = self.final(up1)[..., :h, :w]
        return out if base is None else out + base

    def part_counts(self) -> dict[str, int]:
        """Parameters per part, as the supplement lists them (decoder includes the ups)."""
        return {
            "encoder": count_parameters(self.enc1) + count_parameters(self.enc2),
            "bottleneck": count_parameters(self.bottleneck),
            "decoder": sum(count_parameters(m) for m in (self.up2, self.dec2, self.up1, self.dec1)),
            "final": count_parameters(self.final),
        }
