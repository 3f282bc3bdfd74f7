"""What publishes the project: the GitHub workflows (the book to GitHub Pages, the tests),
the README's badges and links, the Binder image (environment.yml, postBuild) and the
release metadata for Zenodo (.zenodo.json) against CITATION.cff."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from slicelib.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
# Commands a workflow may call that come with the runner, not with the repository.
RUNNER_COMMANDS = {"sudo", "apt-get", "systemctl"}


def _workflow(name: str) -> dict[str, Any]:
    return yaml.safe_load((ROOT / ".github" / "workflows" / name).read_text())


def _makefile_targets() -> set[str]:
    targets: set[str] = set()
    for line in (ROOT / "Makefile").read_text().splitlines():
        found = re.match(r"^([A-Za-z][\w.-]*(?:[ \t]+[A-Za-z][\w.-]*)*)[ \t]*:(?!=)", line)
        if found:
            targets.update(found.group(1).split())
    return targets


def _commands(script: str) -> list[list[str]]:
    """The simple commands of a shell ``run:`` script, each as its words, without leading
    ``NAME=value`` assignments and without ``sudo``."""
    commands = []
    for line in script.replace("\\\n", " ").splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = "#"
        words: list[str] = []
        for token in [*lexer, ";"]:
            if set(token) <= set(";&|"):  # a separator: ; && || | &
                while words and (re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]) or words[0] == "sudo"):
                    words.pop(0)
                if words:
                    commands.append(words)
                words = []
            else:
                words.append(token)
    return commands


def _steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [step for job in workflow["jobs"].values() for step in job.get("steps", [])]


def _apt_packages(commands: list[list[str]]) -> set[str]:
    return {
        word
        for words in commands
        if words[:2] == ["apt-get", "install"]
        for word in words[2:]
        if not word.startswith("-")
    }


def test_there_is_a_book_workflow_and_a_test_workflow() -> None:
    assert {p.name for p in WORKFLOWS} >= {"book.yml", "test.yml"}


@pytest.mark.parametrize("path", WORKFLOWS, ids=[p.name for p in WORKFLOWS])
def test_a_workflow_calls_only_what_exists(path: Path) -> None:
    workflow = yaml.safe_load(path.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads a bare `on` as True
    assert triggers and workflow["jobs"], path.name
    targets = _makefile_targets()
    for step in _steps(workflow):
        if "uses" in step:  # the official actions, at a released major version
            assert re.match(r"^actions/[\w-]+@v\d+$", step["uses"]), step["uses"]
            continue
        for words in _commands(step["run"]):
            name = words[0]
            if name == "make":
                wanted = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
                assert wanted and set(wanted) <= targets, (path.name, words)
            elif "/" in name:
                script = ROOT / name
                assert script.is_file() and os.access(script, os.X_OK), (path.name, name)
            else:
                assert name in RUNNER_COMMANDS, (path.name, words)


def test_the_test_workflow_runs_make_test_as_ci_does() -> None:
    runs = [
        words for step in _steps(_workflow("test.yml")) for words in _commands(step.get("run", ""))
    ]
    assert [".ci/run"] in runs
    ci = _commands((ROOT / ".ci" / "run").read_text())
    assert ci[-1] == ["make", "test"]
    # What `make test` installs as root, the runner's user installs with sudo first.
    tools = re.search(r"^tools:\n((?:\t.*\n)+)", (ROOT / "Makefile").read_text(), re.M)
    assert tools is not None
    in_makefile = set(
        re.findall(r"apt-get install -y -qq ([\w -]+?)(?: >|;|$)", tools.group(1), re.M)
    )
    makefile_packages = {p for group in in_makefile for p in group.split()}
    assert (
        _apt_packages(runs) == makefile_packages == {"dicom3tools", "orthanc", "orthanc-dicomweb"}
    )


def test_the_book_workflow_builds_the_study_and_deploys_its_book_to_pages() -> None:
    workflow = _workflow("book.yml")
    assert workflow["permissions"] == {"contents": "read", "pages": "write", "id-token": "write"}
    build, deploy = workflow["jobs"]["build"], workflow["jobs"]["deploy"]
    runs = [words for step in build["steps"] for words in _commands(step.get("run", ""))]
    assert ["make", "study"] in runs
    upload = next(s for s in build["steps"] if s.get("uses", "").startswith("actions/upload-pages"))
    book = build_parser().parse_args(["study"]).book  # where `slicelib study` puts the book
    assert upload["with"]["path"] == str(book) == "_build/html"
    assert deploy["needs"] == "build" and deploy["environment"]["name"] == "github-pages"
    assert [s["uses"].split("@")[0] for s in deploy["steps"]] == ["actions/deploy-pages"]
    assert "study" in _makefile_targets()


def _citation() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "CITATION.cff").read_text())


def test_zenodo_metadata_agrees_with_citation_cff() -> None:
    cff, zenodo = _citation(), json.loads((ROOT / ".zenodo.json").read_text())
    assert zenodo["title"] == cff["title"]
    assert zenodo["version"] == str(cff["version"])
    assert zenodo["license"].lower() == cff["license"].lower()
    assert zenodo["publication_date"] == str(cff["date-released"])
    authors = [a.get("name") or f"{a['family-names']}, {a['given-names']}" for a in cff["authors"]]
    assert [c["name"] for c in zenodo["creators"]] == authors
    assert zenodo["upload_type"] == "software"
    identifiers = {item["identifier"] for item in zenodo["related_identifiers"]}
    assert {cff["repository-code"], cff["url"]} <= identifiers
    assert zenodo["keywords"] == cff["keywords"]


def test_the_readme_carries_the_badges_and_the_book_s_link() -> None:
    cff, readme = _citation(), (ROOT / "README.md").read_text()
    repo = cff["repository-code"]
    for name in ("test.yml", "book.yml"):
        assert f"{repo}/actions/workflows/{name}/badge.svg" in readme
        assert (ROOT / ".github" / "workflows" / name).is_file()
    assert cff["url"] in readme  # the published book
    slug = repo.removeprefix("https://github.com/")
    binder = re.search(rf"https://mybinder\.org/v2/gh/{slug}/HEAD\?labpath=([\w%.-]+)", readme)
    assert binder is not None
    assert (ROOT / binder.group(1).replace("%2F", "/")).is_file()


def test_binder_builds_the_image_from_environment_yml_and_checks_it() -> None:
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    python = next(d for d in env["dependencies"] if isinstance(d, str) and d.startswith("python="))
    # The lock was compiled for this Python; pyproject.toml allows it.
    assert f"Python {python.split('=')[1]}" in (ROOT / "requirements" / "cpu.lock").read_text()
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    for line in pip:
        if line.startswith("-r "):
            assert (ROOT / line.split()[1]).is_file(), line
    assert "-e ." in pip
    # A binder/ (or .binder/) folder would make repo2docker ignore the files at the root.
    assert not (ROOT / "binder").exists() and not (ROOT / ".binder").exists()
    post_build = ROOT / "postBuild"
    assert os.access(post_build, os.X_OK)
    assert post_build.read_text().startswith("#!/bin/bash\n")
    # It passes in this environment (where the notebooks run).
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"
    done = subprocess.run(
        [str(post_build)], capture_output=True, text=True, env={**os.environ, "PATH": path}
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "the notebooks can run" in done.stdout
