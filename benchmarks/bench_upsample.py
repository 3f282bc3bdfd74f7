"""Upsampling a 60-slice 256x256 DICOM series x2: seconds, with and without uncertainty.

Prediction runs twice per round, interleaved (the machine may be shared: the load
drifts), for :data:`ROUNDS` rounds: "before" with the former settings (float32,
contiguous layout, no_grad) and "after" with :mod:`slicelib.inference`'s (bfloat16
autocast and channels_last on CPUs with AMX/AVX512-BF16, inference mode). It prints
both, the speed-up of the medians, the largest difference of the new slices, the
forward pass's FLOPs against the CPU's measured matmul rate, and the load average.

End to end as ``slicelib upsample`` runs it, phase by phase: reading the series,
predicting the 59 new slices with the paper's U-Net (freshly built: inference
cost does not depend on the weights), and writing the 119-slice derived series.
With uncertainty (MC dropout with the default number of passes, and a deep
ensemble of two U-Nets) the prediction is measured on the first pairs only on
the CPU and projected to the 59 pairs (cost is linear in pairs); on CUDA the
whole series is run.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pydicom
import torch
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from scipy.ndimage import gaussian_filter
from torch.utils.flop_counter import FlopCounterMode

from slicelib.config import ModelConfig, UpsampleConfig
from slicelib.data.dicom import Volume, load_series
from slicelib.inference import (
    as_model_input,
    inference_autocast,
    prepare_for_inference,
    set_inference_threads,
    use_cpu_bf16,
)
from slicelib.models import build_generator
from slicelib.uncertainty import DeepEnsemble, MCDropout
from slicelib.upsample.dicom_writer import Derivation, write_dicom_series
from slicelib.upsample.volume import Upsampled, decimate, upsample_volume

SLICES = 60
SIZE = 256
CPU_UNCERTAIN_PAIRS = 1  # pairs measured with uncertainty on the CPU, then projected
ROUNDS = 2  # interleaved before/after prediction runs


def write_series(folder: Path, slices: int = SLICES, size: int = SIZE) -> None:
    """A smooth random axial MR series, unsigned 12-bit, 1.5 mm spacing."""
    rng = np.random.default_rng(0)
    vol = gaussian_filter(rng.standard_normal((slices, size, size)), sigma=(1.5, 6.0, 6.0))
    vol = (vol - vol.min()) / (vol.max() - vol.min()) * 4000
    series, study, frame = generate_uid(), generate_uid(), generate_uid()
    folder.mkdir(parents=True)
    for s in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientID, ds.Modality, ds.SeriesDescription = "BENCH", "MR", "t2_tse_tra"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.SeriesNumber, ds.InstanceNumber = 3, s + 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "OTHER"]
        ds.ImagePositionPatient = [-100.0, -100.0, 1.5 * s]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing, ds.SliceThickness, ds.SliceLocation = [0.7, 0.7], 1.5, 1.5 * s
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = vol[s].astype(np.uint16).tobytes()
        ds.save_as(folder / f"{s:04d}.dcm", enforce_file_format=True)


def _timed(fn: Callable[[], object], sync: Callable[[], None]) -> tuple[float, object]:
    sync()
    start = time.perf_counter()
    out = fn()
    sync()
    return time.perf_counter() - start, out


def _predictor(
    model: torch.nn.Module, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(x.to(device)).clamp(0, 1).cpu()

    return predict


def _fast_predictor(
    model: torch.nn.Module, device: torch.device
) -> Callable[[torch.Tensor], torch.Tensor]:
    """The new settings, as :class:`slicelib.interpolator.Predictor` applies them."""
    bf16 = use_cpu_bf16(device, UpsampleConfig().cpu_precision)
    prepare_for_inference(model, device, bf16)

    def predict(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), inference_autocast(device, "fp32", bf16):
            return model(as_model_input(x, device, bf16)).float().clamp(0, 1).cpu()

    return predict


def forward_rate(model: torch.nn.Module, device: torch.device) -> None:
    """GFLOP of one 256-px forward pass against the CPU's matmul rate."""
    x = torch.rand(1, 2, SIZE, SIZE, device=device)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    gflop = counter.get_total_flops() / 1e9
    rates = {}
    for dtype in (torch.float32, torch.bfloat16):
        a = torch.randn(1024, 1024, dtype=dtype)
        a @ a
        start = time.perf_counter()
        for _ in range(4):
            a @ a
        rates[dtype] = 4 * 2 * 1024**3 / (time.perf_counter() - start) / 1e9
    print(
        f"forward pass {gflop:.1f} GFLOP/slice; matmul {rates[torch.float32]:.0f} GFLOP/s fp32, "
        f"{rates[torch.bfloat16]:.0f} bf16 ({torch.get_num_threads()} threads): at least "
        f"{gflop / rates[torch.float32]:.2f} s/slice in fp32, "
        f"{gflop / rates[torch.bfloat16]:.2f} in bf16"
    )


