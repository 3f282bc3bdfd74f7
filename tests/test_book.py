"""The book: built offline in strict mode from the smoke study's executed notebooks, with
every table and figure of every notebook in its HTML; the skeleton builds too."""

from __future__ import annotations

import html
import json
import platform
import re
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd
import pytest
import yaml

from slicelib.config import DEMO, preset_differences
from slicelib.study import Study
from slicelib.study.book import (
    book_notebook,
    build_book,
    edition_markdown,
    findings_html,
    glued_images,
    reductions_markdown,
    staged_config,
    staged_toc,
)
from slicelib.study.notebooks import NotebookJob

if TYPE_CHECKING:
    from study_fixtures import SmokeStudy

pytest_plugins = ["study_fixtures"]

ROOT = Path(__file__).resolve().parents[1]


def page_text(path: Path) -> str:
    """The visible text of an HTML page, whitespace collapsed."""
    body = re.sub(r"<script.*?</script>|<style.*?</style>", " ", path.read_text(), flags=re.S)
    return re.sub(r"\s+", " ", html.unescape(re.sub(r"<[^>]+>", " ", body)))


def output_counts(notebook: Path) -> tuple[int, int]:
    """(tables, figures) among a notebook's outputs."""
    nb = json.loads(notebook.read_text())
    tables = figures = 0
    for cell in nb["cells"]:
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if "<table" in "".join(data.get("text/html", "")):
                tables += 1
            if "image/png" in data:
                figures += 1
    return tables, figures


def test_every_table_and_figure_is_in_the_html(smoke_study: SmokeStudy) -> None:
    total_tables = total_figures = 0
    for name in smoke_study.report.executed:
        tables, figures = output_counts(smoke_study.out / "notebooks" / f"{name}.ipynb")
        page = (smoke_study.html / "notebooks" / f"{name}.html").read_text()
        assert page.count("<table") >= tables, name
        assert len(re.findall(r"<img[^>]+\.png", page)) >= figures, name
        total_tables += tables
        total_figures += figures
    assert total_tables >= 20 and total_figures >= 15
    results = (smoke_study.html / "notebooks" / "results.html").read_text()
    for heading in ("claims and this run", "Architectures", "Inference time"):
        assert heading in results
    for verdict in ("not testable here", "reproduced"):
        assert verdict in results


def test_numbers_in_the_prose_are_filled(smoke_study: SmokeStudy) -> None:
    for page in sorted((smoke_study.html / "book").glob("*.html")):
        text = page.read_text()
        assert "glue:" not in text, page.name
    results = page_text(smoke_study.html / "book" / "results.html")
    k1 = json.loads((smoke_study.out / "results" / "k1.json").read_text())
    assert k1["k"] == 1
    summary = pd.read_csv(smoke_study.out / "results" / "k1_summary.csv").set_index("method")
    psnr = float(summary.loc["linear", "psnr_mean"])
    assert f"linear interpolation reaches {psnr:.2f} dB" in results


def test_front_page_says_preset_and_data(smoke_study: SmokeStudy) -> None:
    text = page_text(smoke_study.html / "book" / "intro.html")
    assert "smoke preset" in text and "synthetic cohort" in text


def test_front_page_states_margins_p_floor_and_code_checks_apart(smoke_study: SmokeStudy) -> None:
    from slicelib.study.claims import CLAIMS

    text = page_text(smoke_study.html / "book" / "intro.html")
    for claim in CLAIMS:  # each verdict beside its margin, and every margin's reason
        assert claim.margin.name in text and claim.margin.why in text, claim.margin.name
    assert "2/2^1 = 1 (the p floor)" in text  # the smoke study's single test patient
    claims, checks = text.split("Checks of the code against the paper")
    assert "U-Net" in checks and "matches" in checks
    assert "The CNN has 297,217 parameters" not in text  # a check, not a claim


def test_reproducibility_page_has_environment_and_command(smoke_study: SmokeStudy) -> None:
    text = page_text(smoke_study.html / "book" / "reproducibility.html")
    assert platform.python_version() in text
    assert "slicelib study --preset smoke" in text


