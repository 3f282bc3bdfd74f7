"""Training-step throughput of every model component in a bare PyTorch loop.

One step: forward, loss, backward, Adam update, batch 4. Generators train on L1, the
discriminators on BCE-with-logits, the DDPM denoiser (paper width) on the diffusion
loss at uniform timesteps. CPU at 64 and 128 px in fp32; on CUDA also 256 px, with
fp16 autocast, a gradient scaler and channels_last (the study's GPU setting).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from slicelib.config import DiffusionConfig, ModelConfig
from slicelib.diffusion import GaussianDiffusion
from slicelib.models import build_discriminator, build_generator, count_parameters

BATCH = 4
CPU_SIZES = (64, 128)
GPU_SIZES = (64, 128, 256)
SECONDS_PER_CASE = 1.0  # measure at least this long (and at least MIN_STEPS steps)
MIN_STEPS = 1

Step = Callable[[], torch.Tensor]


def _cases(cfg: ModelConfig) -> list[tuple[str, nn.Module, str]]:
    """(label, module, kind) with kind in generator / discriminator / denoiser."""
    two_conv = ModelConfig(cnn_convs_per_block=2)
    cases: list[tuple[str, nn.Module, str]] = [
        ("cnn (= gan generator)", build_generator("cnn", cfg), "generator"),
        ("cnn_two_conv", build_generator("cnn", two_conv), "generator"),
        ("unet", build_generator("unet", cfg), "generator"),
        ("gan_improved generator", build_generator("gan_improved", cfg), "generator"),
    ]
    for name in ("gan", "gan_improved"):
        disc = build_discriminator(name, cfg)
        assert disc is not None
        cases.append((f"{name} discriminator", disc, "discriminator"))
    cases.append(("ddpm denoiser", build_generator("ddpm", cfg), "denoiser"))
    return cases


def _step_fn(
    module: nn.Module, kind: str, size: int, device: torch.device, amp: bool
) -> Callable[[], None]:
    optimiser = torch.optim.Adam(module.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    memory = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    inputs = torch.rand(BATCH, 2, size, size, device=device).to(memory_format=memory)
    target = torch.rand(BATCH, 1, size, size, device=device).to(memory_format=memory)
    diffusion = GaussianDiffusion(DiffusionConfig())

    def loss() -> torch.Tensor:
        if kind == "generator":
            return F.l1_loss(module(inputs).float(), target)
        if kind == "discriminator":
            logits = module(target).float()
            return F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        t = diffusion.sample_timesteps(BATCH, device=device)
        return diffusion.training_losses(module, target, t, inputs)

    def step() -> None:
        optimiser.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            value = loss()
        scaler.scale(value).backward()
        scaler.step(optimiser)
        scaler.update()

    return step


def _time(step: Callable[[], None], device: torch.device) -> tuple[float, int]:
    """Seconds per step, and the number of steps timed (after a warm-up step on CUDA)."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    if device.type == "cuda":  # kernel selection and allocator; CPU steps are seconds long
        step()
        sync()
    steps, start = 0, time.perf_counter()
    while steps < MIN_STEPS or time.perf_counter() - start < SECONDS_PER_CASE:
        step()
        steps += 1
        sync()
    return (time.perf_counter() - start) / steps, steps


def run(device: torch.device, sizes: tuple[int, ...], amp: bool) -> None:
    torch.manual_seed(0)
    precision = "fp16 autocast, channels_last" if amp else "fp32"
    print(f"device {device} ({precision}), batch {BATCH}, forward+backward+Adam per step")
    print(f"{'model':<24} {'params':>11} {'px':>4} {'ms/step':>9} {'samples/s':>10} {'steps':>6}")
    for label, module, kind in _cases(ModelConfig()):
        module = module.to(device)
        if device.type == "cuda":
            module = module.to(memory_format=torch.channels_last)
        module.train()
        for size in sizes:
            seconds, steps = _time(_step_fn(module, kind, size, device, amp), device)
            print(
                f"{label:<24} {count_parameters(module):>11,} {size:>4} {seconds * 1e3:>9.1f} "
                f"{BATCH / seconds:>10.1f} {steps:>6}",
                flush=True,
            )
    print()


def main() -> None:
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"torch {torch.__version__}, {torch.get_num_threads()} CPU threads, load average {load}")
    run(torch.device("cpu"), CPU_SIZES, amp=False)
    if torch.cuda.is_available():
        print(torch.cuda.get_device_name())
        run(torch.device("cuda"), GPU_SIZES, amp=True)


if __name__ == "__main__":
    main()
