"""The motion-compensated network and CPU training that counts: flow estimates computed
once and kept with the cache, a network that starts exactly at them, learning-rate
schedules, gradient clipping, bfloat16 on the CPU."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from slicelib.baselines import flow, neighbours
from slicelib.checkpoint import load_run
from slicelib.config import SMOKE, FlowConfig, ModelConfig
from slicelib.data.cache import Cache
from slicelib.data.dataset import TripletDataset
from slicelib.data.motion import MotionStore, with_estimate
from slicelib.interpolator import Predictor
from slicelib.models import build_generator, count_parameters, takes_estimate
from slicelib.objectives import Learner
from slicelib.train import WARMUP_START, lr_factor, train

pytestmark = pytest.mark.usefixtures("one_thread")

FLOW = FlowConfig()


def config(model: str, **overrides: object):  # noqa: ANN201
    settings: dict[str, object] = {
        "epochs": 2, "batch_size": 4, "steps_per_epoch": 3, "val_max_slices": 4, "crop": 24,
        "device": "cpu",
    }  # fmt: skip
    settings.update(overrides)
    return SMOKE.train_config(model, 1, **settings)  # type: ignore[arg-type]


def test_the_store_computes_each_estimate_once_and_as_the_flow_baseline(
    tiny_cache: Path,
) -> None:
    cache = Cache(tiny_cache)
    pid = cache.entries("train")[0].patient_id
    store = MotionStore(cache, 2, FLOW)
    assert store.ensure({pid: [5, 9]}, workers=1) == 2
    assert store.ensure({pid: [9, 5]}) == 0  # kept with the cache
    assert store.ensure({pid: [5, 7]}, workers=1) == 1  # only the missing one
    volume = np.asarray(cache.volume(pid), dtype=np.float32)
    for i in (5, 7, 9):
        nb = neighbours(volume, i, 2)
        expected = np.clip(flow(nb.before, nb.after, FLOW), 0, 1)
        np.testing.assert_allclose(store.get(pid, i), expected, atol=1e-3)  # float16
    assert (tiny_cache / "motion").is_dir()


def test_dataset_adds_the_estimate_cropped_and_flipped_with_the_slices(tiny_cache: Path) -> None:
    plain = TripletDataset(tiny_cache, "train", 1, crop=16, augment=True, slices_per_patient=4)
    data = TripletDataset(
        tiny_cache, "train", 1, crop=16, augment=True, slices_per_patient=4, motion=FLOW
    )
    assert len(data) == len(plain) == 3 * 4  # three patients, four slices each
    store = MotionStore(Cache(tiny_cache), 1, FLOW)
    for item in range(len(data)):
        with_flow, without = data[item], plain[item]
        assert with_flow.inputs.shape == (3, 16, 16)
        torch.testing.assert_close(with_flow.inputs[:2], without.inputs)
        torch.testing.assert_close(with_flow.target, without.target)
        # the same crop and flips on the estimate: it is undone by drawing the same choices
        top, left, flip_w, flip_h, rotate = data.draw(item, 32, 32)
        estimate = store.get(with_flow.patient, with_flow.index)[top : top + 16, left : left + 16]
        if flip_w:
            estimate = estimate[:, ::-1]
        if flip_h:
            estimate = estimate[::-1, :]
        if rotate:
            estimate = np.rot90(estimate)
        np.testing.assert_array_equal(with_flow.inputs[2].numpy(), estimate.astype(np.float32))


def test_mcnet_starts_at_the_flow_estimate_and_upsampling_computes_it(
    tiny_cache: Path, tmp_path: Path
) -> None:
    net = build_generator("mcnet", ModelConfig())
    assert count_parameters(net) == 29_217 and takes_estimate("mcnet")
    x = torch.rand(2, 3, 20, 20)
    torch.testing.assert_close(net(x), x[:, 2:3])  # the last layer starts at zero
    # A trained run predicts from the two neighbours alone: it computes the estimate.
    run_dir = tmp_path / "mcnet"
    train(config("mcnet", epochs=1, lr=1e-9), tiny_cache, run_dir, progress=False)
    run = load_run(run_dir)
    pairs = torch.rand(3, 2, 32, 32)
    expected = with_estimate(pairs, run.config.model_cfg.flow)[:, 2:3]
    torch.testing.assert_close(Predictor(run)(pairs), expected.clamp(0, 1), atol=1e-5, rtol=0)


def test_mcnet_learns_a_correction_to_the_flow_estimate(tiny_cache: Path, tmp_path: Path) -> None:
    result = train(config("mcnet", epochs=3, lr=3e-3), tiny_cache, tmp_path / "r", progress=False)
    losses = [row["train_loss"] for row in result.history]
    assert losses[-1] < losses[0], losses


def test_schedule_warms_up_then_decays() -> None:
    total = 100
    factors = [lr_factor(s, total, "cosine", 0.1) for s in range(total)]
    assert factors[0] == pytest.approx(WARMUP_START)
    assert factors[10] == pytest.approx(1.0)  # the peak after 10 warm-up steps
    assert all(b <= a for a, b in zip(factors[10:], factors[11:]))  # then only down
    assert factors[-1] < 0.001
    assert [lr_factor(s, total, "constant", 0.0) for s in (0, 50, 99)] == [1.0, 1.0, 1.0]
    assert lr_factor(5, total, "constant", 0.1) < 1.0 == lr_factor(50, total, "constant", 0.1)


def test_the_loop_follows_the_schedule(tiny_cache: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    original = Learner.step

    def step(self: Learner, loss: torch.Tensor) -> None:
        seen.append(self.optimizer.param_groups[0]["lr"])
        original(self, loss)

    cfg = config("unet", lr=1e-3, schedule="cosine", warmup=0.25, epochs=2, steps_per_epoch=4)
    try:
        Learner.step = step  # type: ignore[method-assign]
        train(cfg, tiny_cache, tmp_path / "run", progress=False)
    finally:
        Learner.step = original  # type: ignore[method-assign]
    expected = [1e-3 * lr_factor(s, 8, "cosine", 0.25) for s in range(8)]
    assert seen == pytest.approx(expected)


def test_clipping_bounds_the_gradient_norm() -> None:
    net = torch.nn.Linear(4, 1)
    learner = Learner(
        net,
        net,
        torch.optim.Adam(net.parameters()),
        torch.amp.GradScaler("cpu", enabled=False),
        clip=1e-3,
    )
    learner.step((net(torch.full((8, 4), 100.0)) ** 2).mean())
    norm = math.sqrt(sum(float((p.grad**2).sum()) for p in net.parameters()))
    assert norm == pytest.approx(1e-3, rel=1e-4)


def test_bf16_and_fp32_train_to_the_same_loss(tiny_cache: Path, tmp_path: Path) -> None:
    """bfloat16 autocast on the CPU (with channels_last) against float32: the same run
    ends within 5 % of the same training loss, and the run records what it used."""
    losses = {}
    for precision in ("fp32", "bf16"):
        cfg = config("unet", cpu_precision=precision, epochs=3, lr=2e-3)
        result = train(cfg, tiny_cache, tmp_path / precision, progress=False)
        losses[precision] = result.history[-1]["train_loss"]
        record = (tmp_path / precision / "config.json").read_text()
        assert ("bf16 autocast (CPU)" in record) == (precision == "bf16")
    assert losses["bf16"] == pytest.approx(losses["fp32"], rel=0.05)


def test_a_scheduled_run_is_defined_by_its_epochs() -> None:
    """Under a schedule the learning rate depends on the run's length, so a run with more
    epochs is another run (not one to resume); under a constant rate it continues."""
    from slicelib.config import run_defining

    constant = config("unet")
    cosine = dataclasses.replace(constant, schedule="cosine")
    assert run_defining(constant) == run_defining(dataclasses.replace(constant, epochs=9))
    assert run_defining(cosine) != run_defining(dataclasses.replace(cosine, epochs=9))
