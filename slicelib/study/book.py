"""The book: the committed source (``_config.yml``, ``_toc.yml``, ``book/``, ``notebooks/``)
builds as a skeleton from the un-executed notebooks; the runner stages it in ``<out>/book/``
with the executed notebooks, one training page per model and k, the edition and environment
filled in, the glued figures as ``book/figures/<key>.png`` and strict glue references, and
builds it offline in strict mode."""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from slicelib.environment import environment_rows
from slicelib.io import atomic_directory
from slicelib.methods import method_label
from slicelib.outputs import check_output, writing
from slicelib.study.config import study_differences
from slicelib.study.notebooks import NotebookJob, StudyError
from slicelib.study.reading import conditional_markdown
from slicelib.study.steps import digest

BOOK_DIR = "book"
FIGURES_DIR = "figures"  # under book/: the glued figures of the executed notebooks
# The skeleton build tolerates glue keys it cannot find; the staged build must not.
# The skeleton also lacks the figures that the staged copy extracts from the notebooks.
SKELETON_ONLY_WARNINGS: tuple[str, ...] = ("mystnb.glue_ref", "image.not_readable")


def staged_toc(toc: dict[str, Any], jobs: list[NotebookJob]) -> dict[str, Any]:
    """The committed table of contents with ``notebooks/train`` as one entry per training
    copy in ``jobs`` (with its title), less the entries of notebooks not in ``jobs`` and
    the chapters and parts left empty."""
    names, nested = {job.name for job in jobs}, ("parts", "chapters", "sections")

    def rewrite(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            file = item.get("file", "")
            if file == "notebooks/train":
                out += [
                    {"file": f"notebooks/{j.name}", "title": j.title or j.name}
                    for j in jobs
                    if j.name.startswith("train_")
                ]
            elif not file.startswith("notebooks/") or file.removeprefix("notebooks/") in names:
                staged = {k: rewrite(v) if k in nested else v for k, v in item.items()}
                staged = {k: v for k, v in staged.items() if v or k not in nested}
                # a chapter none of whose notebooks ran (the real arm's), or a part emptied
                emptied = bool(item.get("sections")) and "sections" not in staged
                if not emptied and ("caption" not in staged or "chapters" in staged):
                    out.append(staged)
        return out

    return {k: rewrite(v) if k in ("parts", "chapters") else v for k, v in toc.items()}


def staged_config(config: dict[str, Any]) -> dict[str, Any]:
    """The committed ``_config.yml`` without the skeleton-only warning suppressions."""
    sphinx = config.get("sphinx", {})
    options = sphinx.get("config", {})
    kept = [w for w in options.get("suppress_warnings", []) if w not in SKELETON_ONLY_WARNINGS]
    return {**config, "sphinx": {**sphinx, "config": {**options, "suppress_warnings": kept}}}


# Readable names of the settings a preset changes (``preset_differences`` keys);
# a key missing here is shown with its dots and underscores as spaces.
SETTING_NAMES: dict[str, str] = {
    "prepare.size": "image size (pixels per side)",
    "model.ddpm_channels": "DDPM base channels",
    "model.residual_from_linear": "generators start at linear interpolation (global skip)",
    "crop": "training crop (pixels per side)",
    "steps_per_epoch": "training steps per epoch",
    "val_max_slices": "validation slices per epoch",
    "lr": "learning rate",
    "eval.ddim_steps": "DDIM step counts",
    "eval.ddpm_samples": "DDPM samples averaged per slice",
    "eval.ddpm_max_slices": "test slices the DDPM is scored on",
    "uncertainty.members": "ensemble members",
    "uncertainty.mc_samples": "MC dropout samples",
    "prepare.split": "patients in training / validation / test",
    "batch.ddpm": "DDPM batch size",
    "cpu_precision": "arithmetic on CPUs",
    "ddpm_ablation.cosine.schedule": "DDPM ablation: a cosine schedule",
    "ddpm_ablation.rescaled.rescale": "DDPM ablation: data diffused in [-1, 1]",
    "refine.train.epochs": "epochs, diffusion refiner",
    "refine.train.lr": "learning rate, diffusion refiner",
    "refine.train.crop": "training crop, diffusion refiner",
    "refine.train.steps_per_epoch": "training steps per epoch, diffusion refiner",
    "refine.train.val_max_slices": "validation slices per epoch, diffusion refiner",
}
_DIFFERENCE = re.compile(r"^(?P<key>[^:]+): (?P<ours>.*) \((?P<ref>[^:]+): (?P<theirs>.*)\)$")
# A preset value in words: ``None`` (no reduction) reads "all", tuples as lists.
_VALUE_WORDS = {"None": "all (no limit)", "True": "yes", "False": "no"}


def reductions_markdown(lines: Iterable[str]) -> str:
    """``preset_differences`` lines (``"crop: 40 (paper: None)"``) as a Markdown table
    in words: setting, this preset's value, the paper's."""
    rows = ["| setting | this edition | the paper |", "|---|---|---|"]
    for line in lines:
        match = _DIFFERENCE.match(line)
        if match is None:
            rows.append(f"| {line} | | |")
            continue
        key, ours, theirs = match["key"], match["ours"], match["theirs"]
        if key.startswith("ddpm_ablation."):  # a variant the paper preset does not train
            ours, theirs = "trained", "not trained"
        elif key.endswith(".split"):  # fractions of the patients, as percentages
            ours, theirs = (
                " / ".join(f"{100 * float(f):g}" for f in v.strip("()").split(",")) + " %"
                for v in (ours, theirs)
            )
        else:
            ours, theirs = (
                _VALUE_WORDS.get(v, v.strip("()").replace("'", "")) for v in (ours, theirs)
            )
        head, _, tail = key.rpartition(".")
        if head.startswith("epochs") and key not in SETTING_NAMES:
            name = f"epochs, {method_label(tail)}"
        else:
            name = SETTING_NAMES.get(key, key.replace(".", " ").replace("_", " ").strip())
        rows.append(f"| {name} | {ours} | {theirs} |")
    return "\n".join(rows)


def duration_words(seconds: float) -> str:
    """``5025`` -> "1 h 23 min"; ``75`` -> "1 min 15 s"."""
    hours, rest = divmod(int(round(seconds)), 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {secs:02d} s" if minutes else f"{secs} s"


def notebook_seconds(paths: Iterable[Path]) -> float:
    """The summed papermill durations of executed notebooks (0 for those without)."""
    metadata = (json.loads(Path(path).read_text()).get("metadata", {}) for path in paths)
    return sum((float(m.get("papermill", {}).get("duration") or 0.0) for m in metadata), 0.0)


_PRESET_NOTES = {
    "demo": "\n\nThe demo preset reduces these of the paper's settings to fit two CPU cores:\n\n",
    "smoke": "\n\nThe smoke preset uses tiny images and a few training steps: it checks that the "
    "study runs, and its numbers mean nothing.",
}


def edition_markdown(record: Mapping[str, Any], compute_seconds: float | None = None) -> str:
    """The front page's statement of what this book was built from, and how to rebuild it;
    ``record``: the runner's ``<out>/study.json``, ``compute_seconds``: the notebooks'
    summed execution time, when known."""
    preset, scan, env = record["preset"], record.get("scan", {}), record.get("environment", {})
    counts = ", ".join(f"{scan.get(n, '?')} {n}" for n in ("patients", "volumes", "slices"))
    if record.get("synthetic"):
        seed = (record.get("cohort") or {}).get("seed", "?")
        data = (
            f"the **synthetic cohort** that slicelib generates (seed {seed}; {counts} after the "
            "scan), not on the TCIA collection. Its numbers show that every step runs end to end "
            "and how the methods compare on synthetic anatomy; they are not the study's results "
            "on real MRI."
        )
    else:
        data = f"the collection at `{record.get('data_root')}` ({counts} selected)."
    note = _PRESET_NOTES.get(preset, "")
    if preset == "demo":
        note += reductions_markdown(study_differences("demo"))
    commit = (env.get("git") or {}).get("commit")
    commit = f" commit `{commit[:12]}`" if commit else ""
    took = duration_words(compute_seconds or 0)
    ran = f"; the notebooks ran for {took} in all" if compute_seconds else ""
    return f"""\
:::{{admonition}} This edition
:class: important

This book was built with the **{preset}** preset on {data}{note}

Built {record.get("finished_at", record.get("started_at", ""))} with slicelib \
{(env.get("packages") or {}).get("slicelib", "?")}{commit and "," + commit}{ran}.
:::

:::{{admonition}} How to reproduce
:class: tip

From a checkout{commit and " at" + commit}, with the **{preset}** preset:

```bash
pip install -e .
{record.get("command", f"slicelib study --preset {preset}")}
```

Steps whose inputs did not change are not run again; [Reproducibility](reproducibility.md) \
lists the environment.
:::"""


# Verdicts and the badge class that colours them (slicelib.css), by the outcome before
# any note; a verdict that is an illustration is also marked as one.
BADGES: dict[str, str] = {
    "reproduced": "verdict-reproduced",
    "matches": "verdict-reproduced",
    "not reproduced": "verdict-not-reproduced",
    "differs": "verdict-not-reproduced",
    "inconclusive": "verdict-inconclusive",
    "too few patients to test": "verdict-not-testable-here",
    "not testable here": "verdict-not-testable-here",
    "not testable at this budget": "verdict-not-testable-here",
}


def verdict_badge(verdict: str) -> str:
    """The verdict as an html badge, coloured by its outcome and marked when it is an
    illustration; a verdict that timings decide is coloured alike in every run."""
    from slicelib.study.claims import NOTE_SEPARATOR, TIMED

    text = str(verdict)
    if TIMED in text:
        css = "verdict-timed"
    else:
        css = BADGES.get(text.split(NOTE_SEPARATOR)[0].lower(), "verdict-other")
        css += " verdict-illustration" if "illustration" in text.lower() else ""
    return f'<span class="verdict-badge {css}">{html.escape(text)}</span>'


def _collapsed(text: str) -> str:
    """A cell of several estimates ("a; b; c") as its first, the rest behind a click."""
    first, _, rest = text.partition("; ")
    if not rest:
        return html.escape(text)
    more = rest.count("; ") + 1
    return (
        f"<details><summary>{html.escape(first)} (and {more} more)</summary>"
        f"{html.escape(rest)}</details>"
    )


def _findings_table(table: pd.DataFrame, title: str) -> str:
    """``table``: a first column naming the row, then the columns shown, ``verdict`` last."""
    names = list(table.columns)
    head = "".join(f"<th>{html.escape(str(name))}</th>" for name in names)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td>{_collapsed(str(row[n])) if n == 'this run' else html.escape(str(row[n]))}</td>"
            for n in names[:-1]
        )
        + f"<td>{verdict_badge(str(row[names[-1]]))}</td></tr>"
        for _, row in table.iterrows()
    )
    return (
        f'<p class="findings-title"><strong>{html.escape(title)}</strong></p>'
        f'<table class="findings"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'
    )


