"""What ``slicelib verify`` compares, without running a study: the sanitizer's rules on
the outputs the notebooks print and glue, the figures' text form, the cells tagged
``nbval-ignore-output`` and the book's list of them, and nbval's cell limit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from slicelib.config import PAPER
from slicelib.study import figures
from slicelib.study.claims import TIMED, verdict_text
from slicelib.study.present import WALL_CLOCK_MARK, WallClock, plain, wall_clock
from slicelib.study.verify import CELL_TIMEOUT_S, TIMEOUT_FACTOR, cell_timeout, retarget

ROOT = Path(__file__).resolve().parents[1]
IGNORE = "nbval-ignore-output"


def sanitize(text: str) -> str:
    from nbval.plugin import get_sanitize_patterns

    config = (ROOT / ".nbval-sanitize.cfg").read_text(encoding="utf-8")
    for regex, replace in get_sanitize_patterns(config):
        text = re.sub(regex, replace, text)
    return text


def glued_text(value: object) -> str:
    """The ``text/plain`` that myst-nb's ``glue`` stores for ``value`` (its display)."""
    from IPython.core.formatters import format_display_data

    return format_display_data(plain(value))[0]["text/plain"]


@pytest.mark.parametrize(
    ("stored", "computed"),
    [
        ("seconds per epoch (mean)   3.5 s", "seconds per epoch (mean)  21.0 s"),
        ("training samples/s (mean)  2.5 /s", "training samples/s (mean)  12.5 /s"),
        ("<td>1.23 ms</td><td>12.3×</td>", "<td>0.98 ms</td><td>9.1×</td>"),
        ("recorded 2026-11-27T18:41:07+00:00", "recorded 2026-11-28T09:02:11+00:00"),
        # the DDPM speed claim's "this run" and verdict, in the findings box
        (
            "300 ms against 3.5 ms for the U-Net (86×), cpu",
            "1234 ms against 44.6 ms for the U-Net (28×), cpu",
        ),
        # which side of the threshold the ratio falls, with the load of the machine
        (
            "58 ms against 13.9 ms for the U-Net, cpu: ratio 4×, below 30×",
            "812 ms against 21.0 ms for the U-Net, cpu: ratio 39×, above 30×",
        ),
        (
            f"not reproduced — {TIMED}</span>",
            f"reproduced — {TIMED}</span>",
        ),
        (
            "unet (k=1), checkpoint sha256:4bc30866f034152f, epoch 1",
            "unet (k=1), checkpoint sha256:1d119e21a134f778, epoch 1",
        ),
        ("slicelib 0.2.0 (commit ea16df296677, modified)", "slicelib 0.2.0 (commit 9f1667e0a1b2)"),
        ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAAB\n", "iVBORw0KGgoAAAANSUhEUgAAAAIAAAAC\n"),
    ],
)
def test_sanitizer_leaves_out_wall_clock(stored: str, computed: str) -> None:
    assert sanitize(stored) == sanitize(computed)


@pytest.mark.parametrize(
    ("stored", "computed"),
    [
        ("validation PSNR at best (dB)  11.67", "validation PSNR at best (dB)  11.68"),
        ("<td>0.729</td>", "<td>0.730</td>"),
        ("32x32 pixels, 96 slices", "32x32 pixels, 95 slices"),
        # a verdict that no clock decided
        (
            "reproduced — illustration (synthetic cohort)",
            "not reproduced — illustration (synthetic cohort)",
        ),
        ("<StudyFigure size 750x300 with 2 Axes>\naxes 1: 1 Line2D: 6 numbers, mean 0.4121",
         "<StudyFigure size 750x300 with 2 Axes>\naxes 1: 1 Line2D: 6 numbers, mean 0.4122"),
    ],
)  # fmt: skip
def test_sanitizer_keeps_results(stored: str, computed: str) -> None:
    assert sanitize(stored) != sanitize(computed)


def test_a_glued_wall_clock_value_is_left_out_and_a_glued_result_compared() -> None:
    from myst_nb.core.variables import format_plain_text

    timing, other = glued_text(WallClock(3.52)), glued_text(WallClock(12.25))
    assert timing == f"3.52{WALL_CLOCK_MARK}"
    assert sanitize(timing) == sanitize(other)
    assert sanitize(glued_text(30.08)) != sanitize(glued_text(30.09))
    assert sanitize(glued_text(np.float64(1e-05))) != sanitize(glued_text(2e-05))
    # the book's {glue:text} still reads the number
    assert format_plain_text(timing, ".1f") == "3.5"
    assert format_plain_text(glued_text(WallClock(1e-05)), ".0e") == "1e-05"
    assert glued_text(WallClock(float("nan"))) == "'n/a'"


