"""``slicelib verify``: every notebook of a smoke study reproduces in a fresh workspace,
except where a stored result was edited, which fails naming the notebook, the cell and
the two values. (What is compared: tests/test_verify_rules.py.)"""

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

GLUED_TEXT = "application/papermill.record/text/plain"
DECIMAL = re.compile(r"(?<![\w.])\d+\.\d*[0-9]\b")


def edit_one_number(path: Path, glued: bool = False) -> tuple[int, str, str]:
    """Change the last digit of the first decimal number that a code cell of the executed
    notebook ``path`` prints (``glued``: glues as a result, e.g. a PSNR for the book's
    prose; wall-clock values are glued with a mark and passed over); returns (the cell's
    number as nbval names it, old text, new text)."""
    nb = json.loads(path.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    for index, cell in enumerate(code):
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if glued:
                holder, key = data, GLUED_TEXT
            else:
                holder, key = (output, "text") if "text" in output else (data, "text/plain")
            if key not in holder:
                continue
            text = "".join(holder[key]) if isinstance(holder[key], list) else holder[key]
            match = DECIMAL.search(text)
            if match is None or "wall clock" in text:
                continue
            old = match.group(0)
            new = old[:-1] + str((int(old[-1]) + 1) % 10)
            holder[key] = text[: match.start()] + new + text[match.end() :]
            path.write_text(json.dumps(nb, indent=1))
            return index, old, new
    raise AssertionError(f"{path}: no decimal number in any output (glued: {glued})")


def code_cells(folder: Path) -> int:
    return sum(
        sum(c["cell_type"] == "code" for c in json.loads(p.read_text())["cells"])
        for p in folder.glob("*.ipynb")
    )


@pytest.mark.slow
def test_every_notebook_verifies_but_the_edited_results(
    smoke_study: SmokeStudy, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """One check of every notebook of the smoke study, on a copy with one stored result
    changed in each of two notebooks: a number of a results table, and a result glued
    for the prose. Those two cells fail, naming the notebook, the cell and both values;
    every other cell of every notebook passes (none skipped, none in error)."""
    edited = tmp_path / "edited"
    shutil.copytree(smoke_study.out / "notebooks", edited / "notebooks")
    shutil.copy2(smoke_study.out / "study.json", edited / "study.json")
    table = edit_one_number(edited / "notebooks" / "results.ipynb")
    glued = edit_one_number(edited / "notebooks" / "k2_failure.ipynb", glued=True)
    capfd.readouterr()

    assert verify_study(edited, None, tmp_path / "fresh") == 1
    out = capfd.readouterr().out
    fresh = tmp_path / "fresh"
    assert (fresh / MARKER).is_file() and (fresh / "runs" / "unet_k1").is_dir()
    failed = set(re.findall(r"^FAILED notebooks/(\S+ \d+)", out, flags=re.M))
    assert failed == {f"results.ipynb::Cell {table[0]}", f"k2_failure.ipynb::Cell {glued[0]}"}
    for _, old, new in (table, glued):
        assert old in out and new in out  # the stored value and the one computed again
    total = code_cells(smoke_study.out / "notebooks")
    assert re.search(rf"=+ 2 failed, {total - 2} passed(, \d+ warnings?)? in ", out), out[-2000:]
    assert "pytest plugin exception" not in out


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
