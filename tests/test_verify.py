"""``slicelib verify``: a smoke study's executed notebooks reproduce in a fresh
workspace, and an edited stored number fails naming the notebook, the cell and the
two values."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from slicelib.cli import main
from slicelib.study.verify import MARKER, ordered_notebooks, verify_study

if TYPE_CHECKING:
    from study_fixtures import SmokeStudy

pytest_plugins = ["study_fixtures"]

# The cohort notebook and one training run: enough to check the mechanism quickly.
SUBSET = ["data", "train_cnn_k1"]


def edit_one_number(path: Path) -> tuple[int, str, str]:
    """Change the last digit of the first printed decimal of a text output of ``path``;
    returns (cell index among code cells, old text, new text)."""
    nb = json.loads(path.read_text())
    code_index = -1
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        code_index += 1
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            key = "text" if "text" in output else "text/plain" if "text/plain" in data else None
            if key is None:
                continue
            holder = output if key == "text" else data
            text = "".join(holder[key]) if isinstance(holder[key], list) else holder[key]
            match = re.search(r"\b\d+\.\d*[0-9]\b", text)
            if match is None:
                continue
            old = match.group(0)
            new = old[:-1] + str((int(old[-1]) + 1) % 10)
            holder[key] = text[: match.start()] + new + text[match.end() :]
            path.write_text(json.dumps(nb, indent=1))
            return code_index, old, new
    raise AssertionError(f"{path}: no printed decimal number in any text output")


@pytest.mark.slow
def test_verify_passes_then_names_the_edited_cell(
    smoke_study: SmokeStudy, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert verify_study(smoke_study.out, SUBSET, tmp_path / "fresh") == 0
    fresh = tmp_path / "fresh"
    assert (fresh / MARKER).is_file() and (fresh / "runs" / "cnn_k1").is_dir()
    capfd.readouterr()

    # The same study with one stored number changed in its data notebook.
    edited = tmp_path / "edited"
    (edited / "notebooks").mkdir(parents=True)
    shutil.copy2(smoke_study.out / "study.json", edited / "study.json")
    notebook = edited / "notebooks" / "data.ipynb"
    shutil.copy2(smoke_study.out / "notebooks" / "data.ipynb", notebook)
    cell, old, new = edit_one_number(notebook)
    assert verify_study(edited, ["data"], tmp_path / "fresh") != 0
    out = capfd.readouterr().out
    assert f"data.ipynb::Cell {cell}" in out and "FAILED" in out
    assert new in out and old in out  # the stored value and the one computed again


def test_order_follows_the_study(tmp_path: Path) -> None:
    for name in ("results", "train_unet_k1", "data", "train_cnn_k2"):
        (tmp_path / f"{name}.ipynb").write_text("{}")
    names = [p.stem for p in ordered_notebooks(tmp_path)]
    assert names == ["data", "train_cnn_k2", "train_unet_k1", "results"]
    assert [p.stem for p in ordered_notebooks(tmp_path, ["results", "data"])] == [
        "data",
        "results",
    ]


def test_not_a_study_or_a_foreign_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["verify", str(tmp_path)]) == 2
    assert "not a study folder" in capsys.readouterr().err
    study = tmp_path / "study"
    (study / "notebooks").mkdir(parents=True)
    (study / "study.json").write_text('{"preset": "smoke"}')
    (study / "notebooks" / "data.ipynb").write_text("{}")
    (tmp_path / "mine").mkdir()
    assert main(["verify", str(study), "--fresh", str(tmp_path / "mine")]) == 2
    err = capsys.readouterr().err.strip()
    assert "was not made by a verify run" in err and "\n" not in err
    assert main(["verify", str(study), "--only", "nosuch"]) == 2
    assert "--only nosuch" in capsys.readouterr().err


def sanitize(text: str) -> str:
    from nbval.plugin import get_sanitize_patterns

    config = (Path(__file__).resolve().parents[1] / ".nbval-sanitize.cfg").read_text()
    for regex, replace in get_sanitize_patterns(config):
        text = re.sub(regex, replace, text)
    return text


@pytest.mark.parametrize(
    ("stored", "computed"),
    [
        ("seconds per epoch (mean)   3.5 s", "seconds per epoch (mean)  21.0 s"),
        ("training samples/s (mean)  2.5 /s", "training samples/s (mean)  12.5 /s"),
        ("<td>1.23 ms</td><td>12.3×</td>", "<td>0.98 ms</td><td>9.1×</td>"),
        ("recorded 2026-11-27T18:41:07+00:00", "recorded 2026-11-28T09:02:11+00:00"),
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
    ],
)
def test_sanitizer_keeps_results(stored: str, computed: str) -> None:
    assert sanitize(stored) != sanitize(computed)


def test_glued_wall_clock_is_matched_by_name() -> None:
    from slicelib.study.nbval_glue import PLACEHOLDER, blank_glued, glue_patterns

    config = (Path(__file__).resolve().parents[1] / ".nbval-sanitize.cfg").read_text()
    patterns = glue_patterns(config)

    def glued(name: str, value: str) -> dict:
        record = "application/papermill.record/text/plain"
        return {"data": {record: value}, "metadata": {"scrapbook": {"name": name}}}

    outputs = [glued("k1_unet_ms", "3.52"), glued("k1_unet_psnr", "30.08")]
    blanked = blank_glued(outputs, patterns)
    assert next(iter(blanked[0]["data"].values())) == PLACEHOLDER
    assert blanked[1] == outputs[1]
