"""``slicelib verify``: check that a study's executed notebooks reproduce."""

from __future__ import annotations

import argparse

from slicelib.cli.types import path_arg, positive_int


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "verify",
        help="re-execute a study's notebooks in a fresh workspace and compare their outputs",
        description=(
            "Copy the executed notebooks of STUDY (its notebooks/ folder) into a fresh "
            "workspace, run them again with pytest --nbval (same preset, same seeds) and "
            "compare every text output with the stored one, after the sanitizer "
            ".nbval-sanitize.cfg (cells tagged nbval-ignore-output run without being "
            "compared). Fails naming the notebook and the cell that differ."
        ),
    )
    parser.add_argument("study", type=path_arg, metavar="STUDY", help="a study folder")
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NOTEBOOK",
        help="check only this notebook (repeatable; e.g. data, train_unet_k1)",
    )
    parser.add_argument(
        "--fresh",
        type=path_arg,
        default=None,
        metavar="DIR",
        help="the fresh workspace (default: STUDY-verify, replaced by each check)",
    )
    parser.add_argument(
        "--source", type=path_arg, default=None, metavar="DIR", help="the checkout (default: found)"
    )
    parser.add_argument(
        "--cell-timeout",
        type=positive_int(),
        default=None,
        metavar="SECONDS",
        help=(
            "nbval's limit on one cell (default: sized to the study's preset, hours for "
            "paper, and to the longest notebook the study recorded)"
        ),
    )
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    from slicelib.cli.study import require_study_extra

    require_study_extra("slicelib verify")
    from slicelib.study.verify import verify_study

    return verify_study(
        args.study, args.only or None, args.fresh, args.source, timeout_s=args.cell_timeout
    )