def findings_html(claims: pd.DataFrame, checks: pd.DataFrame | None = None) -> str:
    """The front page's results box: the claims table (a row per claim, indexed by the
    claim, with ``original``, ``this run``, ``margin`` and ``verdict``) and, apart, the
    checks of the code (``checks``: indexed by what is checked, its columns shown as
    they are, ``verdict`` last)."""
    shown = [c for c in ("original", "this run", "margin", "verdict") if c in claims.columns]
    claims = claims[shown].rename_axis("claim").reset_index()
    parts = [_findings_table(claims, "The original's claims, tested by this run")]
    if checks is not None and len(checks):
        title = "Checks of the code against the paper's text"
        parts.append(_findings_table(checks.reset_index(), title))
    return '<div class="findings-box">' + "".join(parts) + "</div>"


def book_notebook(path: Path, title: str | None = None) -> str:
    """An executed notebook as the book shows it (JSON text): the ``parameters`` and
    papermill's ``injected-parameters`` cells tagged ``remove-cell``, each shown plot
    captioned from its section, and, given a ``title``, the first heading replaced by it."""
    notebook = json.loads(path.read_text())
    retitled = title is None
    page, context = title or "", ""
    for cell in notebook.get("cells", []):
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if {"parameters", "injected-parameters"} & set(tags) and "remove-cell" not in tags:
            tags.append("remove-cell")
        if cell.get("cell_type") == "markdown":
            source = "".join(cell.get("source", []))
            if source.startswith("# "):
                first, _, rest = source.partition("\n")
                page = page or first[2:].strip()
                if not retitled:
                    cell["source"] = f"# {title}\n{rest}"
                    retitled = True
            context = first_sentence(source) or context
        elif _shows_image(cell) and "mystnb" not in cell["metadata"]:
            # A captioned figure whose alt text says what it is (not the file's name).
            words = context or page
            cell["metadata"]["mystnb"] = {
                "figure": {"caption": words},
                "image": {"alt": f"{page}: {words}" if page and words != page else words},
            }
    return json.dumps(notebook, indent=1, ensure_ascii=False) + "\n"


