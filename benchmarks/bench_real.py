"""The real arm's budget curve beyond what `make study` trains, on the repository's IXI T1.

The study's real arm (the `real` preset) trains the U-Net and the motion-compensated CNN
at budgets that fit `make study` on two CPU cores; this benchmark trains the same recipe
for more epochs (by default up to twice the U-Net's and the motion-compensated CNN's
study budgets) and prints, per run, its training samples, wall time and test PSNR gain
over linear interpolation with the 95 % interval over test subjects, beside the
reference levels (least-squares 9 x 9 filter, optical flow, 8 x 8 tile oracle) and the
sentence the chapter would write.

Environment variables: ``BENCH_REAL_DIR`` keeps the arm's workspace there (default: a
temporary folder; a folder from an earlier run of this benchmark is resumed, its runs
reused); ``BENCH_REAL_BUDGETS`` the epoch counts per model, as
``unet=2,4,8,16,32;mcnet=2,4,8,16,26,52`` (the default); ``BENCH_REAL_K`` the k (1).
Never point ``BENCH_REAL_DIR`` at a study's own ``real`` folder: the budget curve's
results there would no longer be the ones its book shows.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from pathlib import Path

from slicelib.config import REAL
from slicelib.study import analysis
from slicelib.study.config import real_data_root, study_config
from slicelib.study.workspace import Study

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_BUDGETS = "unet=2,4,8,16,32;mcnet=2,4,8,16,26,52"


def parse_budgets(text: str) -> dict[str, tuple[int, ...]]:
    """``"unet=2,4;mcnet=2"`` -> ``{"unet": (2, 4), "mcnet": (2,)}``."""
    budgets = {}
    for part in filter(None, (p.strip() for p in text.split(";"))):
        model, _, counts = part.partition("=")
        budgets[model.strip()] = tuple(int(c) for c in counts.split(","))
    return budgets


def run(out_dir: Path, budgets: dict[str, tuple[int, ...]], k: int) -> None:
    data = real_data_root(ROOT)
    if data is None:
        raise SystemExit(f"bench_real: no IXI data under {ROOT}")
    config = dataclasses.replace(study_config("real"), budgets=budgets, budget_k=k)
    study = Study(REAL, out_dir, data, device="cpu", config=config)
    start = time.perf_counter()
    rows = study.budget_results()
    print(f"budget curve, k={k}: {time.perf_counter() - start:.1f} s (runs reused where made)")
    curve = analysis.budget_curve(rows, study.preset.eval)
    head = analysis.headroom_numbers(analysis.headroom_results(study))
    flow = analysis.gain_numbers([study.results(k)])
    references = {
        "least-squares 9x9 filter": head[f"real_headroom_ls_filter_k{k}"],
        "optical flow": flow[f"real_k{k}_flow_gain"],
        "8x8 tile oracle": head[f"real_headroom_oracle_tile_k{k}"],
    }
    for name, level in references.items():
        print(f"  reference {name:<26} {level:+.3f} dB")
    for r in curve.to_dict("records"):
        print(
            f"  {r['run']:<16} {r['samples']:>7,} samples {r['seconds']:>7.1f} s  "
            f"gain over linear {r['gain']:+.3f} dB [{r['lo']:+.3f}, {r['hi']:+.3f}] "
            f"({r['subjects']} subjects)"
        )
    print(analysis.budget_sentence(rows, curve, references, study.preset.eval))


def main(argv: list[str] | None = None) -> None:
    budgets = parse_budgets(os.environ.get("BENCH_REAL_BUDGETS", DEFAULT_BUDGETS))
    k = int(os.environ.get("BENCH_REAL_K", "1"))
    kept = os.environ.get("BENCH_REAL_DIR")
    if kept:
        run(Path(kept), budgets, k)
        return
    with tempfile.TemporaryDirectory(prefix="bench-real-") as tmp:
        run(Path(tmp), budgets, k)


if __name__ == "__main__":
    main()
