"""The study's notebooks: committed without outputs, one ``parameters`` cell of plain
values with the smoke defaults, each typed and described for papermill, checked into a
typed Study in the next cell; and the one rule of what a notebook holds."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from slicelib.errors import SlicelibError
from slicelib.study import notebook_study
from slicelib.study.notebooks import (
    REQUIRED_NOTEBOOKS,
    STUDY_NOTEBOOKS,
    NotebookParameter,
    check_parameter,
    check_parameters,
    notebook_parameters,
    parse_assignment,
    source_hash,
)

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"
PRESENT = [n for n in STUDY_NOTEBOOKS if (NOTEBOOKS / f"{n}.ipynb").is_file()]


def load(name: str) -> dict:
    return json.loads((NOTEBOOKS / f"{name}.ipynb").read_text())


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_every_required_notebook_exists() -> None:
    assert set(REQUIRED_NOTEBOOKS) <= set(PRESENT)


@pytest.mark.parametrize("name", PRESENT)
def test_committed_without_outputs(name: str) -> None:
    for cell in load(name)["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [], f"{name}: a cell has outputs"
            assert cell.get("execution_count") is None


def declared(name: str) -> dict[str, NotebookParameter]:
    return notebook_parameters(NOTEBOOKS / f"{name}.ipynb")


@pytest.mark.parametrize("name", PRESENT)
def test_one_parameters_cell_of_plain_values(name: str) -> None:
    cells = load(name)["cells"]
    tagged = [i for i, c in enumerate(cells) if "parameters" in c["metadata"].get("tags", [])]
    assert len(tagged) == 1
    tree = ast.parse(source(cells[tagged[0]]))
    assigned = []
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):  # the annotations' names
            assert node.module == "typing", f"{name}: only typing imports in the parameters cell"
            continue
        assert isinstance(node, ast.AnnAssign), f"{name}: only annotated assignments"
        assert node.value is not None and isinstance(node.target, ast.Name)
        ast.literal_eval(node.value)  # plain values, no code
        assigned.append(node.target.id)
    params = declared(name)
    assert list(params) == assigned  # papermill reads every one of them
    values = {key: p.default for key, p in params.items()}
    assert values["preset"] == "smoke"
    assert values["out_dir"] is None and values["data_root"] is None
    following = source(cells[tagged[0] + 1])
    assert f'notebook_study(\n    "{name}"' in following or f'notebook_study("{name}"' in following


@pytest.mark.parametrize("name", PRESENT)
def test_every_parameter_typed_and_described(name: str) -> None:
    """What ``papermill --help-notebook`` shows: a type papermill understood (it drops
    ``str | None``) and a help text for every parameter."""
    for key, param in declared(name).items():
        assert param.annotation, f"{name}: parameter {key!r} has no type papermill reads"
        assert param.types, f"{name}: parameter {key!r}"
        assert len(param.help) >= 10, f"{name}: parameter {key!r} has no inline help"
        check_parameter(name, param, param.default)  # every default has its declared type


def test_papermill_reads_optional_but_not_union(tmp_path: Path) -> None:
    """Why the cells write ``Optional[str]``: papermill's pattern stops at ``|``."""
    nb = load("data")
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    cell["source"] = "a: Optional[str] = None  # kept\nb: str | None = None  # lost\n"
    path = tmp_path / "union.ipynb"
    path.write_text(json.dumps(nb))
    params = notebook_parameters(path)
    assert params["a"].annotation == "Optional[str]" and params["a"].help == "kept"
    assert "b" not in params or not params["b"].annotation


def test_train_notebook_parameters() -> None:
    params = declared("train")
    assert params["model"].default == "unet" and params["k"].default == 1
    assert params["k"].types == (int,) and params["out_dir"].types == (str, type(None))


