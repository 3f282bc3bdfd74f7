"""Stage the book's source from the executed notebooks and build it with Jupyter Book.

The committed book (``_config.yml``, ``_toc.yml``, ``book/*.md``, ``notebooks/``)
builds at the repository root as a skeleton from the un-executed notebooks. The
runner stages a copy in ``<out>/book/`` instead, with

- the executed notebooks as ``notebooks/<name>.ipynb``;
- a table of contents whose training part lists one page per model and k;
- the front page's edition block (preset, data, reductions) and the
  reproducibility chapter's environment and commands filled in from the run;
- every figure glued in a notebook (``glue("fig_...", figure)``) written as
  ``book/figures/<key>.png``, for the chapters' numbered ``{figure}`` directives;
- glue references made strict (the skeleton tolerates missing glue keys);
- in each executed notebook, papermill's parameter cells removed from the page and
  the first heading made distinct (``Training: U-Net, k=1``),

and builds it offline with ``jupyter-book build <out>/book -W -n --keep-going``.
"""

from __future__ import annotations

import filecmp
import html
import json
import logging
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
from slicelib.outputs import check_output, writing
from slicelib.study.config import study_differences
from slicelib.study.notebooks import NotebookJob, StudyError
from slicelib.study.reading import conditional_markdown
from slicelib.study.steps import digest

logger = logging.getLogger(__name__)

BOOK_DIR = "book"
FIGURES_DIR = "figures"  # under book/: the glued figures of the executed notebooks
EDITION_MARKER = "<!-- study:edition -->"
ENVIRONMENT_MARKER = "<!-- study:environment -->"
COMMANDS_MARKER = "<!-- study:commands -->"
# The skeleton build tolerates glue keys it cannot find; the staged build must not.
# The skeleton also lacks the figures that the staged copy extracts from the notebooks.
SKELETON_ONLY_WARNINGS: tuple[str, ...] = ("mystnb.glue_ref", "image.not_readable")


def _entries(node: Any) -> Iterable[dict[str, Any]]:
    """Every file entry of a parsed ``_toc.yml`` (depth first)."""
    if isinstance(node, dict):
        if "file" in node:
            yield node
        for key in ("parts", "chapters", "sections"):
            for child in node.get(key, []) or []:
                yield from _entries(child)


def staged_toc(toc: dict[str, Any], jobs: list[NotebookJob]) -> dict[str, Any]:
    """The committed table of contents with the notebook entries of this run.

    ``notebooks/train`` becomes one entry per executed training copy (with its
    title); entries of notebooks that did not run are dropped, and so is a chapter
    none of whose notebooks ran.
    """
    names = {job.name: job for job in jobs}
    train = [job for job in jobs if job.name.startswith("train_")]

    def rewrite(items: list[Any]) -> list[Any]:
        out: list[Any] = []
        for item in items:
            file = item.get("file", "") if isinstance(item, dict) else ""
            if file == "notebooks/train":
                out.extend(
                    {"file": f"notebooks/{j.name}", "title": j.title or j.name} for j in train
                )
                continue
            if file.startswith("notebooks/") and file.split("/", 1)[1] not in names:
                continue
            item = dict(item)
            had_sections = bool(item.get("sections"))
            for key in ("parts", "chapters", "sections"):
                if key in item:
                    item[key] = rewrite(item[key])
                    if not item[key]:
                        del item[key]
            if had_sections and "sections" not in item:
                continue  # a chapter about notebooks none of which ran (e.g. the real arm)
            if "caption" in item and "chapters" not in item:
                continue  # a part whose chapters all went
            out.append(item)
        return out

    staged = dict(toc)
    for key in ("parts", "chapters"):
        if key in staged:
            staged[key] = rewrite(staged[key])
    return staged


def staged_config(config: dict[str, Any]) -> dict[str, Any]:
    """The committed ``_config.yml`` with the skeleton-only warning suppressions removed."""
    staged = dict(config)
    sphinx = dict(staged.get("sphinx", {}))
    sphinx_config = dict(sphinx.get("config", {}))
    kept = [
        w for w in sphinx_config.get("suppress_warnings", []) if w not in SKELETON_ONLY_WARNINGS
    ]
    sphinx_config["suppress_warnings"] = kept
    sphinx["config"] = sphinx_config
    staged["sphinx"] = sphinx
    return staged


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


def _setting_value(text: str) -> str:
    """A preset value in words: ``None`` (no reduction) reads "all", tuples as lists."""
    if text == "None":
        return "all (no limit)"
    if text in ("True", "False"):
        return "yes" if text == "True" else "no"
    return text.strip("()").replace("'", "")


def _setting_name(key: str) -> str:
    if key in SETTING_NAMES:
        return SETTING_NAMES[key]
    head, _, tail = key.rpartition(".")
    label = tail.replace("_", " ")
    if head.startswith("epochs"):
        from slicelib.methods import method_label

        return f"epochs, {method_label(tail)}"
    return f"{head.replace('.', ' ').replace('_', ' ')} {label}".strip()


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
            ours, theirs = _setting_value(ours), _setting_value(theirs)
        rows.append(f"| {_setting_name(key)} | {ours} | {theirs} |")
    return "\n".join(rows)


