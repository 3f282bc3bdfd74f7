"""``slicelib evaluate``: score classical methods and trained runs on a cache's test split
(or on every patient of it, ``--split all``)."""

from __future__ import annotations

import argparse

from slicelib.cli.types import (
    MAX_BATCH,
    MAX_COUNT,
    MAX_K,
    MAX_SEED,
    add_preset_option,
    non_negative_int,
    path_arg,
    positive_int,
)
from slicelib.config import EVAL_SPLITS, USER_PRESET, EvalConfig, get_preset, given, replace_checked


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    parser = sub.add_parser(
        "evaluate",
        help="score methods on a cache's test split (or --split all): per-slice CSV and a summary",
        description=(
            "Run each classical method and each trained run (best.pt) on the test split of "
            "a prepared cache (--split: another split, or all of its patients, e.g. a cohort "
            "prepared to test a model on) at neighbour distance k; write one row per method "
            "and slice to RESULTS.csv, the summary to RESULTS_summary.csv, the configuration and "
            "environment to RESULTS.json (and the DDPM's per-pixel standard deviations to "
            "RESULTS.std.npz), and print the summary."
        ),
    )
    parser.add_argument("--cache", type=path_arg, required=True, help="prepared cache directory")
    parser.add_argument(
        "--k", type=positive_int(MAX_K), required=True, help=f"neighbour distance (1..{MAX_K})"
    )
    parser.add_argument("--out", type=path_arg, required=True, help="per-slice results (.csv)")
    parser.add_argument(
        "--methods",
        nargs="+",
        metavar="M",
        help="classical methods among nearest, linear, cubic, flow (default: all; linear is "
        "always added as the reference)",
    )
    parser.add_argument(
        "--run",
        dest="runs",
        type=path_arg,
        action="append",
        default=[],
        metavar="RUN_DIR",
        help="a training run folder with best.pt (repeatable)",
    )
    add_preset_option(parser, "take the evaluation defaults from this preset", USER_PRESET)
    parser.add_argument(
        "--common",
        action="store_true",
        default=None,
        help="only slices where k=1 and k=2 are both evaluable",
    )
    parser.add_argument(
        "--split",
        choices=EVAL_SPLITS,
        help="the patients scored: a split of the cache, or all (default: test)",
    )
    parser.add_argument(
        "--slices-per-patient",
        type=int,
        metavar="N",
        help="score at most N evenly spaced slices of each patient (default: all)",
    )
    parser.add_argument("--device", help="auto, cpu, cuda or cuda:N for trained runs")
    parser.add_argument(
        "--ddim-steps",
        type=positive_int(MAX_COUNT),
        nargs="+",
        metavar="S",
        help="DDIM step counts for the DDPM",
    )
    parser.add_argument(
        "--ddpm-samples", type=positive_int(MAX_COUNT), metavar="N", help="samples averaged (DDPM)"
    )
    parser.add_argument(
        "--ddpm-max-slices",
        type=positive_int(MAX_COUNT),
        metavar="N",
        help="evaluate the DDPM on N evenly spaced test slices only",
    )
    parser.add_argument("--flow", choices=("tvl1", "ilk"), help="optical flow of 'flow'")
    parser.add_argument(
        "--batch-size", type=positive_int(MAX_BATCH), help="slices per forward pass of a run"
    )
    parser.add_argument(
        "--seed",
        type=non_negative_int(MAX_SEED),
        help="seed of the DDPM samplers and the Monte Carlo sign-flip test",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(func=handler)
    return parser


def eval_config(args: argparse.Namespace) -> EvalConfig:
    """The preset's EvalConfig with the options given on the command line."""
    base = get_preset(args.preset).eval
    overrides = given(
        common=args.common,
        split=args.split,
        slices_per_patient=args.slices_per_patient,
        device=args.device,
        ddim_steps=tuple(args.ddim_steps) if args.ddim_steps else None,
        ddpm_samples=args.ddpm_samples,
        ddpm_max_slices=args.ddpm_max_slices,
        flow=None if args.flow is None else replace_checked(base.flow, method=args.flow),
        batch_size=args.batch_size,
        seed=args.seed,
        methods=tuple(args.methods) if args.methods else None,
    )
    return replace_checked(base, **overrides)


def handler(args: argparse.Namespace) -> int:
    from slicelib.evaluate import evaluate, format_summary

    cfg = eval_config(args)
    result = evaluate(args.cache, args.k, cfg, args.runs, progress=not args.no_progress)
    written = result.save(args.out)
    info = result.info
    print(
        f"scored: the {info['split']} split"
        if info["split"] != "all"
        else "scored: every patient of the cache (--split all)",
        f"({info['n_patients']} patients, {info['n_slices']} slices, k={info['k']})",
    )
    print(format_summary(result.summary))
    print(f"devices: {', '.join(sorted(set(result.summary['device'])))}")
    for path in written.values():
        print(f"wrote {path}")
    return 0