def first_sentence(markdown: str, limit: int = 200) -> str:
    """A Markdown cell's last heading and the first sentence after it, as plain text
    (emphasis, links, roles and math markers removed), at most ``limit`` characters."""
    heading = ""
    body: list[str] = []
    for line in markdown.strip().splitlines():
        if line.startswith("#"):
            heading, body = line.lstrip("#").strip(), []
        else:
            body.append(line)
    text = " ".join(" ".join(body).split())
    text = re.sub(r"\{[a-z:]+\}`([^`<]*)(<[^>]*>)?`", r"\1", text)  # {doc}`x <y>` -> x
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", text)  # [x](y) -> x
    text = re.sub(r"[*_`$]", "", text)
    sentence = re.split(r"(?<=[.;])\s", text, maxsplit=1)[0].rstrip(";")
    words = f"{heading}. {sentence}" if heading and sentence else heading or sentence
    return words if len(words) <= limit else words[: limit - 1].rstrip() + "…"


def _glued(output: Mapping[str, Any]) -> dict[str, Any]:  # myst-nb's glue record of an output
    return (output.get("metadata") or {}).get("scrapbook") or {}


def _shows_image(cell: Mapping[str, Any]) -> bool:
    """True when a code cell displays a plot (glued with display=False: not shown)."""
    return any(
        not _glued(o).get("mime_prefix") and "image/png" in (o.get("data") or {})
        for o in cell.get("outputs", [])
    )