def test_timings_are_written_with_their_unit() -> None:
    assert wall_clock(44.61, 1, " ms") == "44.6 ms"
    assert sanitize(wall_clock(44.61, 1, " ms")) == sanitize(wall_clock(47.6, 1, " ms"))
    timed = verdict_text("not reproduced", "synthetic", timed=True)
    assert timed.startswith(f"not reproduced — {TIMED}")  # the sanitizer's rule reads this
    assert sanitize(timed).startswith(f"VERDICT — {TIMED}")
    assert verdict_text("reproduced", "synthetic").endswith("(synthetic cohort)")


def test_the_speed_claim_writes_units_and_a_timed_verdict() -> None:
    from slicelib.methods import ANCESTRAL
    from slicelib.study.claims import REPRODUCED, _ddpm_slow

    summary = pd.DataFrame(
        {"method": ["unet", ANCESTRAL], "ms_per_slice": [3.5, 301.0], "device": ["cpu", "cpu"]}
    ).set_index("method")

    class Results:
        methods = list(summary.index)

        def row(self, method: str) -> dict:
            return summary.loc[method].to_dict()

    class Ev:
        k1 = Results()
        model, timesteps = PAPER.model, PAPER.diffusion.timesteps

    verdict = _ddpm_slow(Ev())  # type: ignore[arg-type]
    assert verdict.outcome == REPRODUCED and verdict.timed
    assert verdict.this_run == "301 ms against 3.5 ms for the U-Net, cpu: ratio 86×, above 30×"
    assert sanitize(verdict.this_run) == (
        "DURATION against DURATION for the U-Net, cpu: ratio RATIO, SIDE RATIO"
    )


def test_a_figure_states_its_numbers() -> None:
    def draw(values: list[float], title: str = "U-Net\n31.20 dB, 0.912") -> str:
        fig, axes = figures.panels(1, 2)
        axes[0, 0].imshow(np.reshape(values, (2, 2)), cmap="gray")
        axes[0, 0].set_title(title)
        axes[0, 1].plot([1, 2], values[:2], "o-")
        fig.colorbar(axes[0, 0].images[0], ax=axes[0, 0])
        fig.suptitle("Patient 0001, slice 12")
        return repr(fig)

    text = draw([0.1, 0.2, 0.3, 0.4])
    assert text.startswith("<StudyFigure size ") and "with 3 Axes>" in text
    assert "Patient 0001, slice 12" in text and "31.20 dB, 0.912" in text
    assert "1 AxesImage: 4 numbers, mean 0.25" in text and "1 Line2D: 4 numbers, mean 0.825" in text
    assert draw([0.1, 0.2, 0.3, 0.4]) == text
    assert draw([0.1, 0.2, 0.3, 0.5]) != text  # a pixel
    assert draw([0.1, 0.2, 0.3, 0.4], "U-Net\n31.21 dB, 0.912") != text  # a score in a title


def test_the_cell_limit_follows_the_preset_and_the_longest_notebook(tmp_path: Path) -> None:
    assert cell_timeout("smoke", tmp_path) == CELL_TIMEOUT_S["smoke"]
    assert cell_timeout("paper", tmp_path) >= 12 * 3600  # a paper training cell takes hours
    assert cell_timeout("custom", tmp_path) == CELL_TIMEOUT_S["paper"]
    (tmp_path / ".state.json").write_text(json.dumps({"a": {"seconds": 12.0}, "b": {}}))
    assert cell_timeout("smoke", tmp_path) == CELL_TIMEOUT_S["smoke"]
    long = CELL_TIMEOUT_S["demo"]  # a notebook as long as the demo's limit
    (tmp_path / ".state.json").write_text(json.dumps({"train_unet_k1": {"seconds": long}}))
    assert cell_timeout("demo", tmp_path) == TIMEOUT_FACTOR * long
    (tmp_path / ".state.json").write_text("not json")
    assert cell_timeout("demo", tmp_path) == CELL_TIMEOUT_S["demo"]


def ignored_cells() -> set[tuple[str, int]]:
    """(notebook, cell number as nbval names it in an executed notebook) of every code
    cell tagged nbval-ignore-output. nbval counts code cells from 0; in an executed
    notebook papermill's injected-parameters cell follows the parameters cell."""
    found = set()
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
        tags = [c["metadata"].get("tags", []) for c in code]
        parameters = next(n for n, t in enumerate(tags) if "parameters" in t)
        found |= {(path.stem, n + (n > parameters)) for n, t in enumerate(tags) if IGNORE in t}
    return found


