"""``slicelib study``: run the whole study and build the book."""

from __future__ import annotations

import argparse
import importlib.util
import shlex
import sys
from typing import Any

from slicelib.cli.types import add_preset_option, path_arg
from slicelib.config import DEMO_PRESET
from slicelib.errors import SlicelibError


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "study",
        help="run every notebook of the study (resumable) and build the book",
        description=(
            "Generate the demo cohort (without --data-root), prepare the cache, run every "
            "notebook with papermill into OUT/notebooks (the train notebook once per model "
            "and k), record the environment and build the book offline in strict mode. "
            "Steps and notebooks whose inputs did not change are not run again."
        ),
    )
    add_preset_option(
        parser,
        "demo: 2 CPU cores, minutes; paper: GPU; real: the real arm alone; smoke: seconds",
        DEMO_PRESET,
    )
    parser.add_argument(
        "--data-root",
        type=path_arg,
        default=None,
        metavar="DIR",
        help="a DICOM (or NIfTI) collection; default: generate the synthetic demo cohort",
    )
    parser.add_argument(
        "--out",
        type=path_arg,
        default="study",
        metavar="DIR",
        help="the study's workspace (default: study)",
    )
    parser.add_argument(
        "--book",
        type=path_arg,
        default="_build/html",
        metavar="DIR",
        help="where the built book goes (default: _build/html)",
    )
    parser.add_argument("--no-book", action="store_true", help="run the notebooks only")
    parser.add_argument(
        "--no-real",
        action="store_true",
        help="leave out the real-anatomy arm (IXI T1 in data/) and its chapter",
    )
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        metavar="NOTEBOOK",
        help="run only this notebook (repeatable; e.g. data, train_unet_k1); no book",
    )
    parser.add_argument(
        "--device", default="auto", help="auto, cpu or cuda for the notebooks that compute"
    )
    parser.add_argument(
        "--set",
        dest="assignments",
        action="append",
        default=[],
        metavar="[NOTEBOOK.]NAME=VALUE",
        help="set a notebook parameter (YAML value), e.g. --set ddpm_analysis.samples=8",
    )
    parser.add_argument(
        "--source",
        type=path_arg,
        default=None,
        metavar="DIR",
        help="the checkout with notebooks/, book/, _config.yml, _toc.yml (default: found)",
    )
    parser.set_defaults(func=handler)
    return parser


# The packages of the study's extra (`pip install 'slicelib[study]'`), by import name.
STUDY_PACKAGES: tuple[str, ...] = (
    "papermill", "ipykernel", "myst_nb", "matplotlib", "yaml", "jupyter_book",
)  # fmt: skip


def require_study_extra(command: str) -> None:
    """A one-line error naming what to install when the study's packages are missing."""
    missing = [name for name in STUDY_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise SlicelibError(
            f"{command} needs the study's packages ({', '.join(missing)} not installed): "
            "pip install 'slicelib[study]'"
        )


def handler(args: argparse.Namespace) -> int:
    require_study_extra("slicelib study")
    from slicelib.study.runner import run_study

    overrides: dict[str | None, dict[str, Any]] = {}
    for text in args.assignments:
        from slicelib.study.notebooks import parse_assignment

        notebook, name, value = parse_assignment(text)
        overrides.setdefault(notebook, {})[name] = value
    run_study(
        args.preset,
        args.out,
        args.data_root,
        None if args.no_book else args.book,
        source_root=args.source,
        overrides=overrides,
        only=args.only or None,
        device=args.device,
        command=shlex.join(["slicelib", *sys.argv[1:]]) if "study" in sys.argv[1:] else None,
        progress=sys.stderr.isatty(),
        real=not args.no_real,
    )
    return 0
