"""The real-anatomy arm on a tiny subset of the repository's IXI volumes: 6 subjects at
32 px, each network 1 epoch of 2 steps (the budget curve 1 and 2 epochs); the runner's
planning of the arm."""

from __future__ import annotations

import dataclasses
import math
import shutil
from pathlib import Path

import pytest
import yaml

from slicelib.config import REAL, FlowConfig, get_preset
from slicelib.data.cache import read_manifest
from slicelib.stats import MIN_TEST_PATIENTS
from slicelib.study import analysis as real
from slicelib.study import claims
from slicelib.study.book import staged_toc
from slicelib.study.config import REAL_DATA, real_data_root, study_config
from slicelib.study.notebooks import REAL_NOTEBOOK, NotebookJob, NotebookRunner, plan_jobs
from slicelib.study.runner import _real_arm
from slicelib.study.workspace import Study

ROOT = Path(__file__).resolve().parents[1]
IXI = ROOT / REAL_DATA
SUBJECTS = 6
SLICES_PER_PATIENT = 3

TINY = dataclasses.replace(
    REAL,
    prepare=dataclasses.replace(REAL.prepare, size=32),
    model=dataclasses.replace(REAL.model, features=8),
    epochs=dict.fromkeys(REAL.epochs, 1),
    batch=dict.fromkeys(REAL.batch, 2),
    crop=None,
    steps_per_epoch=2,
    val_max_slices=2,
    eval=dataclasses.replace(
        REAL.eval, slices_per_patient=SLICES_PER_PATIENT, flow=FlowConfig("ilk"), device="cpu"
    ),
    # the real recipe at the tiny budget: each model's own steps per epoch and crop left out
    per_model={
        m: {key: v for key, v in own.items() if key not in ("steps_per_epoch", "crop")}
        for m, own in REAL.per_model.items()
    },
)
TINY_STUDY = dataclasses.replace(
    study_config("real"), budgets={"unet": (1, 2), "mcnet": (1, 2)}, filter_check=True
)


@pytest.fixture(scope="module")
def tiny_arm(tmp_path_factory: pytest.TempPathFactory) -> Study:
    data = tmp_path_factory.mktemp("ixi6")
    for path in sorted(IXI.glob("*.nii.gz"))[:SUBJECTS]:
        shutil.copyfile(path, data / path.name)
    return Study(TINY, tmp_path_factory.mktemp("real_arm"), data, device="cpu", config=TINY_STUDY)


def test_the_repository_carries_the_real_cohort() -> None:
    assert real_data_root(ROOT) == IXI
    assert real_data_root(ROOT / "notebooks") is None
    assert study_config("demo").real_arm == "real"
    assert study_config("smoke").real_arm is None  # the smoke study stays fast


