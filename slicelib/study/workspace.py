"""The study's workspace: one output folder, idempotent steps, each output stamped.

Layout under ``out_dir``::

    data/                  the synthetic cohort (only without a data root)
    scan.csv, scan.json    the scan table and its summary
    cache/                 the prepared cache
    runs/<model>_k<k>/     one training run each
    results/k<k>.csv       per-slice evaluation of every method at k
    notebooks/             the executed notebooks (written by the runner)
    book/                  the staged book source (written by the runner)
    environment.json       the software and hardware of the run

Every output has a sibling ``<name>.step.json`` with the hash of its inputs (see
:mod:`slicelib.study.stamps`). A step runs when its output is missing, unfinished
or was made from other inputs, and is otherwise reused, so that each notebook runs
on its own (it makes what it needs) and under the runner reuses what exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from slicelib.config import (
    MODEL_NAMES,
    ModelName,
    Preset,
    TrainConfig,
    get_preset,
    run_defining,
    to_dict,
)
from slicelib.errors import SlicelibError
from slicelib.io import atomic_write, write_json
from slicelib.results import Results, output_paths
from slicelib.study.parameters import check_parameters
from slicelib.study.sources import code_hash
from slicelib.study.stamps import Stamp, digest, tree_fingerprint
from slicelib.study.step import Step, ensure

if TYPE_CHECKING:
    from slicelib.data.cache import Cache
    from slicelib.evaluate import SlicePredictions

logger = logging.getLogger(__name__)

# Environment variables: where default workspaces live, and where a notebook run by
# the runner logs which steps it read (so the runner knows when to run it again).
HOME_ENV = "SLICELIB_HOME"
READS_ENV = "SLICELIB_STUDY_READS"
DEFAULT_HOME = Path("~/.cache/slicelib")


def slicelib_home() -> Path:
    """``$SLICELIB_HOME``, default ``~/.cache/slicelib``."""
    return Path(os.environ.get(HOME_ENV) or DEFAULT_HOME).expanduser()


def resolve_out_dir(preset: str, out_dir: str | Path | None) -> Path:
    """``out_dir`` as an absolute path; ``None`` gives ``$SLICELIB_HOME/<preset>``."""
    path = slicelib_home() / preset if out_dir is None else Path(out_dir).expanduser()
    return path.resolve()


def run_name(model: str, k: int) -> str:
    """The run folder's name, e.g. ``unet_k1``."""
    return f"{model}_k{k}"


@dataclass(frozen=True)
class ScanRecord:
    """The scan table (one row per series) and its summary counts."""

    frame: pd.DataFrame
    summary: dict[str, Any]