def test_staged_toc_lists_each_training_run(smoke_study: SmokeStudy) -> None:
    toc = (smoke_study.out / "book" / "_toc.yml").read_text()
    for model, k in Study("smoke", smoke_study.out).runs():
        assert f"notebooks/train_{model}_k{k}" in toc
        assert (smoke_study.html / "notebooks" / f"train_{model}_k{k}.html").is_file()
    assert "file: notebooks/train\n" not in toc
    config = yaml.safe_load((smoke_study.out / "book" / "_config.yml").read_text())
    assert "mystnb.glue_ref" not in config["sphinx"]["config"]["suppress_warnings"]


def test_staged_toc_rewrites_and_drops() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    jobs = [
        NotebookJob(name, Path(f"{name}.ipynb"))
        for name in ("data", "results", "qualitative", "k2_failure", "ddpm_analysis")
    ] + [NotebookJob("train_unet_k1", Path("train.ipynb"), title="U-Net, k=1")]
    text = yaml.safe_dump(staged_toc(toc, jobs))
    assert "notebooks/train_unet_k1" in text and "U-Net, k=1" in text
    assert "notebooks/multiplanar" not in text and "file: notebooks/train\n" not in text
    config = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert "mystnb.glue_ref" in config["sphinx"]["config"]["suppress_warnings"]
    assert "mystnb.glue_ref" not in staged_config(config)["sphinx"]["config"]["suppress_warnings"]


def test_demo_edition_lists_the_reductions_in_words() -> None:
    text = edition_markdown({"preset": "demo", "synthetic": True, "cohort": {"patients": 12}})
    assert "synthetic cohort" in text
    differences = preset_differences(DEMO)
    assert "prepare.size: 96 (paper: 256)" in differences
    assert "model.residual_from_linear: True (paper: False)" in differences
    assert "| image size (pixels per side) | 96 | 256 |" in text
    assert "| training crop (pixels per side) | 40 | all (no limit) |" in text
    assert "| generators start at linear interpolation (global skip) | yes | no |" in text
    assert "crop: 40" not in text  # no code strings
    assert reductions_markdown(differences).count("\n") == len(differences) + 1
    assert "How to reproduce" in text and "slicelib study --preset demo" in text
    real = edition_markdown({"preset": "paper", "synthetic": False, "data_root": "/data/tcia"})
    assert "/data/tcia" in real and "synthetic" not in real
    timed = edition_markdown({"preset": "smoke", "synthetic": True}, compute_seconds=4000)
    assert "1 h 06 min" in timed


def test_findings_box_keeps_code_checks_apart() -> None:
    claims = pd.DataFrame(
        {
            "claim": ["The U-Net is best"],
            "original": ["30.08 dB"],
            "this run": ["U-Net minus CNN +0.02 dB [-0.10, +0.14], across +0.10 dB"],
            "margin": ["0.1 dB PSNR"],
            "rule": ["not on the front page"],
            "verdict": ["not reproduced"],
        }
    ).set_index("claim")
    checks = pd.DataFrame(
        {"parameters of": ["CNN"], "supplement": ["297,217"], "verdict": ["matches"]}
    ).set_index("parameters of")
    box = findings_html(claims, checks)
    empirical, code = box.split("Checks of the code")
    assert "The U-Net is best" in empirical and "verdict-not-reproduced" in empirical
    assert "0.1 dB PSNR" in empirical and "across +0.10 dB" in empirical
    assert "not on the front page" not in box
    assert "297,217" in code and "verdict-reproduced" in code and "CNN" in code
    assert "Checks of the code" not in findings_html(claims)
    flagged = findings_html(claims.assign(verdict="reproduced — illustration (synthetic cohort)"))
    assert "verdict-illustration" in flagged


