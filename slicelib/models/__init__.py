"""The architectures of the study (the original's five and the motion-compensated CNN),
built by name from a :class:`ModelConfig`.

>>> from slicelib.config import ModelConfig
>>> parameter_counts(ModelConfig())["cnn"]
{'generator': 297217}
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

from torch import nn

from slicelib.config import MODEL_NAMES, TRAINABLE, ModelConfig
from slicelib.errors import SlicelibError, unknown_choice
from slicelib.models.ddpm_unet import ConditionalUNet
from slicelib.models.discriminators import (
    PatchDiscriminator,
    basic_discriminator,
    improved_discriminator,
)
from slicelib.models.edsr import EDSRGenerator, ImprovedGenerator
from slicelib.models.layers import count_parameters
from slicelib.models.mcnet import LearnedFilter, MotionCompensatedCNN
from slicelib.models.unet import UNet

__all__ = [
    "DISCRIMINATORS",
    "GENERATORS",
    "ConditionalUNet",
    "EDSRGenerator",
    "ImprovedGenerator",
    "LearnedFilter",
    "MotionCompensatedCNN",
    "PatchDiscriminator",
    "UNet",
    "build_discriminator",
    "build_generator",
    "count_parameters",
    "parameter_counts",
]


def _residual_cnn(cfg: ModelConfig, *, improved: bool = False) -> nn.Module:
    """The EDSR-style CNN (``cnn_blocks``), or the improved GAN's (``improved_blocks``)."""
    cls = ImprovedGenerator if improved else EDSRGenerator
    return cls(
        features=cfg.features,
        blocks=cfg.improved_blocks if improved else cfg.cnn_blocks,
        convs_per_block=cfg.cnn_convs_per_block,
        from_linear=cfg.residual_from_linear,
    )


def _unet(cfg: ModelConfig) -> nn.Module:
    return UNet(features=cfg.features, dropout=cfg.dropout, from_linear=cfg.residual_from_linear)


def _ddpm(cfg: ModelConfig) -> nn.Module:
    return ConditionalUNet(channels=cfg.ddpm_channels, time_dim=cfg.ddpm_time_dim)


def _mcnet(cfg: ModelConfig) -> nn.Module:
    return MotionCompensatedCNN(features=cfg.mc_features, dilations=cfg.mc_dilations)


# The basic GAN's generator is the CNN (supplement 2.3).
GENERATORS: dict[str, Callable[[ModelConfig], nn.Module]] = {
    "cnn": _residual_cnn,
    "unet": _unet,
    "gan": _residual_cnn,
    "gan_improved": functools.partial(_residual_cnn, improved=True),
    "ddpm": _ddpm,
    "mcnet": _mcnet,
    "filter": lambda cfg: LearnedFilter(),
}
DISCRIMINATORS: dict[str, Callable[[ModelConfig], PatchDiscriminator]] = {
    "gan": lambda cfg: basic_discriminator(features=cfg.features),
    "gan_improved": lambda cfg: improved_discriminator(features=cfg.features),
}


def check_model_config(cfg: ModelConfig) -> None:
    """Raise :class:`SlicelibError` naming the first invalid field of ``cfg``."""
    positive = ("features", "cnn_blocks", "improved_blocks", "ddpm_channels", "ddpm_time_dim")
    for name in positive:
        if getattr(cfg, name) < 1:
            raise SlicelibError(f"ModelConfig.{name} must be >= 1 (got {getattr(cfg, name)})")
    if cfg.cnn_convs_per_block not in (1, 2):
        raise SlicelibError(
            f"ModelConfig.cnn_convs_per_block must be 1 or 2 (got {cfg.cnn_convs_per_block})"
        )
    if not 0.0 <= cfg.dropout < 1.0:
        raise SlicelibError(f"ModelConfig.dropout must be in [0, 1) (got {cfg.dropout})")
    if cfg.ddpm_time_dim % 2:
        raise SlicelibError(f"ModelConfig.ddpm_time_dim must be even (got {cfg.ddpm_time_dim})")
    if cfg.mc_features < 1 or not cfg.mc_dilations or min(cfg.mc_dilations) < 1:
        raise SlicelibError(
            f"ModelConfig.mc_features and mc_dilations must be >= 1 "
            f"(got {cfg.mc_features}, {list(cfg.mc_dilations)})"
        )


def _check_name(name: str) -> None:
    if name not in GENERATORS:
        raise unknown_choice("model", name, TRAINABLE)


def build_generator(name: str, cfg: ModelConfig) -> nn.Module:
    """The generator of model ``name`` (for ``ddpm``: the denoiser), freshly initialised.

    cnn, unet, gan, gan_improved, filter: ``forward(x (N, 2, H, W) in [0, 1]) -> (N, 1, H, W)``.
    mcnet: ``forward(x (N, 3, H, W))``, the neighbours and their flow estimate.
    ddpm: ``forward(x_t (N, 1, H, W), t (N,) long, cond (N, 2, H, W)) -> noise
    (N, 1, H, W)``.
    """
    _check_name(name)
    check_model_config(cfg)
    return GENERATORS[name](cfg)


def takes_estimate(name: str) -> bool:
    """Whether model ``name`` reads the flow estimate of the target slice as a third input
    channel (the motion-compensated network)."""
    return name == "mcnet"


def build_discriminator(name: str, cfg: ModelConfig) -> PatchDiscriminator | None:
    """The PatchGAN discriminator of ``gan`` / ``gan_improved``; None for the others."""
    _check_name(name)
    check_model_config(cfg)
    factory = DISCRIMINATORS.get(name)
    return factory(cfg) if factory is not None else None


def parameter_counts(cfg: ModelConfig, *, variants: bool = False) -> dict[str, dict[str, int]]:
    """Trainable parameters of every component, counted on freshly built modules.

    ``{"cnn": {"generator": N}, "unet": {...}, "gan": {"generator": N, "discriminator":
    N}, "gan_improved": {...}, "ddpm": {"denoiser": N}}``. With ``variants``, also
    ``"cnn_two_conv"`` (the CNN with conv-ReLU-conv blocks) and ``"unet_parts"``
    (encoder, bottleneck, decoder, final).
    """
    counts: dict[str, dict[str, int]] = {}
    for name in MODEL_NAMES:
        generator = build_generator(name, cfg)
        key = "denoiser" if name == "ddpm" else "generator"
        counts[name] = {key: count_parameters(generator)}
        discriminator = build_discriminator(name, cfg)
        if discriminator is not None:
            counts[name]["discriminator"] = count_parameters(discriminator)
    if variants:
        two_conv = dataclasses.replace(cfg, cnn_convs_per_block=2)
        counts["cnn_two_conv"] = {"generator": count_parameters(build_generator("cnn", two_conv))}
        unet = build_generator("unet", cfg)
        assert isinstance(unet, UNet)
        counts["unet_parts"] = unet.part_counts()
    return counts
