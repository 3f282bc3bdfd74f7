"""``slicelib upsample``: a series with a synthesized slice between every acquired pair.

Output folder layout (written to a temporary folder beside it, then renamed):

- DICOM input: ``OUTPUT_DIR/interpolated/`` (the 2n-1 slice series), with
  ``--uncertainty`` also ``OUTPUT_DIR/uncertainty/`` (the std map series);
- NIfTI input: ``OUTPUT_DIR/<name>_x2.nii.gz`` (and ``<name>_x2_std.nii.gz``);
- ``OUTPUT_DIR/upsample.json``: what was done, with which checkpoint, how long, and
  how the input differs from the checkpoint's training domain;
- ``OUTPUT_DIR/.slicelib-output``: the marker (kind ``upsampled series``) that lets
  ``--force`` replace the folder, and only this kind of folder.

INPUT_SERIES may be a series on a DICOMweb server, named by its WADO-RS URL
(``http(s)://HOST[:PORT]/PREFIX/studies/STUDY_UID/series/SERIES_UID``), and
``--store-dicomweb URL`` stores the derived series on a DICOMweb server (STOW-RS) once
they are written and checked (:mod:`slicelib.upsample.pacs`; the ``pacs`` extra).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import get_args

from slicelib.cli.scan import add_size_caps, size_caps
from slicelib.cli.types import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_SEED,
    bounded_float,
    bounded_int,
    non_negative_int,
    path_arg,
    positive_int,
    source_arg,
)
from slicelib.config import FACTOR, NEIGHBOUR_RANGE_TOL, CpuPrecision, UpsampleConfig
from slicelib.errors import SlicelibError
from slicelib.model_card import DOMAIN_REL_TOL
from slicelib.upsample.dicomweb import (
    DEFAULT_TIMEOUT_S,
    ENV_PASSWORD,
    ENV_TOKEN,
    ENV_USER,
    SERIES_URL_FORM,
    is_dicomweb_url,
)
from slicelib.upsample.folder import CLASSICAL_METHODS, IMAGE_FOLDER

# Only x2 is supported; a larger factor is parsed (and refused with its reason)
# up to this bound, beyond which it is a typo.
MAX_FACTOR = 16
# A day: beyond that a timeout is a typo.
MAX_TIMEOUT_S = 86_400.0


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    defaults = UpsampleConfig()
    parser = sub.add_parser(
        "upsample",
        help="x2 through-plane upsampling of one series into a new, labelled series",
        description=(
            "Insert a slice predicted by a trained model between every pair of acquired "
            "slices (2n-1 slices from n). Acquired slices are kept unchanged; synthesized "
            "ones are labelled as such. DICOM in: a new DERIVED series in "
            f"OUTPUT_DIR/{IMAGE_FOLDER}; NIfTI in: OUTPUT_DIR/<name>_x2.nii.gz. A series on "
            f"a DICOMweb server is named by its URL, {SERIES_URL_FORM}; --store-dicomweb "
            "stores the derived series on a server once written and checked. Credentials: "
            f"user:password@ in the URL, {ENV_USER} and {ENV_PASSWORD} (or {ENV_TOKEN}), "
            "or ~/.netrc. Two checks warn (one line each, recorded in "
            "OUTPUT_DIR/upsample.json) and write the series all the same. The training "
            "domain: the neighbour distance (a model trained at k on slices s mm apart "
            "learned to fill a gap of 2k*s mm, so the input's slices should lie that far "
            "apart) and the pixel size more than "
            f"{DOMAIN_REL_TOL * 100:.0f} % outside the checkpoint's training range, or "
            "another matrix, modality or sequence. The predictions: a predicted slice "
            "whose mean, or 1st or 99th percentile before clipping, lies more than "
            f"{NEIGHBOUR_RANGE_TOL * 100:.0f} % of the series' intensity range outside what "
            "its two neighbours span (a saturated or collapsed prediction, e.g. from a "
            "damaged checkpoint). NaN or infinite predictions or weights are refused."
        ),
    )
    parser.add_argument(
        "input", type=source_arg, metavar="INPUT_SERIES",
        help=f"DICOM folder, NIfTI file, or a series on a DICOMweb server: {SERIES_URL_FORM}",
    )  # fmt: skip
    parser.add_argument("output", type=path_arg, metavar="OUTPUT_DIR", help="folder to create")
    model = parser.add_mutually_exclusive_group(required=True)
    model.add_argument(
        "--checkpoint", type=path_arg, metavar="CKPT",
        help="a run folder (its best.pt) or a checkpoint file",
    )  # fmt: skip
    model.add_argument(
        "--method", choices=CLASSICAL_METHODS,
        help="a classical method instead of a trained model, at the full matrix: linear, "
        "cubic (through four acquired slices) or flow (optical flow, both neighbours "
        "warped half-way; the best classical method on the real anatomy of the book)",
    )  # fmt: skip
    parser.add_argument(
        "--factor",
        type=bounded_int(1, MAX_FACTOR),
        default=FACTOR,
        help=f"through-plane factor ({FACTOR})",
    )
    parser.add_argument(
        "--force", action="store_true",
        help="replace an OUTPUT_DIR that slicelib wrote before (never any other folder)",
    )  # fmt: skip
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    parser.add_argument(
        "--slice-axis", type=int, choices=(0, 1, 2), default=None,
        help="NIfTI only: the through-plane voxel axis (default: from the header's dim_info, "
        "else the axis of largest spacing, else the third axis)",
    )  # fmt: skip
    parser.add_argument(
        "--batch-size", type=positive_int(MAX_BATCH), default=defaults.batch_size,
        help=f"slice pairs per forward pass (default {defaults.batch_size})",
    )  # fmt: skip
    parser.add_argument(
        "--uncertainty", action="store_true",
        help="also write the per-pixel standard deviation as a separate derived series "
        "(MC dropout when the checkpoint has dropout, else a deep ensemble: --ensemble)",
    )  # fmt: skip
    parser.add_argument(
        "--mc-samples", type=bounded_int(2, MAX_COUNT), default=None,
        help=f"MC dropout passes (default {defaults.mc_samples})",
    )  # fmt: skip
    parser.add_argument(
        "--ensemble", type=path_arg, nargs="+", metavar="CKPT", default=None,
        help="further checkpoints of the same task: the std across them and CKPT",
    )  # fmt: skip
    parser.add_argument(
        "--ddim-steps", type=positive_int(MAX_COUNT), default=defaults.ddim_steps,
        help=f"DDPM checkpoints: deterministic DDIM steps (default {defaults.ddim_steps})",
    )  # fmt: skip
    parser.add_argument(
        "--seed", type=non_negative_int(MAX_SEED), default=defaults.seed,
        help="seed of any sampling",
    )  # fmt: skip
    add_size_caps(parser)
    parser.add_argument(
        "--cpu-precision", choices=get_args(CpuPrecision), default=defaults.cpu_precision,
        help="on the CPU: bf16 (auto: where the CPU has AMX/AVX512-BF16) or fp32 "
        f"(default {defaults.cpu_precision})",
    )  # fmt: skip
    parser.add_argument(
        "--store-dicomweb", metavar="URL", default=None,
        help="store the derived series (and the uncertainty series) on this DICOMweb server "
        "(base URL, e.g. http://pacs:8042/dicom-web) with STOW-RS, unless it holds them "
        "already; DICOM input only",
    )  # fmt: skip
    parser.add_argument(
        "--dicomweb-timeout", metavar="SECONDS", default=None,
        type=bounded_float(0.0, MAX_TIMEOUT_S, lo_open=True),
        help=f"seconds to wait for a DICOMweb server's answer (default {DEFAULT_TIMEOUT_S:g})",
    )  # fmt: skip
    parser.set_defaults(func=handler)
    return parser


def handler(args: argparse.Namespace) -> int:
    from slicelib.device import resolve_device
    from slicelib.inference import set_inference_threads
    from slicelib.upsample.folder import upsample_to_folder

    resolve_device(args.device)
    set_inference_threads()
    cfg = UpsampleConfig(
        batch_size=args.batch_size, ddim_steps=args.ddim_steps, seed=args.seed,
        cpu_precision=args.cpu_precision,
    )  # fmt: skip
    options = dict(
        method=args.method,
        factor=args.factor,
        device=args.device,
        uncertainty=args.uncertainty,
        mc_samples=args.mc_samples,
        ensemble=args.ensemble or (),
        cfg=cfg,
        progress=not args.quiet,
        slice_axis=args.slice_axis,
        **size_caps(args),
    )
    started = time.perf_counter()
    remote = is_dicomweb_url(args.input) or args.store_dicomweb is not None
    if args.dicomweb_timeout is not None and not remote:
        raise SlicelibError("--dicomweb-timeout needs a DICOMweb input or --store-dicomweb")
    if remote:
        from slicelib.upsample.pacs import upsample_with_dicomweb

        result = upsample_with_dicomweb(
            args.input,
            args.output,
            args.checkpoint,
            store=args.store_dicomweb,
            timeout=args.dicomweb_timeout or DEFAULT_TIMEOUT_S,
            force=args.force,
            **options,
        )
        report = result.upsample
    else:
        report = upsample_to_folder(
            Path(args.input).expanduser(), args.output, args.checkpoint, force=args.force, **options
        )
        result = None
    for kind, paths in report.files.items():
        where = paths[0].parent if len(paths) > 1 else paths[0]
        print(f"{kind}: {where} ({report.slices_out} slices from {report.slices_in})")
    if result is not None and result.server is not None:
        for item in result.stored:
            what = f"{item.sent} instances stored" if item.sent else "already there, nothing stored"
            print(f"{item.kind}: series {item.series} on {result.server} ({what})")
    print(f"done in {time.perf_counter() - started:.1f} s")
    return 0
