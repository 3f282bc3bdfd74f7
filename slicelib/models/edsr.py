"""EDSR-style generators: the CNN (supplement 2.1) and the improved GAN's generator (2.4).

Both predict the middle slice from its two neighbours as a residual over linear
interpolation: the "global skip connection from input to pre-output" is read as adding
the mean of the two input slices to the network's output, so that the layers learn only
the correction to the linear baseline. The skip has no parameters, so it does not
change the supplement's counts.

With the default (random) initialisation of the tail the correction starts large, so
the untrained network does not begin at linear interpolation; ``from_linear=True``
zero-initialises the tail so that it does (and gradients still reach the tail, whose
input is not zero).
"""

from __future__ import annotations

import torch
from torch import nn

from slicelib.models.layers import ResidualBlock, SpatialAttention, conv3x3


class EDSRGenerator(nn.Module):
    """Head conv, residual body, tail conv, plus the mean of the inputs.

    With the defaults (64 features, 8 one-conv blocks): 1,216 + 8 x 36,928 + 577 =
    297,217 parameters; with ``convs_per_block=2``: 592,641. ``from_linear``: start
    exactly at linear interpolation (zero-initialised tail; no extra parameters).

    ``forward``: tensor (N, 2, H, W), values in [0, 1] -> (N, 1, H, W), unclamped.
    """

    def __init__(
        self,
        *,
        in_channels: int = 2,
        features: int,
        blocks: int,
        convs_per_block: int,
        from_linear: bool,
    ) -> None:
        super().__init__()
        self.head = conv3x3(in_channels, features)
        self.body = self.make_body(features=features, blocks=blocks, convs=convs_per_block)
        self.tail = conv3x3(features, 1)
        if from_linear:
            nn.init.zeros_(self.tail.weight)
            nn.init.zeros_(self.tail.bias)  # type: ignore[arg-type]

    def make_body(self, *, features: int, blocks: int, convs: int) -> nn.Sequential:
        """The feature-space trunk between head and tail: ``blocks`` residual blocks."""
        return nn.Sequential(*(ResidualBlock(features, convs=convs) for _ in range(blocks)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        linear = x.mean(dim=1, keepdim=True)  # (N, 1, H, W): linear interpolation
        head = self.head(x)
        body = self.body(head)
        residual = self.tail(body)
        return linear + residual


class ImprovedGenerator(EDSRGenerator):
    """The improved GAN's generator: a longer body ending in attention and a pre-exit conv.

    Spatial attention is CBAM-style (:class:`~slicelib.models.layers.SpatialAttention`,
    99 parameters) rather than SAGAN's full self-attention, whose cost grows with
    (H * W)^2 at the 256x256 training size. With 16 one-conv blocks: 1,216 + 16 x 36,928
    + 99 + 36,928 + 577 = 629,668 parameters (the supplement's "0.6M").
    """

    def make_body(self, *, features: int, blocks: int, convs: int) -> nn.Sequential:
        body = super().make_body(features=features, blocks=blocks, convs=convs)
        body.append(SpatialAttention())
        body.append(conv3x3(features, features))  # the pre-exit convolution
        body.append(nn.ReLU())
        return body