def glued_images(path: Path) -> dict[str, bytes]:
    """The PNG images an executed notebook glued with myst-nb, by glue key."""
    images: dict[str, bytes] = {}
    for cell in json.loads(path.read_text()).get("cells", []):
        for output in cell.get("outputs", []):
            if not (meta := _glued(output)):
                continue
            data = (output.get("data") or {}).get(f"{meta.get('mime_prefix', '')}image/png")
            if data:
                text = "".join(data) if isinstance(data, list) else str(data)
                images[str(meta["name"])] = base64.b64decode(text)
    return images


def stage_book(
    source_root: Path,
    stage: Path,
    executed: Mapping[str, Path],
    jobs: list[NotebookJob],
    record: Mapping[str, Any],
) -> Path:
    """Write the book source of this run into ``stage`` (``executed``: each job's executed
    notebook by name); returns ``stage``. Files no longer part of the book are removed from
    it; unchanged ones keep their modification time."""
    toc = yaml.safe_load((source_root / "_toc.yml").read_text())
    config = yaml.safe_load((source_root / "_config.yml").read_text())
    ran = [job for job in jobs if job.name in executed]
    files: dict[Path, bytes | str] = {
        stage / "_toc.yml": yaml.safe_dump(staged_toc(toc, ran), sort_keys=False),
        stage / "_config.yml": yaml.safe_dump(staged_config(config), sort_keys=False),
    }
    environment = environment_rows(dict(record.get("environment", {})))
    fills = {  # the markers of the book's pages and what replaces them
        "<!-- study:edition -->": edition_markdown(record, notebook_seconds(executed.values())),
        "<!-- study:environment -->": "\n".join(
            ["| item | value |", "|---|---|"]
            + [f"| {item} | {str(value).replace('|', '/')} |" for item, value in environment]
        ),
        "<!-- study:commands -->": f"```bash\n{record.get('command', 'slicelib study')}\n```",
    }
    for src in sorted(p for p in (source_root / BOOK_DIR).rglob("*") if p.is_file()):
        dst = stage / BOOK_DIR / src.relative_to(source_root / BOOK_DIR)
        files[dst] = src.read_bytes()
        if src.suffix == ".md":
            text = conditional_markdown(src.read_text(), executed)
            for marker, fill in fills.items():
                text = text.replace(marker, fill)
            files[dst] = text
    titles = {job.name: job.title for job in jobs}
    for name, path in executed.items():
        for key, png in glued_images(path).items():
            files[stage / BOOK_DIR / FIGURES_DIR / f"{key}.png"] = png
        title = f"Training: {titles.get(name)}" if name.startswith("train_") else titles.get(name)
        files[stage / "notebooks" / f"{name}.ipynb"] = book_notebook(path, title)
    for dst, data in files.items():  # written only when changed: Sphinx's view stays stable
        data = data.encode() if isinstance(data, str) else data
        if not (dst.is_file() and dst.read_bytes() == data):
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(data)
    for path in sorted(stage.rglob("*"), reverse=True):
        if path.is_relative_to(stage / "_build"):
            continue
        if path.is_file() and path not in files:
            path.unlink()
        elif path.is_dir() and not any(path.iterdir()):
            path.rmdir()
    return stage


