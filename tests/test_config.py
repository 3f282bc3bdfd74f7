"""Presets and configuration helpers."""

from __future__ import annotations

import dataclasses

import pytest

from slicelib.config import (
    DEMO,
    MODEL_NAMES,
    PAPER,
    PRESETS,
    RUN_INVARIANT_FIELDS,
    DiffusionConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    get_preset,
    preset_differences,
    process_batch,
    recorded_run_defining,
    replace_checked,
    run_defining,
    to_dict,
)
from slicelib.errors import SlicelibError


def test_paper_preset_matches_supplement() -> None:
    epochs = {m: PAPER.train_config(m, 1).epochs for m in MODEL_NAMES}
    batch = {m: PAPER.train_config(m, 1).batch_size for m in MODEL_NAMES}
    # the supplement's, and the motion-compensated network (not in it) as the CNN
    assert epochs == {"cnn": 25, "unet": 25, "gan": 25, "gan_improved": 10, "ddpm": 20, "mcnet": 25}
    assert batch == {"cnn": 4, "unet": 4, "gan": 4, "gan_improved": 4, "ddpm": 8, "mcnet": 4}
    cfg = PAPER.train_config("unet", 1)
    assert cfg.lr == 1e-4 and cfg.precision == "fp16" and cfg.crop is None
    assert PAPER.prepare.size == 256
    assert PAPER.diffusion == DiffusionConfig(timesteps=100, beta_start=1e-4, beta_end=0.02)


def test_adversarial_weights_follow_the_supplement() -> None:
    assert PAPER.train_config("gan", 1).adv_weight == 0.001
    assert PAPER.train_config("gan_improved", 1).adv_weight == 0.01
    assert PAPER.train_config("gan_improved", 1).fm_weight == 0.1


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_builds_every_training_config(name: str) -> None:
    preset = get_preset(name)
    for model in MODEL_NAMES:
        for k in preset.ks:
            cfg = preset.train_config(model, k)
            assert cfg.model == model and cfg.k == k and cfg.epochs >= 1


def test_errors_name_the_bad_value() -> None:
    with pytest.raises(SlicelibError, match="unknown preset 'fast'"):
        get_preset("fast")
    with pytest.raises(SlicelibError, match="unknown model 'vae'"):
        PAPER.train_config("vae", 1)  # type: ignore[arg-type]
    with pytest.raises(SlicelibError, match="k must be >= 1"):
        PAPER.train_config("unet", 0)
    with pytest.raises(SlicelibError, match="epoch"):
        replace_checked(TrainConfig(), epoch=3)


def test_overrides_replace_single_fields() -> None:
    cfg = PAPER.train_config("cnn", 2, epochs=3, batch_size=16)
    assert (cfg.epochs, cfg.batch_size, cfg.k) == (3, 16, 2)
    assert PAPER.train_config("cnn", 2).epochs == 25  # the preset itself is unchanged


def test_round_trip_through_dict() -> None:
    cfg = TrainConfig(model="ddpm", k=2, crop=48, model_cfg=ModelConfig(ddpm_channels=8))
    back = from_dict(TrainConfig, to_dict(cfg))
    assert back == cfg
    assert dataclasses.is_dataclass(back.model_cfg)


def test_demo_gives_every_network_the_same_budget_and_six_test_patients() -> None:
    from slicelib.data.split import split_counts
    from slicelib.stats import MIN_TEST_PATIENTS

    budgets = {}
    for model in MODEL_NAMES:
        cfg = DEMO.train_config(model, 1)
        assert cfg.steps_per_epoch is not None
        budgets[model] = cfg.epochs * cfg.steps_per_epoch * cfg.batch_size
    assert len(set(budgets.values())) == 1, budgets
    _, _, test = split_counts(DEMO.cohort.patients, DEMO.prepare.split)
    assert test >= MIN_TEST_PATIENTS
    # Every generator starts at linear interpolation in the demo only, and the book says so.
    assert DEMO.model.residual_from_linear and not PAPER.model.residual_from_linear
    assert "model.residual_from_linear: True (paper: False)" in preset_differences(DEMO)


def test_ddpm_ablation_changes_only_the_diffusion() -> None:
    from slicelib.study.config import study_config, study_differences

    demo, paper = study_config("demo"), study_config("paper")
    assert demo.ablation_diffusion(DEMO.diffusion, "cosine").schedule == "cosine"
    assert demo.ablation_diffusion(DEMO.diffusion, "rescaled").rescale
    with pytest.raises(SlicelibError, match="unknown DDPM ablation variant 'sqrt'"):
        demo.ablation_diffusion(DEMO.diffusion, "sqrt")
    with pytest.raises(SlicelibError, match="none in this preset"):
        paper.ablation_diffusion(PAPER.diffusion, "cosine")
    # The study's own settings are the study's; the book lists them with the preset's.
    lines = study_differences("demo")
    assert "uncertainty.members: 2 (paper: 5)" in lines
    assert "ddpm_ablation.cosine.schedule: cosine (paper: None)" in lines
    assert set(preset_differences(DEMO)) < set(lines)


def test_saved_configs_with_the_old_residual_name_still_load() -> None:
    saved = to_dict(ModelConfig(residual_from_linear=True))
    saved["unet_residual"] = saved.pop("residual_from_linear")
    assert from_dict(ModelConfig, saved) == ModelConfig(residual_from_linear=True)


def test_a_run_is_defined_by_its_effective_batch_not_its_processes() -> None:
    cfg = PAPER.train_config("unet", 1)
    defining = run_defining(cfg)
    assert defining["effective_batch"] == 4 and "batch_size" not in defining
    assert not set(RUN_INVARIANT_FIELDS) & set(defining)
    # The paper's batch over 4 GPUs: 1 each; it does not split over 3.
    assert [process_batch(4, n) for n in (1, 2, 4)] == [4, 2, 1]
    with pytest.raises(SlicelibError, match=r"batch_size=4 .* does not split over 3 processes"):
        process_batch(4, 3)
    # What a run recorded: this rule's (batch_size effective, process_batch its share) and
    # slicelib 0.1's (batch_size per process): 4 processes of 4 are 16, not the paper's 4.
    train = to_dict(cfg)
    assert recorded_run_defining(train, world_size=4, per_process=1) == defining
    assert recorded_run_defining(train, world_size=4)["effective_batch"] == 16
    assert recorded_run_defining(train)["effective_batch"] == 4
