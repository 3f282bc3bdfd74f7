"""PatchGAN discriminators (Isola et al. 2017): a score per overlapping image patch.

- basic (supplement 2.3): 4x4 convolutions 1->64->128->256 at stride 2 with
  LeakyReLU(0.2), then a stride-1 4x4 convolution to a 1-channel score map: 660,929
  parameters.
- improved (2.4): one more layer, 256->512 at stride 1, and batch norm after every
  convolution but the first (those convolutions drop their bias, which the norm's shift
  replaces): pix2pix's 70x70 PatchGAN, 2,763,585 parameters.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, overload

import torch
from torch import nn

from slicelib.errors import SlicelibError

KERNEL = 4


def _conv_out(size: int, stride: int) -> int:
    return (size + 2 - KERNEL) // stride + 1


class PatchDiscriminator(nn.Module):
    """Stages of conv (4x4, padding 1) [+ batch norm] + LeakyReLU(0.2), then a score conv.

    ``forward``: tensor (N, 1, H, W) -> logits (N, 1, h, w) with h about H / 8 minus a
    few pixels; ``features`` also returns the output of every stage (for feature
    matching). Inputs smaller than :attr:`min_size` give an empty score map and are
    refused.
    """

    def __init__(
        self,
        *,
        in_channels: int = 1,
        widths: Sequence[int] = (64, 128, 256),
        strides: Sequence[int] = (2, 2, 2),
        batch_norm: bool = False,
    ) -> None:
        super().__init__()
        stages: list[nn.Module] = []
        prev = in_channels
        for i, (width, stride) in enumerate(zip(widths, strides, strict=True)):
            norm = batch_norm and i > 0
            layers: list[nn.Module] = [
                nn.Conv2d(prev, width, KERNEL, stride=stride, padding=1, bias=not norm)
            ]
            if norm:
                layers.append(nn.BatchNorm2d(width))
            layers.append(nn.LeakyReLU(0.2))
            stages.append(nn.Sequential(*layers))
            prev = width
        self.stages = nn.ModuleList(stages)
        self.score = nn.Conv2d(prev, 1, KERNEL, stride=1, padding=1)
        self.min_size = self._smallest_input([*strides, 1])

    @staticmethod
    def _smallest_input(strides: Sequence[int]) -> int:
        size = 1
        while True:
            out = size
            for stride in strides:
                out = _conv_out(out, stride)
            if out >= 1:
                return size
            size += 1

    @overload
    def forward(self, y: torch.Tensor, return_features: Literal[False] = False) -> torch.Tensor: ...

    @overload
    def forward(
        self, y: torch.Tensor, return_features: Literal[True]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]: ...

    def forward(
        self, y: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, list[torch.Tensor]]:
        """y (N, 1, H, W) -> logits (N, 1, h, w); with ``return_features`` also the stages.

        ``return_features=True`` is the form to use through a DistributedDataParallel
        wrapper, which only synchronises what goes through ``forward``.
        """
        if min(y.shape[-2:]) < self.min_size:
            raise SlicelibError(
                f"discriminator input {tuple(y.shape[-2:])} is smaller than "
                f"{self.min_size}x{self.min_size} pixels"
            )
        feats: list[torch.Tensor] = []
        h = y
        for stage in self.stages:
            h = stage(h)
            feats.append(h)
        logits = self.score(h)
        return (logits, feats) if return_features else logits

    def features(self, y: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """(logits (N, 1, h, w), [output of each stage]) for feature matching."""
        return self.forward(y, return_features=True)


def basic_discriminator(*, features: int) -> PatchDiscriminator:
    """The basic GAN's PatchGAN (660,929 parameters at 64 features)."""
    f = features
    return PatchDiscriminator(widths=(f, 2 * f, 4 * f), strides=(2, 2, 2))


def improved_discriminator(*, features: int) -> PatchDiscriminator:
    """The improved GAN's deeper PatchGAN with batch norm and a 512-channel layer."""
    f = features
    return PatchDiscriminator(
        widths=(f, 2 * f, 4 * f, 8 * f), strides=(2, 2, 2, 1), batch_norm=True
    )
