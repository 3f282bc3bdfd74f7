"""What the book's reader reads first: a run's findings in a few sentences written from its
numbers (glued by ``results.ipynb`` and ``real_anatomy.ipynb``), the parts of a chapter that
depend on which notebooks ran, and the book's numbered tables.
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd

from slicelib.methods import ANCESTRAL, DETERMINISTIC_MODELS, method_label
from slicelib.stats import MIN_TEST_PATIENTS
from slicelib.study.present import finite, plural, relative_gain_sentence, wall_clock, word_list

if TYPE_CHECKING:
    from slicelib.results import Results

# A block a chapter shows only when the run executed notebook NAME (else the optional
# alternative): <!-- study:if NAME --> ... [<!-- study:else --> ...] <!-- study:end -->
_IF_RAN = re.compile(
    r"<!-- study:if (?P<name>[\w-]+) -->\n?(?P<then>.*?)"
    r"(?:<!-- study:else -->\n?(?P<else>.*?))?<!-- study:end -->\n?",
    re.S,
)


def conditional_markdown(text: str, ran: Collection[str]) -> str:
    """``text`` with each ``study:if`` block resolved by the notebooks that ``ran``."""
    return _IF_RAN.sub(lambda m: m["then"] if m["name"] in ran else (m["else"] or ""), text)


def _db(values: Mapping[str, Any], key: str, low: str, high: str) -> str:
    """``values[key]`` as a change in dB, with the interval ``values[low]``,
    ``values[high]`` when there is one: "+0.07 dB [+0.02, +0.12]"."""
    text = f"{float(values[key]):+.2f} dB"
    low_value, high_value = values.get(low, math.nan), values.get(high, math.nan)
    if finite(low_value) and finite(high_value):
        text += f" [{float(low_value):+.2f}, {float(high_value):+.2f}]"
    return text


def _tested_words(n_patients: int, unit: str = "patient") -> str:
    """Why an interval is missing, or what the brackets are."""
    if n_patients < MIN_TEST_PATIENTS:
        return f"{plural(n_patients, 'test ' + unit)}, too few for an interval"
    return f"95 % intervals over {plural(n_patients, 'test ' + unit)}"


def synthetic_headline(k1: Results, k_gains: Mapping[str, float], cohort: str) -> str:
    """Three sentences on what a run found on its ``cohort`` ("the synthetic cohort"): the
    networks against linear interpolation at k=1, k=1 against k=2 (``k_gains``: the mean
    over patients of the SSIM gain of k=1 over k=2 in %, on the common slices, of
    ``networks``, the deterministic models, and ``linear``), and the DDPM."""
    rows = {m: k1.row(m) for m in k1.methods}
    linear = rows["linear"]
    nets = [m for m in (*DETERMINISTIC_MODELS, "mcnet") if m in rows]
    n = int(linear["n_patients"])
    parts: list[str] = []
    if nets:
        best = max(nets, key=lambda m: float(rows[m]["psnr_gain_db"]))
        others = sorted(float(rows[m]["psnr_gain_db"]) for m in nets if m != best)
        gain = _db(rows[best], "psnr_gain_db", "psnr_gain_ci_low", "psnr_gain_ci_high")
        rest = ""
        if others:
            rest = f", and the other {plural(len(others), 'network')} by {others[0]:+.2f}"
            rest += f" to {others[-1]:+.2f} dB" if len(others) > 1 else " dB"
        parts.append(
            f"On {cohort} at k=1, linear interpolation reaches "
            f"{float(linear['psnr_mean']):.2f} dB PSNR; the best network, the "
            f"{method_label(best)}, changes it by {gain}{rest} "
            f"({_tested_words(n)})."
        )
    networks, lin = k_gains.get("networks", math.nan), k_gains.get("linear", math.nan)
    if finite(networks) and finite(lin):
        wider = networks - lin
        gap = f"widen the data's own gap by {wider:.1f} points"
        if wider <= 0:
            gap = f"do not widen the data's own gap ({wider:+.1f} points)"
        parts.append(
            "On the same slices the deterministic networks score "
            f"{relative_gain_sentence(networks, 'k=1', 'k=2', 'SSIM')}, and linear "
            f"interpolation {abs(lin):.1f} % {'more' if lin >= 0 else 'less'}: the networks {gap}."
        )
    if ANCESTRAL in rows:
        ddpm, unet = rows[ANCESTRAL], rows.get("unet")
        speed = ""
        if unet is not None:
            speed = (
                f", at {wall_clock(ddpm['ms_per_slice'], 0, ' ms')} per slice against the "
                f"U-Net's {wall_clock(unet['ms_per_slice'], 1, ' ms')}"
            )
        parts.append(
            f"The DDPM with ancestral sampling reaches {float(ddpm['psnr_mean']):.2f} dB, "
            f"{float(ddpm['psnr_gain_db']):+.2f} dB against linear interpolation on the "
            f"{int(ddpm['n_slices']):,} slices it was scored on{speed}."
        )
    return " ".join(parts)


def real_headline(k1: Results, k2: Results, over_flow: Mapping[str, Any]) -> str:
    """Two sentences on the real arm: each method's PSNR gain over linear interpolation at
    k=1 and k=2, and the motion-compensated CNN against optical flow (``over_flow``:
    :func:`slicelib.study.analysis.over_flow`'s numbers)."""
    shown = [m for m in ("flow", *DETERMINISTIC_MODELS, "mcnet") if m in k1.methods]
    if not shown:
        return "The real arm scored no method but linear interpolation."
    n = int(k1.row("linear")["n_patients"])

    def both(m: str) -> str:
        at2 = f"{float(k2.row(m)['psnr_gain_db']):+.2f}" if m in k2.methods else "-"
        return f"{method_label(m)} {float(k1.row(m)['psnr_gain_db']):+.2f} / {at2} dB"

    text = (
        f"On real IXI T1 head MRI ({plural(n, 'test subject')}), the PSNR gains over linear "
        f"interpolation at k=1 / k=2 are: {word_list([both(m) for m in shown])}."
    )
    if "real_k1_mcnet_over_flow" in over_flow:
        keys = {k: f"real_k{k}_mcnet_over_flow" for k in (1, 2)}
        pieces = [
            f"{_db(over_flow, key, f'{key}_lo', f'{key}_hi')} at k={k}"
            for k, key in keys.items()
            if key in over_flow
        ]
        text += (
            f" The motion-compensated CNN, which learns a correction to optical flow, adds "
            f"{word_list(pieces)} to optical flow itself ({_tested_words(n, 'subject')})."
        )
    return text


def headroom_answer(gains: Mapping[str, float], headroom: Mapping[str, float], k: int) -> str:
    """The real chapter's answer to "nothing to learn, or not learned yet?" at ``k``: the
    best of the original's networks (``gains``: method -> PSNR gain over linear, dB) against
    the least-squares filter and the oracle bounds (``headroom``: the ``real_headroom_*``
    numbers), and the motion-compensated CNN beside it."""
    ls = headroom.get(f"real_headroom_ls_filter_k{k}", math.nan)
    tile = headroom.get(f"real_headroom_oracle_tile_k{k}", math.nan)
    pixel = headroom.get(f"real_headroom_oracle_pixel_k{k}", math.nan)
    nets = {m: g for m, g in gains.items() if finite(g) and m in DETERMINISTIC_MODELS}
    if not nets or not (finite(ls) and finite(tile)):
        return f"At k={k} the run lacks the numbers to answer."
    best = max(nets, key=lambda m: nets[m])
    gain = nets[best]
    text = (
        f"At k={k} the best of the original's networks, the {method_label(best)}, gains "
        f"{gain:+.2f} dB over linear interpolation"
    )
    filt = f"the least-squares filter ({ls:+.2f} dB)"
    tiled = f"the 8 x 8 tile oracle ({tile:+.2f} dB), which knows the target"
    if gain < ls:
        text += (
            f", less than {filt}: it had not yet learned what a linear predictor of the two "
            f"neighbours already gains, so there was something to learn"
        )
    elif gain < tile:
        text += (
            f", more than {filt}, so it learned more than a linear predictor can, and "
            f"{tile - gain:.2f} dB less than {tiled}"
        )
    else:
        text += f", more than {filt} and than {tiled} but blends the neighbours only"
    if finite(pixel):
        text += f"; the per-pixel oracle bounds any blend at {pixel:+.2f} dB"
    mcnet = gains.get("mcnet", math.nan)
    if finite(mcnet):
        text += f"; the motion-compensated CNN gains {float(mcnet):+.2f} dB"
    return text + "."


_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]<>#|$~])")


