"""``slicelib demo-data OUT [--patients N] [--seed S] [--preset NAME] [--force]``.

Writes the synthetic demo cohort (DICOM in the TCIA layout) into a temporary
folder beside OUT, then renames it to OUT, so an interrupted run leaves nothing
half-written (and the next run removes what a killed one left). Refuses a non-empty
OUT unless ``--force``, and even then one that slicelib did not write as a cohort
(:func:`slicelib.outputs.check_output`).
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

from slicelib.cli.types import (
    MAX_COUNT,
    MAX_SEED,
    add_preset_option,
    non_negative_int,
    path_arg,
    positive_int,
)
from slicelib.config import DEMO_PRESET, CohortConfig, get_preset, given, replace_checked

log = logging.getLogger(__name__)


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "demo-data",
        help="write the synthetic T2 axial prostate cohort (DICOM, TCIA layout)",
        description="Write the synthetic demo cohort: one Siemens 3 T T2 axial series per "
        "patient plus the distractor series the scan must reject, as DICOM in the TCIA "
        "layout with a metadata.csv. Deterministic for a seed. Unset options come from the "
        "preset (default: demo).",
    )
    parser.add_argument("out", type=path_arg, metavar="OUT", help="folder to create")
    parser.add_argument(
        "--patients",
        type=positive_int(MAX_COUNT),
        default=None,
        help=f"number of patients (default: the preset's; demo {CohortConfig.patients})",
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int(MAX_SEED),
        default=None,
        help=f"random seed of the whole cohort (default: the preset's; demo {CohortConfig.seed})",
    )
    add_preset_option(parser, "cohort size settings to start from", DEMO_PRESET)
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace an OUT that slicelib wrote as a cohort before (never any other folder)",
    )
    parser.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from slicelib.data.synthetic import validate_cohort_config, write_demo_cohort
    from slicelib.io import atomic_directory
    from slicelib.outputs import check_output, writing

    changes = given(patients=args.patients, seed=args.seed)
    cfg = replace_checked(get_preset(args.preset).cohort, **changes)
    validate_cohort_config(cfg)
    out = Path(args.out).expanduser().absolute()
    check_output(out, "cohort", force=args.force)

    start = time.perf_counter()
    with writing(out, "cohort"):
        check_output(out, "cohort", force=args.force)  # again, now that no one else writes
        with atomic_directory(out, kind="cohort") as tmp:
            write_demo_cohort(tmp, cfg, progress=not args.no_progress)
            files = sum(1 for _ in tmp.rglob("*.dcm"))
            series = len({p.parent for p in tmp.rglob("*.dcm")})
    log.info(
        "wrote %s: %d patients, %d series, %d DICOM files in %.1f s (seed %d, %dx%d, %d slices)",
        out,
        cfg.patients,
        series,
        files,
        time.perf_counter() - start,
        cfg.seed,
        cfg.matrix,
        cfg.matrix,
        cfg.slices,
    )
    return 0
