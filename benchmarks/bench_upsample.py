"""Upsampling a 60-slice 256x256 DICOM series x2: seconds, with and without uncertainty.

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

from slicelib.config import ModelConfig, UpsampleConfig
from slicelib.data.dicom import Volume, load_series
from slicelib.models import build_generator
from slicelib.uncertainty import DeepEnsemble, MCDropout
from slicelib.upsample.dicom_writer import Derivation, write_dicom_series
from slicelib.upsample.volume import Upsampled, decimate, upsample_volume

SLICES = 60
SIZE = 256
CPU_UNCERTAIN_PAIRS = 1  # pairs measured with uncertainty on the CPU, then projected


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


def run(device: torch.device, root: Path, cfg: UpsampleConfig) -> None:
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    torch.manual_seed(0)
    unet = build_generator("unet", ModelConfig()).to(device).eval()
    dropout_unet = build_generator("unet", ModelConfig(dropout=0.1)).to(device).eval()
    second = build_generator("unet", ModelConfig()).to(device).eval()
    predict = _predictor(unet, device)
    seconds_read, loaded = _timed(lambda: load_series(root / "series"), sync)
    volume = cast(Volume, loaded)
    upsample_volume(decimate(volume, 30), predict, SIZE)  # warm-up (2 slices)

    t_predict, result = _timed(lambda: upsample_volume(volume, predict, SIZE), sync)
    up = cast(Upsampled, result)
    out = root / f"out_{device.type}"
    derivation = Derivation(method="unet (k=1)", checkpoint="(benchmark)")
    t_write, _ = _timed(lambda: write_dicom_series(up, out, derivation, force=True), sync)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    pairs = volume.n_slices - 1
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
        "deep ensemble of 2": DeepEnsemble([predict, _predictor(second, device)]),
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