def tree_hash(root: Path) -> str:
    """Hash of every file's path and content under ``root`` (``_build`` excluded)."""
    return digest(
        [
            (path.relative_to(root).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
            for path in sorted(root.rglob("*"))
            if path.is_file() and not path.is_relative_to(root / "_build")
        ]
    )


def build_book(stage: Path) -> Path:
    """Build the staged book offline in strict mode; returns its html folder, or raises
    :class:`StudyError` with the first warnings when the build fails."""
    main = "from jupyter_book.cli.main import main; main()"
    command = [sys.executable, "-c", main, "build", str(stage), "-W", "-n", "--keep-going", "--all"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    html = stage / "_build" / "html"
    if done.returncode != 0 or not (html / "index.html").is_file():
        output = done.stdout + done.stderr
        problems = [line for line in output.splitlines() if "WARNING" in line or "ERROR" in line]
        detail = "; ".join(problems[:3]) or output.strip().splitlines()[-1:]
        log = stage / "_build" / "build.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(output)
        raise StudyError(f"book build failed in {stage}: {detail} (full log: {log})")
    return html


def publish(html: Path, dest: Path) -> Path:
    """Copy the built html to ``dest`` in one rename, replacing an earlier book there;
    refuses a folder that slicelib did not write as a book, or one where files were added
    beside the book's (:func:`slicelib.outputs.check_output`)."""
    dest = dest.resolve()
    check_output(dest, "book", force=True, what="--book")
    with writing(dest, "--book"), atomic_directory(dest, kind="book") as tmp:
        shutil.copytree(html, tmp, dirs_exist_ok=True)
    return dest