def duration_words(seconds: float) -> str:
    """``5025`` -> "1 h 23 min"; ``75`` -> "1 min 15 s"."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours} h {minutes:02d} min"
    if minutes:
        return f"{minutes} min {secs:02d} s"
    return f"{secs} s"


def notebook_seconds(paths: Iterable[Path]) -> float:
    """The summed papermill durations of executed notebooks (0 for those without)."""
    total = 0.0
    for path in paths:
        meta = json.loads(Path(path).read_text()).get("metadata", {}).get("papermill", {})
        total += float(meta.get("duration") or 0.0)
    return total


def edition_markdown(record: Mapping[str, Any], compute_seconds: float | None = None) -> str:
    """The front page's statement of what this book was built from, and how to
    rebuild it.

    ``record`` is the run record written by the runner (``<out>/study.json``);
    ``compute_seconds`` the notebooks' summed execution time, when known.
    """
    preset = record["preset"]
    scan = record.get("scan", {})
    counts = (
        f"{scan.get('patients', '?')} patients, {scan.get('volumes', '?')} volumes, "
        f"{scan.get('slices', '?')} slices"
    )
    lines = [":::{admonition} This edition", ":class: important", ""]
    if record.get("synthetic"):
        cohort = record.get("cohort") or {}
        lines.append(
            f"This book was built with the **{preset}** preset on the **synthetic cohort** "
            f"that slicelib generates (seed {cohort.get('seed', '?')}; {counts} after the "
            "scan), not on the TCIA collection. "
            "Its numbers show that every step runs end to end and how the methods compare "
            "on synthetic anatomy; they are not the study's results on real MRI."
        )
    else:
        lines.append(
            f"This book was built with the **{preset}** preset on the collection at "
            f"`{record.get('data_root')}` ({counts} selected)."
        )
    if preset == "demo":
        lines += [
            "",
            "The demo preset reduces these of the paper's settings to fit two CPU cores:",
            "",
            reductions_markdown(study_differences("demo")),
        ]
    elif preset == "smoke":
        lines += [
            "",
            "The smoke preset uses tiny images and a few training steps: it checks that "
            "the study runs, and its numbers mean nothing.",
        ]
    env = record.get("environment", {})
    commit = (env.get("git") or {}).get("commit")
    lines += [
        "",
        f"Built {record.get('finished_at', record.get('started_at', ''))} "
        f"with slicelib {(env.get('packages') or {}).get('slicelib', '?')}"
        + (f", commit `{commit[:12]}`" if commit else "")
        + (
            f"; the notebooks ran for {duration_words(compute_seconds)} in all"
            if compute_seconds
            else ""
        )
        + ".",
        ":::",
        "",
        ":::{admonition} How to reproduce",
        ":class: tip",
        "",
        "From a checkout"
        + (f" at commit `{commit[:12]}`" if commit else "")
        + f", with the **{preset}** preset:",
        "",
        "```bash",
        "pip install -e .",
        str(record.get("command", f"slicelib study --preset {preset}")),
        "```",
        "",
        "Steps whose inputs did not change are not run again; "
        "[Reproducibility](reproducibility.md) lists the environment.",
        ":::",
    ]
    return "\n".join(lines)


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
        checks = checks.reset_index()
        parts.append(_findings_table(checks, "Checks of the code against the paper's text"))
    return '<div class="findings-box">' + "".join(parts) + "</div>"


def environment_markdown(record: Mapping[str, Any]) -> str:
    """The environment record as a Markdown table."""
    rows = environment_rows(dict(record))
    lines = ["| item | value |", "|---|---|"]
    lines += [f"| {item} | {str(value).replace('|', '/')} |" for item, value in rows]
    return "\n".join(lines)


def commands_markdown(record: Mapping[str, Any]) -> str:
    """The exact command of this run, as a code block."""
    return "```bash\n" + str(record.get("command", "slicelib study")) + "\n```"


def book_notebook(path: Path, title: str | None = None) -> str:
    """An executed notebook as the book shows it (JSON text): the ``parameters`` and
    papermill's ``injected-parameters`` cells tagged ``remove-cell``, and, given a
    ``title``, the first Markdown heading replaced by it."""
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
                page = page or source.split("\n", 1)[0][2:].strip()
                if not retitled:
                    rest = source.split("\n", 1)[1] if "\n" in source else ""
                    cell["source"] = f"# {title}\n{rest}"
                    retitled = True
            context = first_sentence(source) or context
        elif _shows_image(cell) and "mystnb" not in cell["metadata"]:
            # A plotted output becomes a captioned figure whose alt text says what it is
            # (myst-nb's default alt text is the image's file name).
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


def _shows_image(cell: Mapping[str, Any]) -> bool:
    """True when a code cell displays a plot (not only glues one for a chapter)."""
    for output in cell.get("outputs", []):
        glued = (output.get("metadata") or {}).get("scrapbook")
        if glued and glued.get("mime_prefix"):  # glued with display=False: not shown
            continue
        if "image/png" in (output.get("data") or {}):
            return True
    return False


def glued_images(path: Path) -> dict[str, bytes]:
    """The PNG images an executed notebook glued with myst-nb, by glue key."""
    import base64

    notebook = json.loads(path.read_text())
    images: dict[str, bytes] = {}
    for cell in notebook.get("cells", []):
        for output in cell.get("outputs", []):
            meta = (output.get("metadata") or {}).get("scrapbook")
            if not meta:
                continue
            prefix = meta.get("mime_prefix", "")
            data = (output.get("data") or {}).get(f"{prefix}image/png")
            if data:
                text = "".join(data) if isinstance(data, list) else str(data)
                images[str(meta["name"])] = base64.b64decode(text)
    return images


def _sync(src: Path, dst: Path) -> None:
    """Copy ``src`` to ``dst`` only when the content differs (keeps Sphinx's view stable)."""
    if dst.is_file() and filecmp.cmp(src, dst, shallow=False):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, dst)