@pytest.mark.usefixtures("one_thread")
def test_tiny_real_arm_end_to_end(tiny_arm: Study) -> None:
    study = tiny_arm
    cache = study.cache()
    assert len(cache.entries()) == SUBJECTS
    # IXI headers leave dim_info unset on isotropic voxels: the documented third axis
    assert {p["slice_axis"] for p in read_manifest(study.cache_dir)["patients"]} == {2}
    assert study.runs() == [(m, k) for k in (1, 2) for m in ("cnn", "unet", "mcnet")]
    assert real.untrained_models(study) == ["gan", "gan_improved", "ddpm"]

    k1, k2 = study.results(1), study.results(2)
    for res in (k1, k2):
        assert set(res.methods) == {"nearest", "linear", "cubic", "flow", "cnn", "unet", "mcnet"}
        per_patient = res.rows[res.rows["method"] == "linear"].groupby("patient_id").size()
        assert per_patient.max() == SLICES_PER_PATIENT
    keys = ["patient_id", "slice_index"]
    same = k1.rows[keys].drop_duplicates().merge(k2.rows[keys].drop_duplicates())
    assert len(same) == len(k1.rows[keys].drop_duplicates())  # the same slices at both k

    table = real.gain_table([k1, k2])
    assert {"U-Net", "CNN (EDSR)", "optical flow"} <= set(table.index)
    numbers = real.gain_numbers([k1, k2])
    n_test = len(cache.entries("test"))
    assert numbers["real_k1_subjects"] == numbers["real_k2_subjects"] == n_test
    gains = real.subject_gains(k2)
    assert set(gains["method"]) == {"nearest", "cubic", "flow", "cnn", "unet", "mcnet"}
    # the motion-compensated network against optical flow, paired by subject, at each k
    flow = real.over_flow([k1, k2])
    for k, res in ((1, k1), (2, k2)):
        means = res.rows.groupby(["method", "patient_id"])["psnr"].mean().unstack("method")
        expected = float((means["mcnet"] - means["flow"]).mean())
        assert flow[f"real_k{k}_mcnet_over_flow"] == pytest.approx(expected)
        lo, hi = flow[f"real_k{k}_mcnet_over_flow_lo"], flow[f"real_k{k}_mcnet_over_flow_hi"]
        # too few test subjects here for an interval: none rather than a false one
        assert n_test < MIN_TEST_PATIENTS and math.isnan(lo) and math.isnan(hi)

    head = real.headroom_results(study)
    assert [res.k for res in head] == [1, 2]
    for res in head:  # every reference on the slices the evaluation scores, beside linear
        assert set(res.methods) == {"linear", "ls_filter", "filter", "oracle_tile", "oracle_pixel"}
        assert res.rows.groupby("method").size().max() == SLICES_PER_PATIENT * n_test
        # the per-pixel oracle clips the target to the neighbours' range, where linear lies
        assert res.row("oracle_pixel")["psnr_gain_db"] >= -1e-9
    assert set(real.headroom_numbers(head)) >= {"real_headroom_ls_filter_k1",
                                                "real_headroom_filter_k2"}  # fmt: skip
    assert list(real.gain_table(head, real.HEADROOM_LABELS).index) == list(
        real.HEADROOM_LABELS.values()
    )
    check = real.filter_check(head)
    for k, res in ((1, head[0]), (2, head[1])):
        share = 100 * res.row("filter")["psnr_gain_db"] / res.row("ls_filter")["psnr_gain_db"]
        assert check[f"real_filter_share_k{k}"] == pytest.approx(share)
        assert f"{share:.0f} % at k={k}" in check["real_filter_sentence"]
    passed = min(check["real_filter_share_k1"], check["real_filter_share_k2"]) >= 80
    assert ("learns what a linear predictor can" in check["real_filter_sentence"]) == passed

    # the budget curve: each model at each of its epoch counts, the preset's own run reused
    budget = study.budget_results()
    assert set(budget["run"]) == {"unet_k1", "unet_k1_e2", "mcnet_k1", "mcnet_k1_e2"}
    curve = real.budget_curve(budget, study.preset.eval)
    assert list(curve["samples"]) == [4, 8, 4, 8]  # mcnet then unet: 1 and 2 epochs of 2x2
    assert (curve["subjects"] == n_test).all() and curve["lo"].isna().all()
    unet2 = budget[(budget["run"] == "unet_k1_e2")]
    gain = unet2.pivot_table(index=["patient_id", "slice_index"], columns="method", values="psnr")
    per_subject = (gain["unet"] - gain["linear"]).groupby(level="patient_id").mean()
    assert curve.loc[curve["run"] == "unet_k1_e2", "gain"].item() == pytest.approx(
        per_subject.mean()
    )
    assert (
        real.budget_points(curve)
        == "motion-compensated CNN: 4 and 8 samples; U-Net: 4 and 8 samples"
    )
    sentence = real.budget_sentence(budget, curve, {"optical flow": 1.0}, study.preset.eval)
    assert sentence.count("The ") == 2 and "from 4 to 8 training samples" in sentence
    assert (
        list(real.curve_table(curve).index.get_level_values(0))
        == ["motion-compensated CNN"] * 2 + ["U-Net"] * 2
    )

    runs = real.training_runs(study)
    assert len(runs) == 6 and (runs["steps"] == 2).all()
    numbers = real.budget_numbers(runs)
    assert numbers["real_runs"] == 6 and numbers["real_budget_ratio"] > 1
    assert numbers["real_max_last_change"].startswith("not measured")  # one epoch per run

    evidence = claims.Evidence.from_study(
        study, k1, k2, study.results(1, common=True), study.results(2, common=True), cohort="real"
    )
    verdicts = real.marked_verdicts(claims.claims_table(evidence))
    assert verdicts["verdict"].str.endswith(real.REAL_NOTE).all()
    assert "Every deep model beats linear interpolation at k=1" in verdicts.index
    assert verdicts["margin"].str.len().gt(0).all()
    # One epoch per run: whatever the gains, training is not shown to have converged.
    deep = verdicts.loc["Every deep model beats linear interpolation at k=1", "verdict"]
    assert claims.outcome_of(deep) == claims.NOT_AT_BUDGET

    pid = k2.rows["patient_id"].iloc[0]
    index = int(k2.rows["slice_index"].iloc[0])
    for k in (1, 2):
        preds = study.predictions(
            k, [(pid, index)], methods=["linear", "flow"], models=real.panel_models(study)
        )
        assert set(preds.predictions) == {"linear", "flow", "unet", "mcnet"}
        assert preds.predictions["mcnet"].shape == preds.targets.shape == (1, 32, 32)


def test_runner_plans_the_real_notebook_on_its_own_workspace(tmp_path: Path) -> None:
    main = Study("smoke", tmp_path / "study")
    demo_like = Study(get_preset("demo"), tmp_path / "study")
    arm = _real_arm(demo_like, ROOT, tmp_path / "study", True, "cpu")
    assert arm is not None and arm.out_dir == (tmp_path / "study" / "real").resolve()
    assert arm.preset.name == "real" and arm.data_root == IXI.resolve()
    assert _real_arm(demo_like, ROOT, tmp_path / "study", False, "cpu") is None
    assert _real_arm(main, ROOT, tmp_path / "study", True, "cpu") is None

    jobs = plan_jobs(main, ROOT / "notebooks", real=arm)
    job = next(j for j in jobs if j.name == REAL_NOTEBOOK)
    assert job.arm == "real"
    assert job.parameters["out_dir"] == str(arm.out_dir)
    assert job.parameters["preset"] == "real"
    assert REAL_NOTEBOOK not in [j.name for j in plan_jobs(main, ROOT / "notebooks")]
    # without its workspace the runner cannot call the notebook up to date
    assert not NotebookRunner(main).up_to_date(job)


def test_real_chapter_leaves_the_book_with_its_notebook() -> None:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    names = ("data", "results", "qualitative", "k2_failure", "ddpm_analysis")
    jobs = [NotebookJob(n, Path(f"{n}.ipynb")) for n in names]
    without = yaml.safe_dump(staged_toc(toc, jobs))
    assert "book/real" not in without and "book/results" in without
    with_real = yaml.safe_dump(staged_toc(toc, [*jobs, NotebookJob(REAL_NOTEBOOK, Path("x"))]))
    assert "book/real" in with_real and f"notebooks/{REAL_NOTEBOOK}" in with_real
