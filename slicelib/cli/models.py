"""``slicelib models``: parameter counts of every component, counted on the built modules."""

from __future__ import annotations

import argparse
import json

from slicelib.cli.types import add_preset_option
from slicelib.config import USER_PRESET, get_preset


def register(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = sub.add_parser(
        "models",
        help="parameter counts of every model component",
        description=(
            "Print the trainable parameters of every generator, discriminator and denoiser, "
            "counted on freshly built modules. Besides the five models: the CNN with "
            "two-conv blocks (cnn_two_conv) and the U-Net's parts (unet_parts)."
        ),
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    add_preset_option(parser, "use this preset's model settings", USER_PRESET)
    parser.set_defaults(func=handler)
    return parser


def format_table(counts: dict[str, dict[str, int]]) -> str:
    """Rows of model, component and parameters, thousands separated."""
    rows = [(model, part, f"{n:,}") for model, parts in counts.items() for part, n in parts.items()]
    header = ("model", "component", "parameters")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(3)]
    lines = [f"{a:<{widths[0]}}  {b:<{widths[1]}}  {c:>{widths[2]}}" for a, b, c in [header, *rows]]
    return "\n".join(lines)


def handler(args: argparse.Namespace) -> int:
    from slicelib.models import parameter_counts

    cfg = get_preset(args.preset).model
    counts = parameter_counts(cfg, variants=True)
    print(json.dumps(counts, indent=2) if args.json else format_table(counts))
    return 0
