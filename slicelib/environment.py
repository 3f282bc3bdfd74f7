"""A record of the software and hardware a run used: what the book's reproducibility
chapter shows and what ``slicelib study`` writes to ``<out>/environment.json``."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import platform
import subprocess
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slicelib import __version__
from slicelib.io import write_json

if TYPE_CHECKING:
    import torch

logger = logging.getLogger(__name__)

# The distributions whose versions change results or the book.
PACKAGES: tuple[str, ...] = (
    "slicelib",
    "torch",
    "numpy",
    "scipy",
    "scikit-image",
    "pydicom",
    "nibabel",
    "pandas",
    "matplotlib",
    "papermill",
    "jupyter-book",
    "myst-nb",
    "sphinx",
)


def package_versions(names: tuple[str, ...] = PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution, ``None`` when it is not installed.
    slicelib's is the running code's :data:`slicelib.__version__` (an editable install's
    metadata keeps the version it was installed with)."""
    versions: dict[str, str | None] = {}
    for name in names:
        if name == "slicelib":
            versions[name] = __version__
            continue
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def installed_distributions() -> dict[str, str]:
    """Every distribution installed in this interpreter's environment, name -> version,
    sorted by name (the first found wins where a name is installed twice)."""
    found: dict[str, str] = {}
    for dist in metadata.distributions():
        name = dist.metadata["Name"]
        if name and name not in found:
            found[name] = dist.version
    return dict(sorted(found.items(), key=lambda item: item[0].lower()))


def git_state(repo: Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout at ``repo`` (default: the package's),
    with ``diff_sha256``, the SHA-256 of ``git diff HEAD`` when tracked files changed
    (``None`` when clean), so that two dirty runs of one commit can be told apart.

    Returns ``{"commit": None, "dirty": None}`` outside a git checkout or without git.
    """
    where = repo if repo is not None else Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", "-C", str(where), *args],
                capture_output=True,
                text=True,
                timeout=10,
                check=False,
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    if commit is None:
        return {"commit": None, "dirty": None}
    status = git("status", "--porcelain", "--untracked-files=no")
    dirty = bool(status) if status is not None else None
    diff = git("diff", "HEAD", "--binary") if dirty else None
    return {
        "commit": commit,
        "dirty": dirty,
        "diff_sha256": hashlib.sha256(diff.encode()).hexdigest() if diff is not None else None,
    }


@functools.lru_cache(maxsize=1)
def _package_git_state() -> tuple[str | None, bool | None]:
    state = git_state()
    return state["commit"], state["dirty"]


def code_version() -> dict[str, Any]:
    """The running code: ``version`` (:data:`slicelib.__version__`), ``commit`` (the git
    commit of the package's checkout, ``None`` when it is not one, e.g. a wheel) and
    ``dirty`` (tracked files changed since that commit). Read once per process."""
    commit, dirty = _package_git_state()
    return {"version": __version__, "commit": commit, "dirty": dirty}


def code_label() -> str:
    """The running code in one line: ``0.2.0 (commit 1a2b3c4d5e6f)``, ``... modified)``
    when the checkout has uncommitted changes, or ``0.2.0`` outside a git checkout."""
    code = code_version()
    if code["commit"] is None:
        return str(code["version"])
    modified = ", modified" if code["dirty"] else ""
    return f"{code['version']} (commit {code['commit'][:12]}{modified})"


def device_label(device: torch.device) -> str:
    """A readable name of the device that ran a computation, for results files."""
    if device.type == "cuda":
        import torch

        return torch.cuda.get_device_name(device)
    return f"cpu ({cpu_model()})"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo`` on Linux, else ``platform``)."""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def device_info() -> dict[str, Any]:
    """Torch build and accelerators: CUDA version and the name and memory of each GPU."""
    try:
        import torch
    except ImportError:
        return {"torch": None, "cuda_available": False, "gpus": []}
    gpus: list[dict[str, Any]] = []
    available = bool(torch.cuda.is_available())
    if available:
        for index in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "memory_gib": round(props.total_memory / 2**30, 1)})
    return {
        "torch": torch.__version__,
        "cuda_available": available,
        "cuda_version": torch.version.cuda,
        "cudnn_version": torch.backends.cudnn.version() if available else None,
        "gpus": gpus,
        "torch_threads": torch.get_num_threads(),
    }


def record_environment() -> dict[str, Any]:
    """Everything that identifies the software and hardware of this process.

    Keys: ``recorded_at`` (UTC, ISO 8601), ``slicelib`` (the code's version and commit,
    see :func:`code_version`), ``python``, ``platform``, ``cpu``, ``cpu_count``,
    ``device`` (see :func:`device_info`), ``packages`` (see :func:`package_versions`),
    ``git`` (see :func:`git_state`).
    """
    git = git_state()
    return {
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "slicelib": {"version": __version__, "commit": git["commit"], "dirty": git["dirty"]},
        "python": sys.version.split()[0],
        "python_executable": sys.executable,
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "device": device_info(),
        "packages": package_versions(),
        "git": git,
    }


def write_environment(path: Path, record: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write ``record`` (default: the environment now) as JSON to ``path``; returns it."""
    record = record_environment() if record is None else record
    write_json(path, record)
    logger.info("environment recorded in %s", path)
    return record


def environment_rows(record: dict[str, Any]) -> list[tuple[str, str]]:
    """The record flattened to (item, value) rows for a table, in a readable order."""
    device = record.get("device", {})
    gpus = device.get("gpus") or []
    git = record.get("git", {})
    commit = git.get("commit") or "not a git checkout"
    if git.get("dirty"):
        diff = git.get("diff_sha256")
        commit += " (with uncommitted changes" + (f", diff {diff[:12]})" if diff else ")")
    rows = [
        ("recorded at (UTC)", str(record.get("recorded_at"))),
        ("git commit", commit),
        ("python", str(record.get("python"))),
        ("platform", str(record.get("platform"))),
        ("CPU", f"{record.get('cpu')} ({record.get('cpu_count')} logical cores)"),
        (
            "GPU",
            ", ".join(f"{g['name']} ({g['memory_gib']} GiB)" for g in gpus) or "none",
        ),
        ("CUDA", str(device.get("cuda_version") or "not used")),
    ]
    for name, version in record.get("packages", {}).items():
        rows.append((name, version or "not installed"))
    return rows
