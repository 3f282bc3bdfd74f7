"""The motion-compensated network (an extension beyond the original) and the learned
linear filter that checks the training loop.

The study's networks see only the two neighbours and must learn motion from them; on real
anatomy classical optical flow (:func:`slicelib.baselines.flow`) already gains about
1 dB over linear interpolation. :class:`MotionCompensatedCNN` starts from that estimate
and learns a correction to it: the problem formulation does the heavy lifting, the
network the rest.
"""

from __future__ import annotations

import torch
from torch import nn


class MotionCompensatedCNN(nn.Module):
    """A plain CNN of 3x3 layers (ReLU between them) with ``dilations``, correcting the
    flow estimate of the middle slice; its last layer starts at zero, so the untrained
    network is exactly the flow estimate.

    The layers see the two neighbours and their mean as differences from the estimate,
    times ``scale``, and the estimate itself minus 0.5: small numbers centred on 0 keep
    their precision under bfloat16 (whose resolution near 1 is 4e-3, the size of the
    corrections). With 32 features and dilations 1, 2, 4, 2, 1: 29,217 parameters.

    ``forward``: tensor (N, 3, H, W) in [0, 1]: S_{i-k}, S_{i+k} and the flow estimate of
    S_i -> (N, 1, H, W): the estimate plus the correction (unclamped).
    """

    in_channels = 3

    def __init__(self, *, features: int, dilations: tuple[int, ...], scale: float = 10.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = 4  # before, after, their mean (each minus the estimate), the estimate
        for d in dilations[:-1]:
            layers += [nn.Conv2d(channels, features, 3, padding=d, dilation=d), nn.ReLU()]
            channels = features
        last = nn.Conv2d(channels, 1, 3, padding=dilations[-1], dilation=dilations[-1])
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)  # type: ignore[arg-type]
        self.layers = nn.Sequential(*layers, last)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        neighbours, estimate = x[:, :2], x[:, 2:3]  # (N, 2, H, W), (N, 1, H, W)
        linear = neighbours.mean(dim=1, keepdim=True)
        centred = self.scale * (torch.cat([neighbours, linear], dim=1) - estimate)
        return estimate + self.layers(torch.cat([centred, estimate - 0.5], dim=1))


class LearnedFilter(nn.Module):
    """A ``taps x taps`` linear filter of the two neighbours plus a bias (2 * taps^2 + 1
    parameters; reflect padding), starting at linear interpolation (both centre taps 0.5).

    Not a model of the study: the check that the training loop reaches what a linear
    predictor can (the least-squares filter of :mod:`slicelib.headroom` is its optimum
    under MSE). ``forward``: (N, 2, H, W) -> (N, 1, H, W).
    """

    def __init__(self, *, taps: int = 9) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, taps, padding=taps // 2, padding_mode="reflect")
        with torch.no_grad():
            self.conv.weight.zero_()
            self.conv.bias.zero_()  # type: ignore[union-attr]
            self.conv.weight[0, :, taps // 2, taps // 2] = 0.5

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)