def test_book_notebook_removes_parameters_and_retitles(tmp_path: Path) -> None:
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Training run\n", "text"]},
            {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": "k = 1"},
            {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "k=2"},
            {"cell_type": "code", "metadata": {}, "source": "x = 1", "outputs": []},
        ],
        "metadata": {},
    }
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    out = json.loads(book_notebook(path, "Training: U-Net, k=1"))
    assert "".join(out["cells"][0]["source"]).startswith("# Training: U-Net, k=1\ntext")
    assert [("remove-cell" in c["metadata"]["tags"]) for c in out["cells"][1:]] == [
        True,
        True,
        False,
    ]


def test_book_notebook_captions_plots_from_their_section(tmp_path: Path) -> None:
    png = {"image/png": "iVBORw0KGgo=", "text/plain": "<Figure>"}
    hidden = {"application/papermill.record/image/png": "iVBORw0KGgo="}
    scrap = {"name": "f", "mime_prefix": "application/papermill.record/"}
    glued = {"output_type": "display_data", "data": hidden, "metadata": {"scrapbook": scrap}}
    shown = {"output_type": "display_data", "data": png, "metadata": {}}
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": "# The k=2 failure"},
            {"cell_type": "markdown", "metadata": {},
             "source": "## Error maps\n\nWhere *each* method errs: [one slice](x.md). More."},
            {"cell_type": "code", "metadata": {}, "source": "plot()", "outputs": [shown]},
            {"cell_type": "code", "metadata": {}, "source": "glue()", "outputs": [glued]},
            {"cell_type": "code", "metadata": {"mystnb": {"image": {"alt": "own"}}},
             "source": "plot()", "outputs": [shown]},
        ],
        "metadata": {},
    }  # fmt: skip
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    cells = json.loads(book_notebook(path))["cells"]
    meta = cells[2]["metadata"]["mystnb"]
    assert meta["figure"]["caption"] == "Error maps. Where each method errs: one slice."
    assert meta["image"]["alt"] == "The k=2 failure: " + meta["figure"]["caption"]
    assert "mystnb" not in cells[3]["metadata"]  # glued for a chapter, not shown here
    assert cells[4]["metadata"]["mystnb"] == {"image": {"alt": "own"}}


def test_staged_book_has_figures_captions_and_references(smoke_study: SmokeStudy) -> None:
    """Every figure of a chapter page is numbered, captioned and has alt text that is
    not a file name; every chapter has a cross-reference; the front page reports."""
    staged = smoke_study.out / "book"
    assert glued_images(staged / "notebooks" / "results.ipynb").keys() >= {"fig_gains"}
    for page in sorted((smoke_study.html / "book").glob("*.html")):
        text = page.read_text()
        figures = re.findall(r"<figure.*?</figure>", text, flags=re.S)
        for figure in figures:
            assert "<figcaption" in figure and "caption-number" in figure, page.name
            for alt in re.findall(r'<img[^>]*alt="([^"]*)"', figure):
                assert alt and not alt.endswith(".png"), (page.name, alt)
        if page.name not in ("intro.html", "bibliography.html"):
            assert re.search(r'class="reference internal"', text), page.name
    intro = (smoke_study.html / "book" / "intro.html").read_text()
    assert "verdict-badge" in intro and "How to reproduce" in intro
    assert "Checks of the code" in intro
    refs = page_text(smoke_study.html / "book" / "bibliography.html")
    assert "Prostate-MRI-US-Biopsy" in refs and "Savant" in refs


def test_notebook_pages_are_clean(smoke_study: SmokeStudy) -> None:
    titles = set()
    for page in sorted((smoke_study.html / "notebooks").glob("*.html")):
        text = page.read_text()
        visible = page_text(page)
        assert "TqdmWarning" not in visible and str(smoke_study.out) not in visible, page.name
        assert "injected-parameters" not in text, page.name
        for alt in re.findall(r'<img[^>]*alt="([^"]*)"', text):  # not myst-nb's file name
            assert alt and "_images/" not in alt and not alt.endswith(".png"), (page.name, alt)
        titles.add(re.search(r"<title>(.*?)</title>", text, flags=re.S).group(1))
    assert any("Training: U-Net, k=1" in t for t in titles)
    assert len(titles) == len(list((smoke_study.html / "notebooks").glob("*.html")))