def run(device: torch.device, root: Path, cfg: UpsampleConfig) -> None:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    unet = build_generator("unet", ModelConfig()).to(device).eval()
    last = [m for m in unet.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    with torch.no_grad():  # untrained outputs sit near 0 and clip: move them inside (0, 1)
        last.bias += 0.5  # type: ignore[operator]
    dropout_unet = build_generator("unet", ModelConfig(dropout=0.1)).to(device).eval()
    second = build_generator("unet", ModelConfig()).to(device).eval()
    fast_unet = build_generator("unet", ModelConfig()).to(device)
    fast_unet.load_state_dict(unet.state_dict())
    old, new = _predictor(unet, device), _fast_predictor(fast_unet, device)
    if device.type == "cpu":
        forward_rate(unet, device)
    seconds_read, loaded = _timed(lambda: load_series(root / "series"), sync)
    volume = cast(Volume, loaded)
    pairs = volume.n_slices - 1
    times: dict[str, list[float]] = {"before": [], "after": []}
    outputs: dict[str, Upsampled] = {}
    for predict in (old, new):
        upsample_volume(decimate(volume, 30), predict, SIZE)  # warm-up (2 slices)
    for round_ in range(ROUNDS):
        for label, predict in (("before", old), ("after", new)):
            seconds, result = _timed(lambda p=predict: upsample_volume(volume, p, SIZE), sync)
            times[label].append(seconds)
            outputs[label] = cast(Upsampled, result)
            print(
                f"round {round_ + 1} {label}: predict {seconds:.1f} s "
                f"({1000 * seconds / pairs:.0f} ms/slice); load average "
                f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}",
                flush=True,
            )
    before, after = (float(np.median(times[k])) for k in ("before", "after"))
    diff = np.abs(outputs["after"].pixels - outputs["before"].pixels).max()
    span = float(volume.pixels.max() - volume.pixels.min())
    print(
        f"predict, median of {ROUNDS}: before {before:.1f} s, after {after:.1f} s, "
        f"{before / after:.2f}x faster; largest difference {diff:.2f} units "
        f"({diff / span:.1e} of the series' range)"
    )
    predict, t_predict, up = new, after, outputs["after"]
    out = root / f"out_{device.type}"
    derivation = Derivation(method="unet (k=1)", checkpoint="(benchmark)")
    t_write, _ = _timed(lambda: write_dicom_series(up, out, derivation, force=True), sync)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(
        f"{name}: {volume.n_slices} slices {SIZE}x{SIZE} -> {up.n_slices}: "
        f"read {seconds_read:.2f} s, "
        f"predict {t_predict:.2f} s ({1000 * t_predict / pairs:.0f} ms/slice), "
        f"write {t_write:.2f} s, total {seconds_read + t_predict + t_write:.2f} s"
    )

    measured = pairs if device.type == "cuda" else CPU_UNCERTAIN_PAIRS
    part = volume if measured == pairs else _first(volume, measured + 1)
    estimators = {
        f"MC dropout, {cfg.mc_samples} passes": MCDropout(dropout_unet, cfg.mc_samples),
        "deep ensemble of 2": DeepEnsemble([predict, _fast_predictor(second, device)]),
    }
    for label, estimator in estimators.items():
        seconds, _ = _timed(
            lambda e=estimator: upsample_volume(part, predict, SIZE, uncertainty=e), sync
        )
        per_pair = seconds / measured
        total = seconds_read + per_pair * pairs + 2 * t_write  # image and std series
        how = "measured" if measured == pairs else f"projected from {measured} of {pairs} pairs"
        print(
            f"{name}: with uncertainty ({label}): predict {per_pair * pairs:.1f} s "
            f"({1000 * per_pair:.0f} ms/slice), total {total:.1f} s ({how})"
        )


def _first(volume: Volume, n: int) -> Volume:
    """The first ``n`` slices of ``volume``."""
    return dataclasses.replace(
        volume, pixels=volume.pixels[:n], positions=volume.positions[:n], files=volume.files[:n]
    )


def main() -> None:
    cfg = UpsampleConfig()
    set_inference_threads()  # as slicelib upsample does
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_series(root / "series")
        assert len(list((root / "series").iterdir())) == SLICES
        run(torch.device("cpu"), root, cfg)
        if torch.cuda.is_available():
            run(torch.device("cuda"), root, cfg)
        ds = pydicom.dcmread(sorted((root / "out_cpu").iterdir())[1])
        print(f"check: instance 2 says {ds.ImageComments!r}")


if __name__ == "__main__":
    main()
