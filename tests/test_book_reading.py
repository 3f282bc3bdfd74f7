"""The book as its readers meet it, checked on its sources (no study is run): each
statistical method described one way, each figure shown once with a complete caption,
each table numbered, and the front page's findings written from the run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from slicelib.study import reading

ROOT = Path(__file__).resolve().parents[1]
CHAPTERS = sorted((ROOT / "book").glob("*.md"))
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def _cells(kind: str) -> list[tuple[str, int, dict[str, Any], str]]:
    """(notebook name, index, cell, source) of every ``kind`` cell of every notebook."""
    found = []
    for path in NOTEBOOKS:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] == kind:
                found.append((path.stem, i, cell, "".join(cell["source"])))
    return found


def _prose() -> list[tuple[str, str]]:
    """(where, text) of every chapter and every notebook Markdown cell."""
    texts = [(page.name, page.read_text()) for page in CHAPTERS]
    texts += [(f"{name}.ipynb[{i}]", source) for name, i, _, source in _cells("markdown")]
    return texts


# The tests the book uses, and names of tests it does not use: a text that names one of
# these describes the statistics in a way the code does not compute.
NOT_USED = re.compile(r"wilcoxon|signed[- ]rank|mann[- ]whitney|welch|bootstrap p", re.I)
P_VALUE = re.compile(r"\bp-values?\b", re.I)
TEST_NAMED = re.compile(r"\b(\w[\w-]*) (?:permutation )?test\b", re.I)


def test_each_statistical_method_is_described_one_way() -> None:
    wrong = [f"{where}: {m.group(0)}" for where, text in _prose() for m in NOT_USED.finditer(text)]
    assert not wrong, wrong
    # A paragraph that names the test behind its p-values names the sign-flip test.
    for where, text in _prose():
        for paragraph in re.split(r"\n\s*\n", text):
            if P_VALUE.search(paragraph) and " test" in paragraph and "p floor" not in paragraph:
                named = {m.group(1).lower() for m in TEST_NAMED.finditer(paragraph)}
                tests = named & {"sign-flip", "t", "student-t", "permutation", "exact"}
                assert not tests or "sign-flip" in paragraph.lower(), (where, paragraph[:200])
    # Intervals are Student-t intervals wherever a chapter names their kind.
    for where, text in _prose():
        assert "bootstrap interval over patients" not in text.lower(), where


CHAPTER_FIGURE = re.compile(r"```\{figure\} figures/(?P<key>[\w-]+)\.png\n(?P<body>.*?)```", re.S)
GLUE_CALL = re.compile(r"\bglue\(\s*f?[\"'](?P<key>[^\"']+)[\"'](?P<args>[^\n]*)")


def _chapter_figures() -> list[tuple[str, str, str]]:
    """(chapter, glue key, directive body) of every {figure} of every chapter."""
    return [
        (page.name, m["key"], m["body"])
        for page in CHAPTERS
        for m in CHAPTER_FIGURE.finditer(page.read_text())
    ]


def test_no_figure_is_shown_twice() -> None:
    keys = [key for _, key, _ in _chapter_figures()]
    assert keys, "the chapters include no figure"
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
    glued: dict[str, str] = {}
    for name, i, _, source in _cells("code"):
        for m in GLUE_CALL.finditer(source):
            if m["key"].startswith(("fig", "real_fig")):
                glued[m["key"]] = m["args"]
                # A figure glued for a chapter is shown by the chapter only.
                assert "display=False" in m["args"], f"{name}[{i}] shows {m['key']} too"
    missing = [key for key in keys if key not in glued and not key.startswith("fig1_")]
    assert not missing, f"chapters include figures no notebook glues: {missing}"


def _caption_problems(caption: str) -> list[str]:
    problems = []
    text = " ".join(caption.split())
    if not text:
        problems.append("no caption")
    elif text.endswith(("...", "…")) or not text.endswith((".", "?", ")")):
        problems.append(f"cut or unfinished: {text[-40:]!r}")
    if re.search(r"\((?:supplement )?Fig\. \d\)", text):
        problems.append("names the supplement's figure number, which the book's numbers clash with")
    return problems


# A code cell whose last line shows a plotted figure (a figure the cell draws or holds).
SHOWS_FIGURE = re.compile(
    r"^(fig|figs\.get\(.*\)|figures\.comparison_figure\(.*\)|binned_curves\(.*\)|reformats\(.*\))"
    r"\s*(#.*)?$"
)


def test_every_figure_has_a_complete_numbered_caption() -> None:
    problems = []
    for chapter, key, body in _chapter_figures():
        options = [line for line in body.splitlines() if line.startswith(":")]
        caption = "\n".join(line for line in body.splitlines() if not line.startswith(":"))
        if not any(line.startswith(":name:") for line in options):
            problems.append(f"{chapter}: {key} has no :name: (no number to refer to)")
        problems += [f"{chapter}: {key}: {p}" for p in _caption_problems(caption)]
    shown = 0
    for name, i, cell, source in _cells("code"):
        last = source.rstrip().splitlines()[-1] if source.strip() else ""
        if not SHOWS_FIGURE.match(last):
            continue
        shown += 1
        figure = cell["metadata"].get("mystnb", {}).get("figure", {})
        problems += [f"{name}[{i}]: {p}" for p in _caption_problems(figure.get("caption", ""))]
    for where, text in _prose():
        for heading in re.findall(r"^#+ .*$", text, re.M):
            if re.search(r"\(Fig\. \d\)", heading):
                problems.append(f"{where}: heading {heading!r} names the supplement's figure")
    assert shown >= 10, f"found only {shown} figures shown by notebooks"
    assert not problems, "\n".join(problems)


def test_figure_names_are_unique() -> None:
    names = [m for page in CHAPTERS for m in re.findall(r"^:name: (\S+)", page.read_text(), re.M)]
    for _, _, cell, _ in _cells("code"):
        name = cell["metadata"].get("mystnb", {}).get("figure", {}).get("name")
        names += [name] if name else []
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)


PIPE_TABLE = re.compile(r"^\|.*\|\n\|[-:| ]+\|$", re.M)


def test_every_table_is_numbered_and_captioned() -> None:
    problems = []
    for page in CHAPTERS:
        text = page.read_text()
        blocks = [m.span() for m in re.finditer(r":::\{table\} (.+?)\n(.*?)\n:::", text, re.S)]
        for m in PIPE_TABLE.finditer(text):
            if not any(a <= m.start() < b for a, b in blocks):
                problems.append(f"{page.name}: a table outside a {{table}} directive")
        for m in re.finditer(r":::\{table\} (.+?)\n", text):
            problems += [f"{page.name}: table: {p}" for p in _caption_problems(m.group(1))]
    # A notebook cell that ends in a table shows it through reading.table, with a caption.
    table_call = re.compile(r"^reading\.table\(.*, \"(?P<caption>[^\"]+)\"\)")
    frames = re.compile(
        r"^(\w+|present\.\w+_table\(.*\)|analysis\.\w+_table\(.*\)|claims\.\w+_table\(.*\)"
        r"|[\w.]+\.round\(\d\)|[\w.]+\.set_index\(.*\)(\[.*\])?(\.round\(\d\))?)\s*(#.*)?$"
    )
    tables = 0
    for name, i, _, source in _cells("code"):
        last = source.rstrip().splitlines()[-1] if source.strip() else ""
        call = table_call.match(last)
        if call:
            tables += 1
            problems += [f"{name}[{i}]: {p}" for p in _caption_problems(call["caption"])]
        elif frames.match(last) and not SHOWS_FIGURE.match(last):
            problems.append(f"{name}[{i}]: shows {last!r} without a numbered caption")
        if re.search(r"^display\((present|analysis|claims)\.\w+_table", source, re.M):
            problems.append(f"{name}[{i}]: displays a table without a numbered caption")
    assert tables >= 25, f"found only {tables} captioned notebook tables"
    assert not problems, "\n".join(problems)
    # The book renders those Markdown outputs as MyST, in preference to their html.
    config = yaml.safe_load((ROOT / "_config.yml").read_text())["sphinx"]["config"]
    assert config["nb_render_markdown_format"] == "myst"
    assert ["*", "text/markdown", 25] in config["nb_mime_priority_overrides"]


def test_table_markdown_is_a_numbered_table_that_escapes_its_cells() -> None:
    frame = pd.DataFrame(
        {"method": ["linear", "U-Net"], "PSNR": [31.521455, 32.1], "p": ["< 0.001", "a | b"]}
    ).set_index("method")
    text = reading.table_markdown(frame, "Gains.", "tbl-gains")
    lines = text.splitlines()
    assert lines[:3] == [":::{table} Gains.", ":name: tbl-gains", ""]
    assert lines[3] == "| method | PSNR | p |" and lines[-1] == ":::"
    assert "| linear | 31.5215 | \\< 0.001 |" in lines and "| U-Net | 32.1 | a \\| b |" in lines
    plain = reading.table_markdown(frame.reset_index(), "No index.")
    assert ":name:" not in plain and plain.splitlines()[2] == "| method | PSNR | p |"


def _glue_values_keys(source: str) -> list[str]:
    """The literal keys of the dicts a cell passes to ``glue_values({...})``."""
    keys = []
    for m in re.finditer(r"glue_values\(\s*\{", source):
        depth, end = 1, m.end()
        while depth and end < len(source):
            depth += {"{": 1, "}": -1}.get(source[end], 0)
            end += 1
        keys += re.findall(r"[{,]\s*\"(\w+)\":", source[m.end() - 1 : end])
    return keys


def test_one_quantity_has_one_source() -> None:
    """A value the chapters read is glued by one notebook, from one computation: the
    k=1 SSIM gain as the claim measures it, the U-Net's time per slice from the full
    evaluation, the split and the calibration targets from the run."""
    where: dict[str, set[str]] = {}
    for name, _, _, source in _cells("code"):
        keys = [m["key"] for m in GLUE_CALL.finditer(source)] + _glue_values_keys(source)
        for key in keys:
            where.setdefault(key, set()).add(name)
    twice = {k: sorted(v) for k, v in where.items() if len(v) > 1}
    assert not twice, twice
    data = (ROOT / "book" / "data.md").read_text()
    assert "split_percent" in data and "70 / 15 / 15" not in data
    assert "about as hard as on the real collection" not in "".join(t for _, t in _prose())
    refine = next(
        s for n, _, _, s in _cells("code") if n == "diffusion_refine" and "rf_unet_ms" in s
    )
    assert '"rf_unet_ms": present.WallClock(ms["unet"])' in refine
    assert 'res.summary.set_index("method")["ms_per_slice"]' in refine
    import inspect

    from slicelib.study import analysis

    assert "k_ratio(" in inspect.getsource(analysis.k_comparison)


def test_front_page_states_the_finding_before_the_tables() -> None:
    intro = (ROOT / "book" / "intro.md").read_text()
    first = intro.index("headline_synthetic")
    assert first < intro.index("<!-- study:edition -->") < intro.index("findings_box")
    assert "real_headline" in intro and "real_findings_box" in intro
    assert intro.index("How far to trust it") < intro.index("<!-- study:edition -->")
    title = intro.splitlines()[0]
    config = (ROOT / "_config.yml").read_text()
    book_title = re.search(r'^title: "(.*)"', config, re.M)
    assert book_title and title.lstrip("# ") != book_title.group(1)
    # Every number of the finding is glued, none typed.
    finding = intro[: intro.index("<!-- study:edition -->")]
    prose = re.sub(r"\{glue:text\}`[^`]*`", "", finding)
    assert not re.search(r"\d+\.\d+", prose), "the finding types a number"


@pytest.mark.parametrize("ran", [{"real_anatomy"}, set()])
def test_conditional_blocks_follow_the_notebooks_that_ran(ran: set[str]) -> None:
    text = (
        "a\n<!-- study:if real_anatomy -->\nreal {glue}\n<!-- study:else -->\nno real arm\n"
        "<!-- study:end -->\nb <!-- study:if other -->x<!-- study:end -->c\n"
    )
    out = reading.conditional_markdown(text, ran)
    assert ("real {glue}" in out) == bool(ran) and ("no real arm" in out) != bool(ran)
    assert "study:" not in out and out.startswith("a\n") and out.endswith("b c\n")
    intro = reading.conditional_markdown((ROOT / "book" / "intro.md").read_text(), ran)
    assert ("real_anatomy.ipynb::" in intro) == bool(ran)
    assert ("This run has no real arm" in intro) != bool(ran)


def test_verdict_badges_differ_by_outcome_and_mark_illustrations() -> None:
    from slicelib.study.book import verdict_badge

    def classes(verdict: str) -> set[str]:
        found = re.search(r'class="([^"]*)"', verdict_badge(verdict))
        assert found
        return set(found.group(1).split()) - {"verdict-badge"}

    outcomes = ["reproduced", "not reproduced", "inconclusive", "not testable here"]
    colours = [classes(f"{o} — illustration (synthetic cohort)") for o in outcomes]
    assert all("verdict-illustration" in c for c in colours)
    assert len({frozenset(c) for c in colours}) == len(outcomes)
    assert classes("not reproduced") == {"verdict-not-reproduced"}
    assert "verdict-other" not in classes("too few patients to test")
    css = (ROOT / "book" / "_static" / "slicelib.css").read_text()
    for c in set().union(*colours):
        assert f".{c}" in css, c
    badge = re.search(r"\.verdict-badge \{(.*?)\}", css, re.S)
    assert badge and "nowrap" not in badge.group(1)  # a phone wraps a verdict, never cuts it
