"""The architectures: parameter counts, shapes on odd sizes, and that they can learn."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from torch import nn

from slicelib.cli import main
from slicelib.config import MODEL_NAMES, PRESETS, ModelConfig
from slicelib.errors import SlicelibError
from slicelib.models import (
    ImprovedGenerator,
    PatchDiscriminator,
    UNet,
    build_discriminator,
    build_generator,
    count_parameters,
    parameter_counts,
)
from slicelib.models.layers import SpatialAttention

SMALL_DDPM = ModelConfig(ddpm_channels=8)
IMAGE_GENERATORS = ("cnn", "unet", "gan", "gan_improved")


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# parameter counts


def test_cnn_has_the_supplements_count_with_one_conv_blocks() -> None:
    model = build_generator("cnn", ModelConfig())
    assert count_parameters(model) == 297_217
    assert count_parameters(model.head) == 1_216
    assert count_parameters(model.body[0]) == 36_928
    assert count_parameters(model.tail) == 577


def test_cnn_with_two_conv_blocks_has_the_original_codes_count() -> None:
    model = build_generator("cnn", ModelConfig(cnn_convs_per_block=2))
    assert count_parameters(model) == 592_641


def test_unet_count_and_its_parts() -> None:
    model = build_generator("unet", ModelConfig())
    assert isinstance(model, UNet)
    assert count_parameters(model) == 1_862_273
    assert model.part_counts() == {
        "encoder": 259_584,
        "bottleneck": 885_248,
        "decoder": 717_376,
        "final": 65,
    }


def test_unet_dropout_adds_no_parameters() -> None:
    assert count_parameters(build_generator("unet", ModelConfig(dropout=0.2))) == 1_862_273


@pytest.mark.parametrize(
    ("name", "params"),
    [("cnn", 297_217), ("unet", 1_862_273), ("gan", 297_217), ("gan_improved", 629_668)],
)
def test_every_deterministic_generator_can_start_at_linear_interpolation(
    name: str, params: int
) -> None:
    torch.manual_seed(0)
    model = build_generator(name, ModelConfig(residual_from_linear=True))
    assert count_parameters(model) == params
    x = torch.rand(2, 2, 21, 30)
    with torch.no_grad():
        torch.testing.assert_close(model(x), x.mean(dim=1, keepdim=True))
        plain = build_generator(name, ModelConfig())(x)
    # The paper's initialisation starts elsewhere.
    assert not torch.allclose(plain, x.mean(dim=1, keepdim=True), atol=1e-3)
    # The zero tail still learns: one step moves the output off linear interpolation.
    loss = (model(x) - x[:, :1]).abs().mean()
    loss.backward()
    tail = [p for n, p in model.named_parameters() if n.startswith(("tail", "final"))]
    assert tail and any(float(p.grad.abs().sum()) > 0 for p in tail if p.grad is not None)


def test_gan_generator_is_the_cnn_and_patchgan_is_as_written() -> None:
    cfg = ModelConfig()
    assert count_parameters(build_generator("gan", cfg)) == 297_217
    disc = build_discriminator("gan", cfg)
    assert disc is not None
    assert count_parameters(disc) == 660_929
    assert not any(isinstance(m, nn.BatchNorm2d) for m in disc.modules())


def test_improved_generator_is_about_0_6_million() -> None:
    model = build_generator("gan_improved", ModelConfig())
    assert isinstance(model, ImprovedGenerator)
    n = count_parameters(model)
    # 16 one-conv blocks + CBAM spatial attention (7x7 conv, 99) + pre-exit conv
    assert n == 1_216 + 16 * 36_928 + 99 + 36_928 + 577
    assert 0.55e6 <= n <= 0.65e6
    assert sum(isinstance(m, SpatialAttention) for m in model.modules()) == 1


def test_improved_discriminator_structure() -> None:
    disc = build_discriminator("gan_improved", ModelConfig())
    assert isinstance(disc, PatchDiscriminator)
    assert len(disc.stages) == 4
    has_norm = [
        any(isinstance(m, nn.BatchNorm2d) for m in stage.modules()) for stage in disc.stages
    ]
    assert has_norm == [False, True, True, True]
    assert disc.stages[-1][0].out_channels == 512
    assert count_parameters(disc) == 2_763_585


def test_ddpm_denoiser_is_20_5_million_within_2_percent() -> None:
    n = count_parameters(build_generator("ddpm", ModelConfig()))
    assert abs(n - 20_506_881) / 20_506_881 <= 0.02


def test_parameter_counts_has_the_contract_form() -> None:
    counts = parameter_counts(ModelConfig())
    assert list(counts) == list(MODEL_NAMES)
    assert counts["cnn"] == {"generator": 297_217}
    assert counts["unet"] == {"generator": 1_862_273}
    assert counts["gan"] == {"generator": 297_217, "discriminator": 660_929}
    assert set(counts["gan_improved"]) == {"generator", "discriminator"}
    assert set(counts["ddpm"]) == {"denoiser"}
    extra = parameter_counts(ModelConfig(), variants=True)
    assert extra["cnn_two_conv"] == {"generator": 592_641}
    assert extra["unet_parts"]["final"] == 65


def test_models_command_prints_the_counts_as_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json", "--preset", "paper"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == parameter_counts(ModelConfig(), variants=True)


def test_models_command_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--preset", "demo"]) == 0
    out = capsys.readouterr().out
    assert "297,217" in out and "660,929" in out
    demo_ddpm = parameter_counts(PRESETS["demo"].model)["ddpm"]["denoiser"]
    assert f"{demo_ddpm:,}" in out


# shapes


@pytest.mark.parametrize("name", IMAGE_GENERATORS)
@pytest.mark.parametrize("size", [(33, 47), (64, 64), (5, 7)])
def test_generator_shapes_on_any_size(name: str, size: tuple[int, int]) -> None:
    model = build_generator(name, ModelConfig())
    out = model(torch.rand(2, 2, *size))
    assert out.shape == (2, 1, *size)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("size", [(33, 47), (64, 64)])
def test_ddpm_denoiser_shapes_on_any_size(size: tuple[int, int]) -> None:
    model = build_generator("ddpm", SMALL_DDPM)
    out = model(torch.randn(2, 1, *size), torch.tensor([0, 99]), torch.rand(2, 2, *size))
    assert out.shape == (2, 1, *size)


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_ddpm_group_norm_fits_every_preset_width(preset: str) -> None:
    model = build_generator("ddpm", PRESETS[preset].model)
    for norm in (m for m in model.modules() if isinstance(m, nn.GroupNorm)):
        assert norm.num_channels % norm.num_groups == 0
    if preset != "paper":
        out = model(torch.randn(1, 1, 16, 16), torch.tensor([3]), torch.rand(1, 2, 16, 16))
        assert out.shape == (1, 1, 16, 16)


def test_ddpm_output_depends_on_the_timestep() -> None:
    model = build_generator("ddpm", SMALL_DDPM)
    with torch.no_grad():  # leave the zero-initialised layers so that time reaches the output
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    x_t, cond = torch.randn(1, 1, 16, 16), torch.rand(1, 2, 16, 16)
    early = model(x_t, torch.tensor([1]), cond)
    late = model(x_t, torch.tensor([90]), cond)
    assert not torch.allclose(early, late, atol=1e-4)


@pytest.mark.parametrize("name", [*IMAGE_GENERATORS, "ddpm"])
def test_channels_last_gives_the_same_output(name: str) -> None:
    model = build_generator(name, SMALL_DDPM).eval()
    x = torch.rand(2, 2, 24, 20)
    with torch.no_grad():
        if name == "ddpm":
            x_t, t = torch.randn(2, 1, 24, 20), torch.tensor([4, 60])
            ref = model(x_t, t, x)
            model = model.to(memory_format=torch.channels_last)
            out = model(
                x_t.to(memory_format=torch.channels_last),
                t,
                x.to(memory_format=torch.channels_last),
            )
        else:
            ref = model(x)
            model = model.to(memory_format=torch.channels_last)
            out = model(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-4)


def test_cnn_starts_as_linear_interpolation_plus_a_learned_residual() -> None:
    model = build_generator("cnn", ModelConfig())
    for p in model.tail.parameters():
        nn.init.zeros_(p)
    x = torch.rand(1, 2, 9, 9)
    torch.testing.assert_close(model(x), x.mean(dim=1, keepdim=True))


@pytest.mark.parametrize(
    ("name", "stages", "size", "score"),
    [
        ("gan", 3, (64, 64), (7, 7)),
        ("gan_improved", 4, (64, 64), (6, 6)),
        ("gan", 3, (33, 47), (3, 4)),
    ],
)
def test_discriminator_scores_and_features(
    name: str, stages: int, size: tuple[int, int], score: tuple[int, int]
) -> None:
    disc = build_discriminator(name, ModelConfig())
    assert disc is not None
    y = torch.rand(3, 1, *size)
    logits = disc(y)
    assert logits.shape == (3, 1, *score)
    same, feats = disc.features(y)
    torch.testing.assert_close(same, logits)
    assert len(feats) == stages
    assert [f.shape[1] for f in feats] == [64, 128, 256, 512][:stages]
    assert feats[0].shape[-2:] == (size[0] // 2, size[1] // 2)


def test_discriminator_refuses_too_small_inputs() -> None:
    disc = build_discriminator("gan_improved", ModelConfig())
    assert disc is not None
    assert disc.min_size == 24
    disc(torch.rand(1, 1, 24, 24))
    with pytest.raises(SlicelibError, match="smaller than 24x24"):
        disc(torch.rand(1, 1, 16, 16))


@pytest.mark.parametrize("name", ["cnn", "unet", "ddpm"])
def test_no_discriminator_for_the_other_models(name: str) -> None:
    assert build_discriminator(name, ModelConfig()) is None


def test_unet_mc_dropout_is_random_in_train_mode_only() -> None:
    model = build_generator("unet", ModelConfig(features=8, dropout=0.5))
    x = torch.rand(1, 2, 16, 16)
    model.train()
    assert not torch.equal(model(x), model(x))
    model.eval()
    assert torch.equal(model(x), model(x))


# bad configuration


def test_unknown_model_is_a_one_line_error() -> None:
    with pytest.raises(SlicelibError, match="unknown model 'vit'"):
        build_generator("vit", ModelConfig())


@pytest.mark.parametrize(
    ("field", "value"),
    [("cnn_convs_per_block", 3), ("features", 0), ("dropout", 1.0), ("ddpm_time_dim", 255)],
)
def test_invalid_model_config_names_the_field(field: str, value: object) -> None:
    cfg = dataclasses.replace(ModelConfig(), **{field: value})
    with pytest.raises(SlicelibError, match=field):
        build_generator("cnn", cfg)


# learning


@pytest.mark.parametrize(
    "name, cfg",
    [
        ("cnn", ModelConfig()),
        ("cnn", ModelConfig(cnn_convs_per_block=2)),
        ("unet", ModelConfig()),
        ("gan_improved", ModelConfig()),
    ],
    ids=["cnn", "cnn_two_conv", "unet", "gan_improved"],
)
def test_a_few_adam_steps_lower_l1_on_a_fixed_batch(name: str, cfg: ModelConfig) -> None:
    model = build_generator(name, cfg)
    x = torch.rand(4, 2, 16, 16)
    target = (x[:, :1] * 0.7 + x[:, 1:] * 0.3) ** 2  # not the linear interpolation
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

    def loss() -> torch.Tensor:
        return nn.functional.l1_loss(model(x), target)

    before = loss().item()
    for _ in range(12):
        optimiser.zero_grad()
        value = loss()
        value.backward()
        optimiser.step()
    assert loss().item() < 0.8 * before