def test_source_hash_ignores_outputs(tmp_path: Path) -> None:
    nb = load("data")
    path = tmp_path / "data.ipynb"
    path.write_text(json.dumps(nb))
    before = source_hash(path)
    nb["cells"][2]["outputs"] = [{"output_type": "stream", "name": "stdout", "text": "x"}]
    nb["cells"][2]["execution_count"] = 3
    path.write_text(json.dumps(nb))
    assert source_hash(path) == before
    nb["cells"][2]["source"] = "print(1)"
    path.write_text(json.dumps(nb))
    assert source_hash(path) != before


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("k", "1", "parameter 'k' must be int (got str '1')"),
        ("k", True, "parameter 'k' must be int (got bool True)"),
        ("out_dir", 3, "parameter 'out_dir' must be Optional[str]"),
        ("zoom", "wide", "parameter 'zoom' must be float"),
    ],
)
def test_wrong_type_names_notebook_and_parameter(name: str, value: object, message: str) -> None:
    with pytest.raises(SlicelibError, match="notebook 'train'") as info:
        check_parameters("train", {name: value}, NOTEBOOKS / "qualitative.ipynb")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_notebook_study_checks_types_and_values(tmp_path: Path) -> None:
    with pytest.raises(SlicelibError, match=r"notebook 'train': parameter 'k' must be int"):
        notebook_study("train", preset="smoke", out_dir=str(tmp_path), k="2")
    with pytest.raises(SlicelibError, match=r"notebook 'data': parameter 'preset': unknown preset"):
        notebook_study("data", preset="huge", out_dir=str(tmp_path))
    with pytest.raises(SlicelibError, match=r"parameter 'model': unknown model 'vit'"):
        notebook_study("train", preset="smoke", out_dir=str(tmp_path), model="vit", k=1)
    with pytest.raises(SlicelibError, match=r"parameter 'k': the smoke preset trains the DDPM"):
        notebook_study("train", preset="smoke", out_dir=str(tmp_path), model="ddpm", k=2)
    with pytest.raises(SlicelibError, match=r"unknown parameter 'epochs'"):
        notebook_study("train", preset="smoke", out_dir=str(tmp_path), epochs=3)
    study = notebook_study("train", preset="smoke", out_dir=str(tmp_path), model="cnn", k=2)
    assert study.out_dir == tmp_path.resolve() and study.preset.name == "smoke"


def test_out_dir_none_resolves_under_slicelib_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SLICELIB_HOME", str(tmp_path / "home"))
    study = notebook_study("data", preset="smoke", out_dir=None, data_root=None)
    assert study.out_dir == (tmp_path / "home" / "smoke").resolve()
    assert study.data_root == study.out_dir / "data" and study.synthetic


def test_int_is_a_float_and_bool_is_not_an_int() -> None:
    zoom, k = declared("qualitative")["zoom"], declared("qualitative")["k"]
    check_parameter("qualitative", zoom, 1)
    with pytest.raises(SlicelibError, match="must be int"):
        check_parameter("qualitative", k, False)


def test_notebook_without_parameters_cell(tmp_path: Path) -> None:
    nb = load("data")
    for cell in nb["cells"]:
        cell["metadata"]["tags"] = []
    path = tmp_path / "bare.ipynb"
    path.write_text(json.dumps(nb))
    with pytest.raises(SlicelibError, match="no cell tagged 'parameters'"):
        notebook_parameters(path)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("samples=8", (None, "samples", 8)),
        ("ddpm_analysis.samples=8", ("ddpm_analysis", "samples", 8)),
        ("qualitative.zoom=0.5", ("qualitative", "zoom", 0.5)),
        ("device=cuda", (None, "device", "cuda")),
        ("out_dir=null", (None, "out_dir", None)),
    ],
)
def test_parse_assignment(text: str, expected: tuple[object, ...]) -> None:
    assert parse_assignment(text) == expected


def test_parse_assignment_rejects_missing_value() -> None:
    with pytest.raises(SlicelibError, match="expected"):
        parse_assignment("samples")


@pytest.mark.parametrize("name", PRESENT)
def test_every_notebook_holds_parameters_calls_and_figures(name: str) -> None:
    """The rule: a notebook holds its parameters, opens its workspace once with
    ``notebook_study`` (whose steps make what it reads), calls slicelib for every table
    and number, and draws the figures it shows. So no notebook builds a workspace of its
    own, reaches into its steps' folders by path, or calls a figure-making
    function from slicelib other than the shared helpers of ``slicelib.study.figures``."""
    code = [source(c) for c in load(name)["cells"] if c["cell_type"] == "code"]
    text = "\n".join(code[1:])
    assert text.count("notebook_study(") == 1, name
    for forbidden in ("Study(", "runs_dir", "results_dir", "cache_dir /", "plt."):
        assert forbidden not in text, f"{name}: {forbidden}"
    tree = ast.parse("\n".join(line for line in text.splitlines() if not line.startswith("%")))
    helpers = {"StudyFigure", "panels", "epoch_axis", "central", "scores", "PAGE_WIDTH",
               "ERROR_CMAP", "method_families", "comparison_figure"}  # fmt: skip
    used = {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute) and getattr(node.value, "id", "") == "figures"
    }
    assert used <= helpers, f"{name}: {sorted(used - helpers)}"