def _nifti_scan(root: Path, files: list[Path]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The scan table of a folder of NIfTI volumes (one per patient): every volume is
    included; its slices are counted from the header."""
    import nibabel as nib

    from slicelib.data.nifti import nifti_stem

    rows = []
    for path in files:
        header: Any = nib.load(str(path)).header  # reads the header only
        shape = tuple(header.get_data_shape())
        rows.append(
            {
                "patient_id": nifti_stem(path),
                "file": str(path.relative_to(root)),
                "n_slices": int(shape[2]) if len(shape) > 2 else 1,
                "included": True,
                "selected": True,
                "reason": "",
            }
        )
    frame = pd.DataFrame(rows)
    n = len(frame)
    summary = {
        "root": str(root),
        "series": n,
        "series_included": n,
        "patients": int(frame["patient_id"].nunique()),
        "volumes": n,
        "slices": int(frame["n_slices"].sum()),
    }
    return frame, summary


class Study:
    """One preset, one data source, one output folder, and the steps that fill it.

    Args:
        preset: a :class:`~slicelib.config.Preset` or its name (demo, paper, smoke).
        out_dir: the output folder; ``None`` gives ``$SLICELIB_HOME/<preset>``.
        data_root: a DICOM (or NIfTI) collection; ``None`` generates the synthetic
            cohort of the preset into ``out_dir/data``.
        device: where training and evaluation run ("auto", "cpu", "cuda").
        progress: show progress bars.
    """

    def __init__(
        self,
        preset: Preset | str = "smoke",
        out_dir: str | Path | None = None,
        data_root: str | Path | None = None,
        *,
        device: str = "auto",
        progress: bool = False,
    ) -> None:
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.out_dir = resolve_out_dir(self.preset.name, out_dir)
        self.user_data_root = None if data_root is None else Path(data_root).expanduser().resolve()
        if self.user_data_root is not None and not self.user_data_root.is_dir():
            raise SlicelibError(f"data root {self.user_data_root} is not a folder")
        self.device = device
        self.progress = progress
        self._data_hash: str | None = None
        self.out_dir.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_notebook(cls, notebook: str, **parameters: Any) -> Study:
        """The workspace of a notebook, from its ``parameters`` cell.

        Checks the type of every parameter (and the value of ``preset``, ``model``,
        ``k``) and raises a one-line :class:`SlicelibError` naming the notebook and
        the parameter when one is wrong.
        """
        values = check_parameters(notebook, parameters)
        try:
            preset = get_preset(values.get("preset", "smoke"))
        except SlicelibError as exc:
            raise SlicelibError(f"notebook {notebook!r}: parameter 'preset': {exc}") from None
        model = values.get("model")
        if model is not None and model not in MODEL_NAMES:
            raise SlicelibError(
                f"notebook {notebook!r}: parameter 'model': unknown model {model!r} "
                f"(choose from {', '.join(MODEL_NAMES)})"
            )
        for name in ("k", "samples"):
            if name in values and values[name] < 1:
                raise SlicelibError(
                    f"notebook {notebook!r}: parameter {name!r} must be >= 1 (got {values[name]})"
                )
        if model == "ddpm" and "k" in values and values["k"] not in preset.ddpm_ks:
            raise SlicelibError(
                f"notebook {notebook!r}: parameter 'k': the {preset.name} preset trains the "
                f"DDPM at k in {list(preset.ddpm_ks)} only (got {values['k']})"
            )
        return cls(
            preset,
            values.get("out_dir"),
            values.get("data_root"),
            device=values.get("device", "auto"),
        )

    # Paths ------------------------------------------------------------------------

    @property
    def data_root(self) -> Path:
        """The collection the study reads: the user's, or the generated cohort."""
        return self.user_data_root if self.user_data_root is not None else self.out_dir / "data"

    @property
    def synthetic(self) -> bool:
        """True when the study runs on the generated synthetic cohort."""
        return self.user_data_root is None

    @property
    def cache_dir(self) -> Path:
        return self.out_dir / "cache"

    @property
    def scan_csv(self) -> Path:
        return self.out_dir / "scan.csv"

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / "runs"

    @property
    def results_dir(self) -> Path:
        return self.out_dir / "results"

    @property
    def notebooks_dir(self) -> Path:
        return self.out_dir / "notebooks"

    @property
    def environment_json(self) -> Path:
        return self.out_dir / "environment.json"

    def run_dir(self, model: str, k: int) -> Path:
        return self.runs_dir / run_name(model, k)

    def models_at(self, k: int) -> tuple[ModelName, ...]:
        """The models the preset trains at ``k``: ``preset.models``, the DDPM only at
        ``preset.ddpm_ks``."""
        return tuple(
            m for m in self.preset.models if m in MODEL_NAMES and (m != "ddpm" or k in self.preset.ddpm_ks)
        )

    def runs(self) -> list[tuple[ModelName, int]]:
        """Every (model, k) the preset trains, in the order the book shows them."""
        return [(m, k) for k in self.preset.ks for m in self.models_at(k)]

    # Input hashes ---------------------------------------------------------------------
    # Each includes the hash of the package source its step runs (see
    # slicelib.study.sources), so that edited code re-makes what it made.

    def data_hash(self) -> str:
        """Hash of the data source: the cohort's configuration and generator code, or
        the files' sizes and modification times under a user's data root."""
        if self._data_hash is None:
            if self.synthetic:
                source: dict[str, Any] = {
                    "synthetic": to_dict(self.preset.cohort),
                    "code": code_hash("slicelib.data.synthetic"),
                }
            else:
                assert self.user_data_root is not None
                source = {"root": str(self.user_data_root)}
                source.update(tree_fingerprint(self.user_data_root))
            self._data_hash = digest(source)
        return self._data_hash

    def scan_hash(self) -> str:
        return digest(
            {
                "data": self.data_hash(),
                "scan": to_dict(self.preset.scan),
                "code": code_hash("slicelib.data.scan", "slicelib.data.prepare"),
            }
        )

    def cache_hash(self) -> str:
        return digest(
            {
                "data": self.data_hash(),
                "scan": to_dict(self.preset.scan),
                "prepare": to_dict(self.preset.prepare),
                "code": code_hash("slicelib.data.prepare"),
            }
        )

    def train_config(self, model: ModelName, k: int) -> TrainConfig:
        """The preset's training configuration for ``model`` at ``k`` on this device."""
        return self.preset.train_config(model, k, device=self.device)

    def run_identity(self, model: ModelName, k: int) -> str:
        """Hash of what a run is, except its number of epochs: a run with the same
        identity and fewer epochs is resumed rather than trained again."""
        return self._identity(self.train_config(model, k))

    def run_hash(self, model: ModelName, k: int) -> str:
        return self._run_hash(self.train_config(model, k))

    def config_hash(self, cfg: TrainConfig) -> str:
        """The input hash of a run trained on this study's cache with ``cfg``."""
        return self._run_hash(cfg)

    def _identity(self, cfg: TrainConfig) -> str:
        return digest(
            {
                "cache": self.cache_hash(),
                "train": run_defining(cfg),
                "code": code_hash("slicelib.train"),
            }
        )

    def _run_hash(self, cfg: TrainConfig) -> str:
        return digest({"identity": self._identity(cfg), "epochs": cfg.epochs})

    def results_hash(self, k: int) -> str:
        cfg = to_dict(self.preset.eval)
        cfg.pop("device", None)
        runs = {run_name(m, k): self.run_hash(m, k) for m in self.models_at(k)}
        code = code_hash("slicelib.evaluate")
        return digest({"cache": self.cache_hash(), "eval": cfg, "k": k, "runs": runs, "code": code})

    def step_hash(self, step: str) -> str:
        """The current input hash of a step named as in the reads log:
        ``cohort``, ``scan``, ``cache``, ``run/<model>/<k>``, ``results/<k>``."""
        kind, _, rest = step.partition("/")
        if kind == "cohort":
            return self.data_hash()
        if kind == "scan":
            return self.scan_hash()
        if kind == "cache":
            return self.cache_hash()
        if kind == "run":
            model, _, k = rest.partition("/")
            if model not in MODEL_NAMES:
                raise SlicelibError(f"unknown study step {step!r}")
            return self.run_hash(model, int(k))  # type: ignore[arg-type]
        if kind == "results":
            return self.results_hash(int(rest))
        raise SlicelibError(f"unknown study step {step!r}")

    def _read(self, step: str, hash_: str) -> None:
        """Log that the current notebook read ``step`` (only under the runner)."""
        path = os.environ.get(READS_ENV)
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({"step": step, "hash": hash_}) + "\n")

    @property
    def lock_dir(self) -> Path:
        """Where the locks of the workspace's steps live."""
        return self.out_dir / ".locks"

    # Steps ------------------------------------------------------------------------------

    def cohort(self) -> Path:
        """The data root; generates the synthetic cohort first when there is no user's."""
        hash_ = self.data_hash()
        if self.synthetic:
            from slicelib.data.synthetic import write_demo_cohort

            cohort = {"cohort": to_dict(self.preset.cohort)}
            make = lambda: write_demo_cohort(self.data_root, self.preset.cohort)  # noqa: E731
            what = f"generating the synthetic cohort in {self.data_root}"
            ensure(Step("cohort", self.data_root, hash_, cohort, make, what=what), self.lock_dir)
        self._read("cohort", hash_)
        return self.data_root

    def scan(self) -> ScanRecord:
        """The scan table of the data root (``scan.csv``) and its summary (``scan.json``)."""
        hash_ = self.scan_hash()
        summary_path = self.scan_csv.with_suffix(".json")

        def make() -> None:
            from slicelib.data.prepare import find_nifti
            from slicelib.data.scan import scan

            root = self.cohort()
            nifti = find_nifti(root)
            if nifti:  # prepare reads the NIfTI volumes then, one per patient
                frame, summary = _nifti_scan(root, nifti)
                atomic_write(self.scan_csv, lambda tmp: frame.to_csv(tmp, index=False))
            else:
                result = scan(root, self.preset.scan, progress=self.progress)
                result.write_csv(self.scan_csv)
                summary = result.summary()
            write_json(summary_path, summary, default=str)

        step = Step(
            "scan", self.scan_csv, hash_, {"data": self.data_hash()}, make,
            resumable=True, also=(summary_path,), what=f"scanning {self.data_root}",
        )  # fmt: skip
        ensure(step, self.lock_dir)
        self._read("scan", hash_)
        frame = pd.read_csv(self.scan_csv, keep_default_na=False, na_values=[""])
        return ScanRecord(frame=frame, summary=json.loads(summary_path.read_text()))

    def cache(self) -> Cache:
        """The prepared cache (``cache/``), made from the data root when needed."""
        from slicelib.data.cache import Cache

        hash_ = self.cache_hash()

        def make() -> None:
            from slicelib.data.prepare import prepare

            prepare(
                self.cohort(), self.cache_dir, self.preset.prepare, self.preset.scan, force=True,
                progress=self.progress,
            )  # fmt: skip

        inputs = {"data": self.data_hash(), "prepare": to_dict(self.preset.prepare)}
        what = f"preparing the cache in {self.cache_dir}"
        # prepare replaces the cache whole, so an old one stays readable until then
        step = Step("cache", self.cache_dir, hash_, inputs, make, resumable=True, what=what)
        ensure(step, self.lock_dir)
        self._read("cache", hash_)
        return Cache(self.cache_dir)

    def run(self, model: ModelName, k: int) -> Path:
        """The run folder of ``model`` at ``k``, trained (or resumed) when needed.

        A run left unfinished, or one that now needs more epochs, resumes from
        ``last.pt``; a run made from other settings is trained again from scratch.
        """
        if model not in self.models_at(k):
            raise SlicelibError(
                f"the {self.preset.name} preset does not train {model!r} at k={k} "
                f"(it trains {', '.join(self.models_at(k))})"
            )
        run_dir = self.trained_run(run_name(model, k), self.train_config(model, k))
        self._read(f"run/{model}/{k}", self.run_hash(model, k))
        return run_dir

    def trained_run(self, name: str, cfg: TrainConfig) -> Path:
        """``runs/<name>`` trained on the study's cache with ``cfg``, when needed.

        A run with the same identity and no more epochs than ``cfg`` (or one that
        ``slicelib train`` made with these settings) is resumed; any other is removed
        and trained again.
        """
        from slicelib.train import train

        run_dir = self.runs_dir / name
        identity = self._identity(cfg)

        def resumable(stamp: Stamp | None) -> bool:
            if stamp is None:
                return self._adoptable(run_dir, cfg)
            same = stamp.inputs.get("identity") == identity
            return same and int(stamp.inputs.get("epochs", 0)) <= cfg.epochs

        def make() -> None:
            self.cache()
            run_dir.mkdir(parents=True, exist_ok=True)
            train(cfg, self.cache_dir, run_dir, resume=True, progress=self.progress)

        inputs = {"identity": identity, "epochs": cfg.epochs, "train": to_dict(cfg)}
        step = Step(
            name, run_dir, self._run_hash(cfg), inputs, make, resumable, what=f"training {name}"
        )
        return ensure(step, self.lock_dir)

    def results(self, k: int, common: bool = False) -> Results:
        """Every method evaluated on the test split at ``k`` (``results/k<k>.csv``).

        The classical methods of the preset and every run the preset trains at
        ``k`` (trained first when needed). ``common``: only the slices where k=1
        and k=2 are both evaluable (2 <= i <= S-3), with the summary computed on
        them, for every k=1 against k=2 comparison.
        """
        from slicelib.evaluate import evaluate

        hash_ = self.results_hash(k)
        csv = self.results_dir / f"k{k}.csv"
        common_csv = self.results_dir / f"k{k}_common.csv"
        cfg = dataclasses.replace(self.preset.eval, device=self.device, common=False)

        def make() -> None:
            runs = [self.run(m, k) for m in self.models_at(k)]
            evaluation = evaluate(self.cache(), k, cfg, runs, progress=self.progress)
            for stale in output_paths(common_csv).values():
                stale.unlink(missing_ok=True)
            evaluation.save(csv)

        inputs = {"k": k, "eval": to_dict(cfg)}
        what = f"evaluating every method at k={k}"
        step = Step(f"results_k{k}", csv, hash_, inputs, make, resumable=True, what=what)
        ensure(step, self.lock_dir)
        self._read(f"results/{k}", hash_)
        if common:
            make_common = lambda: self._common_results(k, csv, common_csv)  # noqa: E731
            inputs = {"k": k, "common": True}
            step = Step(f"results_k{k}", common_csv, hash_, inputs, make_common, resumable=True)
            ensure(step, self.lock_dir)
            csv = common_csv
        return Results.load(csv, k=k, common=common, std_from=self.results_dir / f"k{k}.csv")

    def _common_results(self, k: int, full_csv: Path, csv: Path) -> None:
        """Restrict ``full_csv`` to the common slices and summarise them again."""
        from slicelib.evaluate import REFERENCE
        from slicelib.stats import summarize

        rows = pd.read_csv(full_csv, dtype={"patient_id": str})
        from slicelib.data.triplets import evaluable_indices

        common = {
            (e.patient_id, int(i))
            for e in self.cache().entries("test")
            for i in evaluable_indices(int(e.n_slices), k, common=True)
        }
        keys = zip(rows["patient_id"], rows["slice_index"])
        rows = rows[[(str(p), int(i)) in common for p, i in keys]]
        if rows.empty:
            raise SlicelibError(f"no test slice is evaluable at both k=1 and k=2 ({full_csv})")
        summary = summarize(
            rows, reference=REFERENCE, n_boot=self.preset.eval.bootstrap,
            seed=self.preset.eval.seed,
        )  # fmt: skip
        paths = output_paths(csv)
        atomic_write(paths["rows"], lambda tmp: rows.to_csv(tmp, index=False))
        atomic_write(paths["summary"], lambda tmp: summary.to_csv(tmp, index=False))
        atomic_write(
            paths["info"], lambda tmp: shutil.copyfile(output_paths(full_csv)["info"], tmp)
        )

    def predictions(
        self,
        k: int,
        slices: list[tuple[str, int]],
        *,
        methods: list[str] | None = None,
        models: list[ModelName] | None = None,
    ) -> SlicePredictions:
        """Predictions of the classical ``methods`` (default: the preset's) and of the
        runs of ``models`` (default: every model at ``k``) for chosen test slices
        ``(patient_id, slice_index)``, for figures."""
        from slicelib.evaluate import predict_slices

        chosen = self.models_at(k) if models is None else models
        runs = [self.run(m, k) for m in chosen]
        cfg = dataclasses.replace(self.preset.eval, device=self.device)
        return predict_slices(self.cache(), k, slices, cfg, runs, methods=methods)

    def _adoptable(self, run_dir: Path, cfg: TrainConfig) -> bool:
        """True when ``run_dir`` holds a run that ``slicelib train`` (for example a
        multi-GPU job) made from this cache with these settings, which resuming
        finishes or returns at once."""
        try:
            saved = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            return False
        ours = run_defining(cfg)
        theirs = {k: v for k, v in dict(saved.get("train", {})).items() if k in ours}
        same_cache = Path(str(saved.get("cache", {}).get("dir", ""))) == self.cache_dir.resolve()
        epochs = int(saved.get("train", {}).get("epochs", cfg.epochs + 1))
        adopt = (
            same_cache
            and json.dumps(ours, sort_keys=True, default=str)
            == json.dumps(theirs, sort_keys=True, default=str)
            and epochs <= cfg.epochs
        )
        if adopt:
            logger.info("adopting the run in %s (trained with these settings)", run_dir)
        return adopt

    def history(self, model: ModelName, k: int) -> pd.DataFrame:
        """The training history of a run (one row per epoch), training it if needed."""
        return pd.read_csv(self.run(model, k) / "history.csv")

    def environment(self) -> dict[str, Any]:
        """The environment record: ``environment.json`` when the runner wrote one,
        else recorded now (and written)."""
        from slicelib.environment import write_environment

        if self.environment_json.is_file():
            record: dict[str, Any] = json.loads(self.environment_json.read_text())
            return record
        return write_environment(self.environment_json)

    def describe(self) -> dict[str, Any]:
        """What this study is: preset, data source, output folder (JSON-ready)."""
        return {
            "preset": self.preset.name,
            "synthetic": self.synthetic,
            "data_root": str(self.data_root),
            "out_dir": str(self.out_dir),
            "cohort": to_dict(self.preset.cohort) if self.synthetic else None,
        }
