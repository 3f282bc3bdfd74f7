"""Synthetic cohort: seconds per patient at the demo matrix, and the difficulty it has.

Writes a few demo-preset patients (320x320, 40 slices, distractors included) to a
temporary folder, then prepares them at 256 and 128 (plain min-max, bilinear
antialiased resize) and scores linear interpolation as the original's test did.
Calibration targets at 256: k=1 SSIM 0.838 / PSNR 27.31 dB (the original),
accepted 0.78-0.88 / 25-30 dB; k=2 SSIM 0.50-0.70.
"""

from __future__ import annotations

import dataclasses
import tempfile
import time
from pathlib import Path

import numpy as np

from slicelib.config import DEMO
from slicelib.data.dicom import load_series
from slicelib.data.preprocess import preprocess_volume
from slicelib.data.synthetic import cohort_difficulty, write_demo_cohort

PATIENTS = 4


def main() -> None:
    cfg = dataclasses.replace(DEMO.cohort, patients=PATIENTS)
    with tempfile.TemporaryDirectory() as tmp:
        wall, cpu = time.perf_counter(), time.process_time()
        folders = write_demo_cohort(Path(tmp) / "cohort", cfg)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        n_files = sum(1 for _ in (Path(tmp) / "cohort").rglob("*.dcm"))
        print(
            f"demo cohort, {cfg.matrix}x{cfg.matrix} x {cfg.slices} slices + distractors: "
            f"{wall / PATIENTS:.2f} s/patient wall, {cpu / PATIENTS:.2f} s/patient CPU "
            f"({n_files} files, {PATIENTS} patients); "
            f"{DEMO.cohort.patients} patients: ~{wall / PATIENTS * DEMO.cohort.patients:.0f} s"
        )
        volumes = [load_series(folder) for folder in folders]
    for size in (256, 128):
        prepared = [preprocess_volume(v.pixels, v.pixel_spacing, size)[0] for v in volumes]
        start = time.perf_counter()
        result = cohort_difficulty(prepared)
        print(
            f"linear interpolation at {size}: k=1 PSNR {result['k1_psnr']:.2f} dB, "
            f"SSIM {result['k1_ssim']:.3f}; k=2 PSNR {result['k2_psnr']:.2f} dB, "
            f"SSIM {result['k2_ssim']:.3f} ({int(result['slices'])} slices, "
            f"{time.perf_counter() - start:.1f} s)"
        )
    per_patient = [cohort_difficulty([p])["k1_ssim"] for p in prepared]
    print(f"k=1 SSIM per patient at 128: {np.round(per_patient, 3).tolist()}")


if __name__ == "__main__":
    main()