def test_book_loads_no_external_script(smoke_study: SmokeStudy) -> None:
    """Math is typeset by the MathJax copy served from the book, not a CDN."""
    for page in smoke_study.html.rglob("*.html"):
        sources = re.findall(r'<script[^>]*src="([^"]+)"', page.read_text())
        external = [src for src in sources if re.match(r"(https?:)?//", src)]
        assert not external, (page, external)
    assert (smoke_study.html / "_static" / "mathjax" / "tex-svg-full.js").is_file()


def test_skeleton_builds_in_strict_mode(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The committed book builds from the un-executed notebooks (-W -n) with the
    network unreachable, and its pages load no script from elsewhere."""
    for proxy in ("http_proxy", "https_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # nothing listens there
    for name in ("_config.yml", "_toc.yml"):
        shutil.copyfile(ROOT / name, tmp_path / name)
    for folder in ("book", "notebooks"):
        shutil.copytree(ROOT / folder, tmp_path / folder)
    html = build_book(tmp_path)
    assert (html / "book" / "intro.html").is_file()
    assert (html / "notebooks" / "train.html").is_file()
    # no empty Index page, and no link to one
    assert not (html / "genindex.html").exists()
    for page in html.rglob("*.html"):
        text = page.read_text()
        sources = re.findall(r'<script[^>]*src="([^"]+)"', text)
        assert not [src for src in sources if re.match(r"(https?:)?//", src)], page
        assert 'href="genindex.html"' not in text and "/genindex.html" not in text, page


def test_results_and_claims_pages_show_patient_level_inference(smoke_study: SmokeStudy) -> None:
    """Every gain with its patient-level interval column, p-values formatted, and on the
    synthetic cohort every verdict from data marked as an illustration (the DDPM speed
    verdict as timed); with the smoke study's single test patient nothing is tested."""
    from slicelib.stats import MIN_TEST_PATIENTS, TOO_FEW
    from slicelib.study.claims import (
        ILLUSTRATION,
        NOT_REPRODUCED,
        NOTE_SEPARATOR,
        REPRODUCED,
        TIMED,
        Evidence,
        claims_table,
    )

    page = page_text(smoke_study.html / "notebooks" / "results.html")
    for column in ("PSNR vs linear 95% CI", "SSIM vs linear 95% CI", "p vs linear (PSNR)"):
        assert column in page
    assert "<1e-10" not in page and "NaN" not in page
    study = Study("smoke", smoke_study.out)
    k1, k2 = study.results(1), study.results(2)
    evidence = Evidence.from_study(
        study, k1, k2, study.results(1, common=True), study.results(2, common=True)
    )
    claims = claims_table(evidence)
    for verdict in claims["verdict"]:  # the page shows the table the study computes
        assert verdict in page
    patients = int(pd.read_csv(smoke_study.out / "results" / "k1_summary.csv")["n_patients"].max())
    assert patients < MIN_TEST_PATIENTS and TOO_FEW in page
    for this_run, verdict in zip(claims["this run"], claims["verdict"]):
        outcome, _, note = str(verdict).partition(NOTE_SEPARATOR)
        untimed = note.removeprefix(TIMED + NOTE_SEPARATOR)  # the DDPM's speed: timed
        assert untimed.startswith(ILLUSTRATION.removesuffix(")")), verdict
        if TOO_FEW in str(this_run):  # no verdict on a comparison of too few patients
            assert outcome not in (REPRODUCED, NOT_REPRODUCED), (this_run, verdict)
    assert "parameters" not in " ".join(claims.index)  # the checks of the code are apart
    assert "Checks of the code" in page and "p floor" in page
    ddpm = page_text(smoke_study.html / "book" / "ddpm.html")
    assert "With the cosine schedule, ancestral sampling scores" in ddpm
    assert (smoke_study.out / "results" / "ddpm_ablation_k1.csv").is_file()
