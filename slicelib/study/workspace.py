"""The study's workspace: one output folder, and every output in it a :class:`Step`.

Layout under ``out_dir``::

    data/                        the synthetic cohort (only without a data root)
    scan.csv, scan.json          the scan table and its summary
    cache/                       the prepared cache
    runs/<name>/                 one training run each (unet_k1, unet_k1_seed1, refine_k1, ...)
    results/k<k>.csv             every method evaluated at k (and k<k>_common.csv)
    results/<name>.csv           the refiner's, the DDPM ablation's and the headroom's scores
    notebooks/, book/            the executed notebooks and the staged book (the runner's)
    environment.json             the software and hardware of the run
    .data-identity.json          a user's collection: each file's sampled digest (a memo)

:func:`~.steps.ensure` makes each step (:meth:`Study.steps`) when missing, unfinished or made
from other inputs: each notebook makes what it needs, and under the runner reuses what exists.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shutil
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from slicelib.config import (
    EvalConfig,
    ModelName,
    Preset,
    RefineConfig,
    RunConfig,
    TrainConfig,
    get_preset,
    recorded_run_defining,
    run_defining,
    to_dict,
)
from slicelib.errors import SlicelibError
from slicelib.io import atomic_write, write_json
from slicelib.methods import family_of
from slicelib.results import Results, output_paths
from slicelib.study.config import StudyConfig, study_config
from slicelib.study.steps import Stamp, Step, digest, ensure, package_snapshot, step_hash

if TYPE_CHECKING:
    from slicelib.data.cache import Cache
    from slicelib.evaluate import SlicePredictions

logger = logging.getLogger(__name__)

HOME_ENV = "SLICELIB_HOME"  # where default workspaces live
DEFAULT_HOME = Path("~/.cache/slicelib")
# Where a notebook run by the runner logs the steps it read (it runs again when one changes).
READS_ENV = "SLICELIB_STUDY_READS"
ORIGINAL = "original"  # the study's DDPM, against which the ablation compares its variants
# Headroom references: name -> oracle block (None: the least-squares filter).
HEADROOM: dict[str, int | None] = {"ls_filter": None, "oracle_tile": 8, "oracle_pixel": 1}
# Training pixels per slice in the filter's normal equations: 512 of each of the ~3,400
# training slices fix its 163 unknowns and take a quarter of the default's time.
HEADROOM_PIXELS_PER_SLICE = 512
EVALUATE = ("slicelib.evaluate",)  # the code of the steps that score


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


def _eval_inputs(cfg: EvalConfig) -> dict[str, Any]:
    """The evaluation settings that define its scores (all but the device)."""
    return {**to_dict(cfg), "device": None}


def _write_rows(csv: Path, rows: pd.DataFrame) -> None:
    atomic_write(csv, lambda tmp: rows.to_csv(tmp, index=False))


@dataclasses.dataclass(frozen=True)
class ScanRecord:
    """The scan table (one row per series) and its summary counts."""

    frame: pd.DataFrame
    summary: dict[str, Any]


class Study:
    """One preset (a :class:`~slicelib.config.Preset` or its name), one data source, one
    output folder (``None``: ``$SLICELIB_HOME/<preset>``), and the steps that fill it.

    ``data_root``: a DICOM (or NIfTI) collection; ``None`` generates the preset's synthetic
    cohort into ``out_dir/data``. ``device``: where training and evaluation run ("auto",
    "cpu", "cuda"). ``config``: what the study runs beside training and evaluation
    (default: the preset's :func:`~slicelib.study.config.study_config`).
    """

    def __init__(
        self,
        preset: Preset | str = "smoke",
        out_dir: str | Path | None = None,
        data_root: str | Path | None = None,
        *,
        device: str = "auto",
        progress: bool = False,
        config: StudyConfig | None = None,
    ) -> None:
        self.preset = get_preset(preset) if isinstance(preset, str) else preset
        self.config = config or study_config(self.preset.name)
        self.out_dir = resolve_out_dir(self.preset.name, out_dir)
        self.user_data_root = None if data_root is None else Path(data_root).expanduser().resolve()
        if self.user_data_root is not None and not self.user_data_root.is_dir():
            raise SlicelibError(f"data root {self.user_data_root} is not a folder")
        self.device, self.progress = device, progress
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.synthetic = self.user_data_root is None
        self.data_root = self.user_data_root or self.out_dir / "data"
        self.cache_dir, self.scan_csv = self.out_dir / "cache", self.out_dir / "scan.csv"
        self.runs_dir, self.results_dir = self.out_dir / "runs", self.out_dir / "results"
        self.notebooks_dir, self.lock_dir = self.out_dir / "notebooks", self.out_dir / ".locks"
        self.environment_json = self.out_dir / "environment.json"
        self.data_memo = self.out_dir / ".data-identity.json"

    def run_dir(self, model: str, k: int) -> Path:
        return self.runs_dir / run_name(model, k)

    def models_at(self, k: int) -> tuple[ModelName, ...]:
        """``preset.models`` at ``k``: the DDPM only at ``preset.ddpm_ks``."""
        return tuple(m for m in self.preset.models if m != "ddpm" or k in self.preset.ddpm_ks)

    def runs(self) -> list[tuple[ModelName, int]]:
        """Every (model, k) the preset trains, in the order the book shows them."""
        return [(m, k) for k in self.preset.ks for m in self.models_at(k)]

    def train_config(self, model: ModelName, k: int) -> TrainConfig:
        return self.preset.train_config(model, k, device=self.device)

    # Configurations of the extra runs, by run name -----------------------------------

    def uncertainty_configs(self) -> dict[str, TrainConfig]:
        """The ensemble's U-Nets (``unet_k<k>_seed<s>``; the study's own U-Net where the
        seed is its own) and the U-Net with dropout (``unet_k<k>_dropout``)."""
        cfg = self.config.uncertainty
        base = self.train_config("unet", cfg.k)
        runs = {}
        for seed in range(cfg.seed, cfg.seed + cfg.members):
            name = run_name("unet", cfg.k) if seed == base.seed else f"unet_k{cfg.k}_seed{seed}"
            runs[name] = dataclasses.replace(base, seed=seed)
        model_cfg = dataclasses.replace(base.model_cfg, dropout=cfg.dropout)
        dropout = dataclasses.replace(base, seed=cfg.seed, model_cfg=model_cfg)
        return {**runs, f"unet_k{cfg.k}_dropout": dropout}

    @property
    def ablation_k(self) -> int:
        """The k of the DDPM ablation: the first k the preset trains its DDPM at."""
        return self.preset.ddpm_ks[0]

    def ablation_configs(self) -> dict[str, TrainConfig]:
        """The study's DDPM with each ablation variant's diffusion, by variant (may be empty)."""
        base = self.train_config("ddpm", self.ablation_k)
        diffusion = self.config.ablation_diffusion
        return {
            v: dataclasses.replace(base, diffusion=diffusion(base.diffusion, v))
            for v in self.config.ddpm_ablation
        }

    def budget_configs(self) -> dict[str, TrainConfig]:
        """The budget curve's runs, ``unet_k1_e4`` (the preset's own where the epochs are)."""
        k, runs = self.config.budget_k, {}
        for model, counts in self.config.budgets.items():
            base = self.train_config(model, k)  # type: ignore[arg-type]
            for epochs in counts:
                name = run_name(model, k) if epochs == base.epochs else f"{model}_k{k}_e{epochs}"
                runs[name] = dataclasses.replace(base, epochs=epochs)
        return runs

    def filter_configs(self) -> dict[str, TrainConfig]:
        """The learned 9 x 9 filter at every k (``filter_k1``), when the study checks it."""
        if not self.config.filter_check:
            return {}
        return {run_name("filter", k): self.train_config("filter", k) for k in self.preset.ks}  # type: ignore[arg-type]

    def refine_config(self) -> RefineConfig:
        """The preset's refinement with its DDPM network and schedule, diffusing in [-1, 1]."""
        preset = self.preset
        diffusion = dataclasses.replace(preset.diffusion, rescale=True)
        train = dataclasses.replace(
            preset.refine.train, model_cfg=preset.model, diffusion=diffusion, device=self.device
        )
        return dataclasses.replace(preset.refine, train=train)

    def eval_config(self, **changes: Any) -> EvalConfig:
        return dataclasses.replace(self.preset.eval, device=self.device, **changes)

    # Steps --------------------------------------------------------------------------

    @cached_property
    def _data_inputs(self) -> dict[str, Any]:
        """The synthetic cohort's settings, or the content of the user's collection: not its
        path or timestamps (:data:`~slicelib.data.fingerprint.CONTENT_RULE`)."""
        if self.synthetic:
            return {"synthetic": to_dict(self.preset.cohort)}
        from slicelib.data.fingerprint import content_fingerprint

        assert self.user_data_root is not None
        return content_fingerprint(self.user_data_root, self.data_memo)

    def cohort_step(self) -> Step:
        """The data root; the synthetic cohort is generated (a user's is only read)."""
        from slicelib.data.synthetic import write_demo_cohort

        make = partial(write_demo_cohort, self.data_root, self.preset.cohort)
        code = ("slicelib.data.synthetic",) if self.synthetic else ()
        what = f"generating the synthetic cohort in {self.data_root}"
        return Step("cohort", self.data_root, code, self._data_inputs, make, what=what)

    def scan_step(self) -> Step:
        summary_path = self.scan_csv.with_suffix(".json")

        def make() -> None:
            from slicelib.data.prepare import find_nifti, scan_nifti
            from slicelib.data.scan import scan

            root = self.cohort()
            nifti = find_nifti(root)
            if nifti:  # prepare reads the NIfTI volumes then, one per patient
                frame, summary = scan_nifti(root, nifti)
                _write_rows(self.scan_csv, frame)
            else:
                result = scan(root, self.preset.scan, progress=self.progress)
                result.write_csv(self.scan_csv)
                summary = result.summary()
            write_json(summary_path, summary, default=str)

        inputs = {"data": self.cohort_step().hash, "scan": to_dict(self.preset.scan)}
        return Step(
            "scan", self.scan_csv, ("slicelib.data.scan", "slicelib.data.prepare"), inputs, make,
            resumable=True, also=(summary_path,), what=f"scanning {self.data_root}",
        )  # fmt: skip

    def cache_step(self) -> Step:
        def make() -> None:
            from slicelib.data.prepare import prepare

            prepare(
                self.cohort(), self.cache_dir, self.preset.prepare, self.preset.scan, force=True,
                progress=self.progress,
            )  # fmt: skip

        inputs = {**self.scan_step().inputs, "prepare": to_dict(self.preset.prepare)}
        # prepare replaces the cache whole, so an old one stays readable until then
        what = f"preparing the cache in {self.cache_dir}"
        return Step(
            "cache", self.cache_dir, ("slicelib.data.prepare",), inputs, make, True, what=what
        )

    def run_step(self, name: str, cfg: RunConfig) -> Step:
        """``runs/<name>`` trained with ``cfg`` (a refinement refines the study's U-Net). A run
        of the same identity (all but its epochs) and no more epochs, or one that ``slicelib
        train`` made with these settings, is resumed; any other is trained again."""
        from slicelib.train import train

        run_dir = self.runs_dir / name
        refine = isinstance(cfg, RefineConfig)
        train_cfg = cfg.train if isinstance(cfg, RefineConfig) else cfg
        identity_inputs: dict[str, Any] = {"cache": self.cache_step().hash}
        identity_inputs["train"] = run_defining(train_cfg)
        code: tuple[str, ...] = ("slicelib.train",)
        if isinstance(cfg, RefineConfig):
            own = {"recon_weight": cfg.recon_weight, "residual_quantile": cfg.residual_quantile}
            identity_inputs.update(refine=own, unet=self._model_step("unet", cfg.k).hash)
            code = ("slicelib.train", "slicelib.refine")
        identity = step_hash(code, identity_inputs)

        def resumable(stamp: Stamp | None) -> bool:
            if stamp is None:
                return not refine and self._adoptable(run_dir, train_cfg)
            same = stamp.inputs.get("identity") == identity
            return same and int(stamp.inputs.get("epochs", 0)) <= train_cfg.epochs

        def make() -> None:
            self.cache()
            run_dir.mkdir(parents=True, exist_ok=True)
            run_cfg: RunConfig = cfg
            if isinstance(cfg, RefineConfig):
                run_cfg = dataclasses.replace(cfg, unet_run=str(self.run("unet", cfg.k)))
            train(run_cfg, self.cache_dir, run_dir, resume=not refine, progress=self.progress)

        inputs = {"identity": identity, "epochs": train_cfg.epochs, "train": to_dict(cfg)}
        return Step(f"run/{name}", run_dir, code, inputs, make, resumable, what=f"training {name}")

    def _model_step(self, model: ModelName, k: int) -> Step:
        return self.run_step(run_name(model, k), self.train_config(model, k))

    def _scored(
        self, cache: Cache | Path, k: int, cfg: EvalConfig, runs: list[Step], **kwargs: Any
    ) -> pd.DataFrame:
        """The per-slice rows of ``runs``, of any ``interpolators`` and of linear at ``k``."""
        from slicelib.evaluate import evaluate

        dirs = [self._made(run) for run in runs]
        return evaluate(cache, k, cfg, dirs, methods=[], progress=False, **kwargs).rows

    def results_step(self, k: int, common: bool = False) -> Step:
        """Every method on the test split at ``k`` (``results/k<k>.csv``); ``common``: on the
        slices where k=1 and k=2 are both evaluable, summarised again (``k<k>_common.csv``)."""
        full, cfg = self.results_dir / f"k{k}.csv", self.eval_config(common=False)
        if not common:
            runs = {run_name(m, k): self._model_step(m, k) for m in self.models_at(k)}
            inputs = {
                "cache": self.cache_step().hash,
                "eval": _eval_inputs(cfg),
                "k": k,
                "runs": {name: step.hash for name, step in runs.items()},
            }

            def make() -> None:
                from slicelib.evaluate import evaluate

                dirs = [self._made(step) for step in runs.values()]
                evaluate(self.cache(), k, cfg, dirs, progress=self.progress).save(full)

            what = f"evaluating every method at k={k}"
            return Step(f"results/k{k}", full, EVALUATE, inputs, make, True, what=what)
        csv = self.results_dir / f"k{k}_common.csv"

        def make_common() -> None:
            from slicelib.data.triplets import evaluable_indices
            from slicelib.stats import summarize

            rows = self.results(k).rows
            both = {
                (e.patient_id, int(i))
                for e in self.cache().entries("test")
                for i in evaluable_indices(int(e.n_slices), k, common=True)
            }
            keys = zip(rows["patient_id"], rows["slice_index"])
            rows = rows[[(str(p), int(i)) in both for p, i in keys]]
            if rows.empty:
                raise SlicelibError(f"no test slice is evaluable at both k=1 and k=2 ({full})")
            paths, info = output_paths(csv), output_paths(full)["info"]
            _write_rows(paths["rows"], rows)
            _write_rows(paths["summary"], summarize(rows, reference="linear", seed=cfg.seed))
            atomic_write(paths["info"], lambda tmp: shutil.copyfile(info, tmp))

        inputs = {"results": self.results_step(k).hash}
        return Step(f"results/k{k}_common", csv, EVALUATE, inputs, make_common, True)

    def refine_results_step(self) -> Step:
        """The refiner's per-slice rows on the slices the study's DDPM was scored on."""
        cfg = self.refine_config()
        csv = self.results_dir / f"refine_k{cfg.k}.csv"
        run = self.run_step(f"refine_k{cfg.k}", cfg)

        def make() -> None:
            self.results(cfg.k)  # the DDPM's slices: the refiner's are the same ones
            rows = self._scored(self.cache_dir, cfg.k, self.eval_config(), [run])
            _write_rows(csv, rows[[family_of(str(m)) == "refine" for m in rows["method"]]])

        inputs = {"results": self.results_step(cfg.k).hash, "run": run.hash}
        code = ("slicelib.evaluate", "slicelib.refine")
        return Step(f"results/{csv.stem}", csv, code, inputs, make, True)

    def _ablation_steps(self) -> dict[str, Step]:
        """The DDPM ablation's runs (``ddpm_k<k>_<variant>``) by variant."""
        k = self.ablation_k
        return {v: self.run_step(f"ddpm_k{k}_{v}", c) for v, c in self.ablation_configs().items()}

    def ablation_results_step(self) -> Step:
        """The DDPM's samplers for the study's DDPM (variant ``original``) and each ablation
        variant, scored on the same slices (``results/ddpm_ablation_k<k>.csv``)."""
        k = self.ablation_k
        csv = self.results_dir / f"ddpm_ablation_k{k}.csv"
        # DDIM at its largest step count only: the ablation asks about the schedule
        cfg = self.eval_config(ddim_steps=self.preset.eval.ddim_steps[-1:])
        runs = self._ablation_steps()

        def make() -> None:
            frames = [
                self._scored(self.cache(), k, cfg, [run]).assign(variant=variant)
                for variant, run in runs.items()
            ]
            # the DDPM's samplers every variant was scored with (without linear)
            shared = set.intersection(*(set(f["method"]) for f in frames))
            shared = {m for m in shared if family_of(m) == "ddpm"}
            base = self.results(k).rows.assign(variant=ORIGINAL)
            rows = pd.concat([base, *frames], ignore_index=True)
            rows = rows[rows["method"].isin(shared)]
            _write_rows(csv, rows[["variant", *[c for c in rows.columns if c != "variant"]]])

        inputs = {
            "results": self.results_step(k).hash,
            "eval": _eval_inputs(cfg),
            "runs": {v: run.hash for v, run in runs.items()},
        }
        what = f"scoring the DDPM ablation at k={k}"
        return Step(f"results/{csv.stem}", csv, EVALUATE, inputs, make, True, what=what)

    def budget_step(self) -> Step:
        """The budget curve's runs and linear interpolation (``results/budget.csv``: the
        evaluation's rows with ``run``, ``model``, ``samples`` and training ``seconds``)."""
        csv, k, cfg = self.results_dir / "budget.csv", self.config.budget_k, self.eval_config()
        configs = self.budget_configs()
        runs = {name: self.run_step(name, c) for name, c in configs.items()}

        def make() -> None:
            frames = []
            for name, step in runs.items():
                train = configs[name]
                scored = self._scored(self.cache(), k, cfg, [step])
                samples = train.epochs * (train.steps_per_epoch or 0) * train.batch_size
                seconds = float(pd.read_csv(step.output / "history.csv")["seconds"].sum())
                frames.append(scored.assign(run=name, model=train.model, samples=samples,
                                            seconds=seconds))  # fmt: skip
            rows = pd.concat(frames, ignore_index=True)
            _write_rows(csv, rows.drop_duplicates(["method", "patient_id", "slice_index", "run"]))

        inputs = {
            "cache": self.cache_step().hash,
            "eval": _eval_inputs(cfg),
            "runs": {name: step.hash for name, step in runs.items()},
        }
        what = "scoring the budget curve"
        return Step("results/budget", csv, EVALUATE, inputs, make, True, what=what)

    def headroom_step(self, ks: tuple[int, ...] = (1, 2)) -> Step:
        """Per slice and k the scores of the best linear filter of the two neighbours (fitted
        on the training split), two oracle blends (bounds), the trained 9 x 9 filter when the
        study checks it and linear interpolation (``results/headroom.csv``)."""
        csv, cfg = self.results_dir / "headroom.csv", self.eval_config()
        filters = {name: self.run_step(name, c) for name, c in self.filter_configs().items()}

        def make() -> None:
            from slicelib.data.dataset import TripletDataset
            from slicelib.headroom import OracleBlend, fit_linear_filter

            frames = []
            for k in ks:
                inputs, target = TripletDataset(self.cache(), "train", k).arrays()
                filt = fit_linear_filter(
                    inputs[:, 0], inputs[:, 1], target, seed=cfg.seed,
                    pixels_per_slice=HEADROOM_PIXELS_PER_SLICE,
                )  # fmt: skip
                del inputs, target
                bounds = {n: filt if b is None else OracleBlend(b) for n, b in HEADROOM.items()}
                learned = [step for name, step in filters.items() if name == run_name("filter", k)]
                frames.append(self._scored(self.cache(), k, cfg, learned, interpolators=bounds))
            _write_rows(csv, pd.concat(frames, ignore_index=True))

        inputs = {
            "cache": self.cache_step().hash,
            "ks": list(ks),
            "pixels_per_slice": HEADROOM_PIXELS_PER_SLICE,
            "eval": _eval_inputs(cfg),
            "filters": {name: step.hash for name, step in filters.items()},
        }
        code = ("slicelib.evaluate", "slicelib.headroom", "slicelib.data.dataset")
        return Step("results/headroom", csv, code, inputs, make, what="measuring the headroom")

    def steps(self) -> dict[str, Step]:
        """Every step of the study by name, whether made yet or not."""
        runs: dict[str, RunConfig] = {
            run_name(m, k): self.train_config(m, k) for m, k in self.runs()
        }
        runs.update(self.uncertainty_configs())
        runs.update({f"ddpm_k{self.ablation_k}_{v}": c for v, c in self.ablation_configs().items()})
        runs.update(self.budget_configs())
        runs.update(self.filter_configs())
        ddpm, unet = "ddpm" in self.preset.models, "unet" in self.preset.models
        if ddpm and unet:
            runs[f"refine_k{self.preset.refine.k}"] = self.refine_config()
        steps = [self.cohort_step(), self.scan_step(), self.cache_step()]
        steps += [self.run_step(name, cfg) for name, cfg in runs.items()]
        for k in self.preset.ks:
            steps += [self.results_step(k), self.results_step(k, common=True)]
        steps.append(self.headroom_step())
        if self.config.budgets:
            steps.append(self.budget_step())
        if ddpm and unet:
            steps.append(self.refine_results_step())
        if ddpm and self.config.ddpm_ablation:
            steps.append(self.ablation_results_step())
        return {step.name: step for step in steps}

    def step_hash(self, name: str) -> str:
        """The current hash of the step ``name`` (as :meth:`steps` names it)."""
        with package_snapshot():
            step = self.steps().get(name)
            if step is None:
                raise SlicelibError(f"unknown study step {name!r}")
            return step.hash

    def _made(self, step: Step) -> Path:
        """Make ``step`` when needed and log that the running notebook read it."""
        ensure(step, self.lock_dir)
        path = os.environ.get(READS_ENV)
        if path:
            with open(path, "a") as fh:
                fh.write(json.dumps({"step": step.name, "hash": step.hash}) + "\n")
        return step.output

    def _rows(self, step: Step) -> pd.DataFrame:
        return pd.read_csv(self._made(step), dtype={"patient_id": str})

    # What the notebooks read ------------------------------------------------------------

    def cohort(self) -> Path:
        """The data root; generates the synthetic cohort first when there is no user's."""
        step = self.cohort_step()
        return self._made(step) if self.synthetic else step.output

    def scan(self) -> ScanRecord:
        """The scan table of the data root (``scan.csv``) and its summary (``scan.json``)."""
        csv = self._made(self.scan_step())
        frame = pd.read_csv(csv, keep_default_na=False, na_values=[""])
        return ScanRecord(frame=frame, summary=json.loads(csv.with_suffix(".json").read_text()))

    def cache(self) -> Cache:
        """The prepared cache (``cache/``), made from the data root when needed."""
        from slicelib.data.cache import Cache

        return Cache(self._made(self.cache_step()))

    def run(self, model: ModelName, k: int) -> Path:
        """The run folder of ``model`` at ``k``, trained (or resumed) when needed."""
        if model not in self.models_at(k):
            raise SlicelibError(
                f"the {self.preset.name} preset does not train {model!r} at k={k} "
                f"(it trains {', '.join(self.models_at(k))})"
            )
        return self._made(self._model_step(model, k))

    def history(self, model: ModelName, k: int) -> pd.DataFrame:
        """The training history of a run (one row per epoch), training it if needed."""
        return pd.read_csv(self.run(model, k) / "history.csv")

    def results(self, k: int, common: bool = False) -> Results:
        """The preset's classical methods and runs (trained when needed) on the test split at
        ``k``; ``common``: on the slices where k=1 and k=2 are both evaluable (2 <= i <= S-3)."""
        csv = self._made(self.results_step(k, common))
        return Results.load(csv, k=k, common=common, std_from=self.results_dir / f"k{k}.csv")

    def uncertainty_runs(self) -> dict[str, Any]:
        """The ensemble's run folders and the MC-dropout run folder, trained when needed."""
        configs = self.uncertainty_configs()
        *members, dropout = [self._made(self.run_step(name, c)) for name, c in configs.items()]
        return {"ensemble": members, "dropout": dropout}

    def refine_run(self) -> Path:
        """``runs/refine_k<k>``: the refiner on top of the study's U-Net."""
        cfg = self.refine_config()
        return self._made(self.run_step(f"refine_k{cfg.k}", cfg))

    def refine_results(self) -> pd.DataFrame:
        """The refiner's rows on the slices the study's DDPM was scored on."""
        return self._rows(self.refine_results_step())

    def ablation_runs(self) -> dict[str, Path]:
        """The DDPM ablation's run folders by variant, trained when needed."""
        return {v: self._made(step) for v, step in self._ablation_steps().items()}

    def ablation_results(self) -> pd.DataFrame:
        """The ablation's per-slice rows (``variant`` column; empty without one)."""
        if not self.config.ddpm_ablation:
            return pd.DataFrame(columns=["variant", "method", "patient_id", "slice_index"])
        return self._rows(self.ablation_results_step())

    def budget_results(self) -> pd.DataFrame:
        """The budget curve's rows (empty when the study has no budget curve)."""
        if not self.config.budgets:
            return pd.DataFrame(columns=["run", "model", "samples", "method", "patient_id"])
        return self._rows(self.budget_step())

    def headroom(self) -> pd.DataFrame:
        """The headroom references' rows beside linear interpolation's, at k=1 and k=2."""
        return self._rows(self.headroom_step())

    def predictions(
        self,
        k: int,
        slices: list[tuple[str, int]],
        *,
        methods: list[str] | None = None,
        models: list[ModelName] | None = None,
    ) -> SlicePredictions:
        """Predictions of the classical ``methods`` (default: the preset's) and the runs of
        ``models`` (default: all at ``k``) for test slices ``(patient_id, slice_index)``."""
        from slicelib.evaluate import predict_slices

        runs = [self.run(m, k) for m in (self.models_at(k) if models is None else models)]
        return predict_slices(self.cache(), k, slices, self.eval_config(), runs, methods=methods)

    def _adoptable(self, run_dir: Path, cfg: TrainConfig) -> bool:
        """True when ``slicelib train`` (say a multi-GPU job) made ``run_dir`` from this cache
        with this run identity (:func:`~slicelib.config.run_defining`) and no more epochs."""
        try:
            saved = json.loads((run_dir / "config.json").read_text())
        except (OSError, ValueError):
            return False
        ours = run_defining(cfg)
        recorded = recorded_run_defining(
            dict(saved.get("train", {})), int(saved.get("world_size", 1)),
            saved.get("process_batch"),
        )  # fmt: skip
        theirs = {k: v for k, v in recorded.items() if k in ours}
        same_cache = Path(str(saved.get("cache", {}).get("dir", ""))) == self.cache_dir.resolve()
        epochs = int(saved.get("train", {}).get("epochs", cfg.epochs + 1))
        adopt = same_cache and digest(ours) == digest(theirs) and epochs <= cfg.epochs
        if adopt:
            logger.info("adopting the run in %s (trained with these settings)", run_dir)
        return adopt

    def describe(self) -> dict[str, Any]:
        """What this study is: preset, data source, output folder (JSON-ready)."""
        return {
            "preset": self.preset.name,
            "synthetic": self.synthetic,
            "data_root": str(self.data_root),
            "out_dir": str(self.out_dir),
            "cohort": to_dict(self.preset.cohort) if self.synthetic else None,
        }