def test_the_book_lists_every_cell_left_out() -> None:
    """book/reproducibility.md's table of the cells not compared names exactly the
    tagged cells, as a failing check would name them."""
    page = (ROOT / "book" / "reproducibility.md").read_text()
    listed = {
        (name, int(cell))
        for name, cell in re.findall(r"^\| `(\w+)\.ipynb` \| Cell (\d+) \|", page, flags=re.M)
    }
    cells = ignored_cells()
    assert cells and listed == cells


def test_the_copies_keep_every_output_but_log_lines(tmp_path: Path) -> None:
    """A notebook that papermill ran with --log-output (a SLURM array task) holds
    slicelib's log lines, which a check with the kernel's log off does not print: the
    copy leaves them out and keeps every other output."""
    import logging

    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    from slicelib.study.notebooks import KERNEL_LOG_DATES, KERNEL_LOG_FORMAT

    record = logging.LogRecord("slicelib", logging.INFO, "", 0, "epoch 1/2: 3.1 s", None, None)
    log = logging.Formatter(KERNEL_LOG_FORMAT, KERNEL_LOG_DATES).format(record) + "\n"
    printed = "x_T = 0.951 x_0 + 0.310 noise\n"
    result = new_output("execute_result", {"text/plain": "42"}, execution_count=3)
    nb = new_notebook(
        cells=[
            new_code_cell("out_dir = None", metadata={"tags": ["parameters"]}),
            new_code_cell('out_dir = "/old/study"', metadata={"tags": ["injected-parameters"]}),
            new_code_cell(
                "train()",
                metadata={"tags": []},  # papermill gives every cell its tags
                outputs=[new_output("stream", name="stdout", text=log)],
            ),
            new_code_cell(
                "show()",
                metadata={"tags": []},
                outputs=[new_output("stream", name="stdout", text=log + printed + log), result],
            ),
        ],
        metadata={
            "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
            "language_info": {"name": "python"},
            "papermill": {"parameters": {"out_dir": "/old/study", "preset": "demo"}},
        },
    )
    executed, target = tmp_path / "train_unet_k1.ipynb", tmp_path / "copy.ipynb"
    nbformat.write(nb, executed)
    retarget(executed, target, tmp_path / "fresh")
    cells = nbformat.read(target, as_version=4).cells
    injected = next(c for c in cells if "injected-parameters" in c.metadata.get("tags", []))
    assert str(tmp_path / "fresh") in injected.source and "/old/study" not in injected.source
    trained, shown = cells[-2], cells[-1]
    assert trained.outputs == []
    assert [o.get("text") for o in shown.outputs] == [printed, None]
    assert shown.outputs[1]["data"]["text/plain"] == "42"


# A glue key that names a time, a rate or a speed ratio (what compare_glue.py calls TIMING).
TIMING_KEY = re.compile(
    r'"(\w*(?:seconds|_ms|ratio|minutes|samples_per_s|s_per_epoch)\w*)":\s*(.+)'
)


def test_every_glued_timing_of_a_notebook_is_marked_wall_clock() -> None:
    """A time glued as a plain number would be compared by ``make verify`` and fail it on
    every machine: each is a WallClock (directly or from a function that returns one),
    or sits in a cell that verify runs without comparing."""
    from slicelib.study import analysis, present

    modules = {"analysis": analysis, "present": present}
    found, plain_numbers = 0, []
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        for cell in json.loads(path.read_text())["cells"]:
            if cell["cell_type"] != "code":
                continue
            ignored = "nbval-ignore-output" in cell.get("metadata", {}).get("tags", [])
            for line in "".join(cell["source"]).splitlines():
                match = TIMING_KEY.search(line)
                if not match:
                    continue
                found += 1
                value = match[2]
                call = re.match(r"(\w+)\.(\w+)\(", value)
                returns = (
                    getattr(modules[call[1]], call[2]).__annotations__.get("return")
                    if call and call[1] in modules
                    else None
                )
                if not (ignored or "WallClock(" in value or returns in ("WallClock", WallClock)):
                    plain_numbers.append(f"{path.name}: {match[1]}")
    assert found >= 6  # the rule reads the notebooks' glue calls
    assert not plain_numbers, plain_numbers


def test_the_budget_curve_table_writes_training_time_as_wall_clock() -> None:
    from slicelib.study.analysis import curve_table

    point = {"model": "unet", "samples": 640, "run": "b640", "gain": 0.03, "lo": 0.02, "hi": 0.04}
    point["subjects"] = 21
    short, long = (curve_table(pd.DataFrame([{**point, "seconds": s}])) for s in (2.6, 72.8))
    assert sanitize(short.to_string()) == sanitize(long.to_string())
    other = curve_table(pd.DataFrame([{**point, "gain": 0.05, "seconds": 2.6}]))
    assert sanitize(short.to_string()) != sanitize(other.to_string())