def _write(text: str, dst: Path) -> None:
    if dst.is_file() and dst.read_text() == text:
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_text(text)


def stage_book(
    source_root: Path,
    stage: Path,
    executed: Mapping[str, Path],
    jobs: list[NotebookJob],
    record: Mapping[str, Any],
) -> Path:
    """Write the book source of this run into ``stage``; returns ``stage``.

    ``executed`` maps each job's name to its executed notebook. Files that are
    no longer part of the book are removed from ``stage``; unchanged ones keep
    their modification time.
    """
    stage.mkdir(parents=True, exist_ok=True)
    wanted: set[Path] = set()

    toc = yaml.safe_load((source_root / "_toc.yml").read_text())
    config = yaml.safe_load((source_root / "_config.yml").read_text())
    ran = [job for job in jobs if job.name in executed]
    _write(yaml.safe_dump(staged_toc(toc, ran), sort_keys=False), stage / "_toc.yml")
    _write(yaml.safe_dump(staged_config(config), sort_keys=False), stage / "_config.yml")
    wanted |= {stage / "_toc.yml", stage / "_config.yml"}

    env = record.get("environment", {})
    fills = {
        EDITION_MARKER: edition_markdown(record, notebook_seconds(executed.values())),
        ENVIRONMENT_MARKER: environment_markdown(env),
        COMMANDS_MARKER: commands_markdown(record),
    }
    for src in sorted((source_root / BOOK_DIR).rglob("*")):
        if not src.is_file():
            continue
        dst = stage / BOOK_DIR / src.relative_to(source_root / BOOK_DIR)
        wanted.add(dst)
        if src.suffix == ".md":
            text = conditional_markdown(src.read_text(), executed)
            for marker, fill in fills.items():
                text = text.replace(marker, fill)
            _write(text, dst)
        else:
            _sync(src, dst)
    titles = {job.name: job.title for job in jobs}
    for name, path in executed.items():
        for key, png in glued_images(path).items():
            image = stage / BOOK_DIR / FIGURES_DIR / f"{key}.png"
            wanted.add(image)
            if not (image.is_file() and image.read_bytes() == png):
                image.parent.mkdir(parents=True, exist_ok=True)
                image.write_bytes(png)
        dst = stage / "notebooks" / f"{name}.ipynb"
        wanted.add(dst)
        title = titles.get(name)
        _write(
            book_notebook(path, f"Training: {title}" if name.startswith("train_") else title), dst
        )

    for path in sorted(stage.rglob("*"), reverse=True):
        if path.is_relative_to(stage / "_build"):
            continue
        if path.is_file() and path not in wanted:
            path.unlink()
        elif path.is_dir() and path != stage / "_build" and not any(path.iterdir()):
            path.rmdir()
    return stage


def tree_hash(root: Path) -> str:
    """Hash of every file's path and content under ``root`` (``_build`` excluded)."""
    import hashlib

    entries = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and not path.is_relative_to(root / "_build"):
            entries.append(
                (path.relative_to(root).as_posix(), hashlib.sha256(path.read_bytes()).hexdigest())
            )
    return digest(entries)


def build_book(stage: Path) -> Path:
    """Build the staged book offline in strict mode; returns its html folder.

    Runs ``jupyter-book build <stage> -W -n --keep-going --all``; raises
    :class:`StudyError` with the warnings when the build fails.
    """
    command = [
        sys.executable,
        "-c",
        "from jupyter_book.cli.main import main; main()",
        "build",
        str(stage),
        "-W",
        "-n",
        "--keep-going",
        "--all",
    ]
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
    """Copy the built html to ``dest`` in one rename, replacing an earlier book there.

    Refuses to replace a folder that slicelib did not write as a book, or one where
    files were added beside the book's (:func:`slicelib.outputs.check_output`).
    """
    dest = dest.resolve()
    check_output(dest, "book", force=True, what="--book")
    with writing(dest, "--book"), atomic_directory(dest, kind="book") as tmp:
        shutil.copytree(html, tmp, dirs_exist_ok=True)
    return dest