def _cell(value: Any) -> str:
    """One table cell as Markdown text: floats shortly, specials escaped."""
    if isinstance(value, float) and math.isfinite(value):
        value = f"{value:.6g}"
    return _MARKDOWN_SPECIAL.sub(r"\\\1", " ".join(str(value).split()))


def table_markdown(frame: pd.DataFrame, caption: str, name: str | None = None) -> str:
    """``frame`` as a numbered MyST table with ``caption`` (a named index becomes the
    first column); ``name`` labels it for ``{numref}``."""
    shown = frame.reset_index() if any(n is not None for n in frame.index.names) else frame
    lines = [
        "| " + " | ".join(_cell(c) for c in shown.columns) + " |",
        "|" + "---|" * len(shown.columns),
        *("| " + " | ".join(_cell(v) for v in row) + " |" for row in shown.itertuples(False)),
    ]
    head = [f":::{{table}} {caption}"] + ([f":name: {name}"] if name else [])
    return "\n".join([*head, "", *lines, ":::"])


def table(frame: pd.DataFrame, caption: str, name: str | None = None) -> None:
    """Show ``frame`` as the book's numbered, captioned table: Markdown, which the book
    renders as MyST (``_config.yml`` prefers it), beside the html and text that Jupyter
    shows and ``make verify`` compares."""
    from IPython.display import display

    bundle = {
        "text/html": frame._repr_html_(),  # type: ignore[operator]  # as Jupyter shows it
        "text/markdown": table_markdown(frame, caption, name),
        "text/plain": repr(frame),
    }
    display(bundle, raw=True)
