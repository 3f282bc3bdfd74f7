"""prepare: preprocessing, the cache on disk, the split, atomic writes, refusals, CLI."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from dicom_factory import SeriesSpec, write_cohort, write_junk, write_series

from slicelib.cli import main
from slicelib.config import PrepareConfig, ScanConfig
from slicelib.data.cache import Cache, CacheWriter
from slicelib.data.prepare import prepare
from slicelib.data.preprocess import normalise, resize_slices, square_crop
from slicelib.data.split import split_counts, split_patients
from slicelib.errors import SlicelibError

CFG = PrepareConfig(size=16)
SCAN = ScanConfig(workers=1)
GEOMETRY = {"rows": 24, "cols": 32, "pixel_spacing": (0.5, 0.5)}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[SeriesSpec]]:
    root = tmp_path_factory.mktemp("prep_cohort")
    specs = write_cohort(root, n_patients=5, **GEOMETRY)
    write_series(root / "dwi", patient_id="Prostate-MRI-US-Biopsy-0001", description="ep2d_diff")
    write_junk(root)
    return root, specs


@pytest.fixture(scope="module")
def cache(cohort: tuple[Path, list[SeriesSpec]], tmp_path_factory: pytest.TempPathFactory) -> Cache:
    return prepare(cohort[0], tmp_path_factory.mktemp("prep") / "cache", CFG, SCAN, progress=False)


def test_cache_layout_and_manifest(cache: Cache) -> None:
    manifest = json.loads((cache.root / "manifest.json").read_text())
    assert manifest["config"]["size"] == 16
    assert manifest["source"]["kind"] == "dicom"
    assert manifest["scan"]["series_included"] == 5 and manifest["scan"]["non_dicom_skipped"] == 2
    assert manifest["statistics"]["total"] == {
        "patients": 5,
        "volumes": 5,
        "slices": 120,
        "triplets_k1": 110,
        "triplets_k2": 100,
        "triplets_common": 100,
    }
    assert manifest["slicelib_version"]
    for p in manifest["patients"]:
        assert {"patient_id", "series_uid", "split", "n_slices", "spacing_mm", "file"} <= set(p)
        assert not Path(p["file"]).is_absolute() and (cache.root / p["file"]).is_file()
    entry = cache.entries()[0]
    assert entry.spacing_mm == pytest.approx(1.5) and entry.n_slices == 24
    assert entry.pixel_mm == pytest.approx(12.0 / 16)  # 24 x 0.5 mm square over 16 pixels


def test_volumes_match_the_reference_pipeline(
    cache: Cache, cohort: tuple[Path, list[SeriesSpec]]
) -> None:
    for spec in cohort[1]:
        vol = cache.volume(spec.patient_id)
        assert isinstance(vol, np.memmap) and vol.dtype == np.float16
        assert vol.shape == (24, 16, 16)
        assert float(vol.min()) >= 0.0 and float(vol.max()) <= 1.0
        norm = (spec.expected - spec.expected.min()) / (spec.expected.max() - spec.expected.min())
        cropped = norm[:, :, 4:28]  # 24 x 32 at 0.5 mm: centre 24 columns
        want = resize_slices(cropped, 16)
        np.testing.assert_allclose(vol.astype(np.float32), want, atol=2e-3)


def test_split_is_seeded_and_patient_level(cache: Cache) -> None:
    ids = [e.patient_id for e in cache.entries()]
    assert {e.patient_id: e.split for e in cache.entries()} == split_patients(ids, CFG.split, 0)
    assert {e.split for e in cache.entries()} == {"train", "val", "test"}
    assert sum(len(cache.entries(s)) for s in ("train", "val", "test")) == 5


def test_same_settings_is_a_no_op(cache: Cache, cohort: tuple[Path, list[SeriesSpec]]) -> None:
    manifest = cache.root / "manifest.json"
    before = manifest.stat().st_mtime_ns
    again = prepare(cohort[0], cache.root, CFG, SCAN, progress=False)
    assert again.fingerprint == cache.fingerprint
    assert manifest.stat().st_mtime_ns == before


def test_other_settings_refused_unless_forced(
    cohort: tuple[Path, list[SeriesSpec]], tmp_path: Path
) -> None:
    target = tmp_path / "cache"
    prepare(cohort[0], target, dataclasses.replace(CFG, size=8), SCAN, progress=False)
    with pytest.raises(SlicelibError, match=r"other settings \(size 8 \(want 16\)\)"):
        prepare(cohort[0], target, CFG, SCAN, progress=False)
    assert Cache(target).size == 8
    assert prepare(cohort[0], target, CFG, SCAN, force=True, progress=False).size == 16
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_failure_midway_leaves_no_cache(
    cohort: tuple[Path, list[SeriesSpec]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A failure writing the cache (not one patient's data) stops the run.
    calls = []
    add = CacheWriter.add

    def failing(self: CacheWriter, *args: object, **kwargs: object) -> object:
        calls.append(1)
        if len(calls) == 2:
            raise OSError("disk full")
        return add(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(CacheWriter, "add", failing)
    with pytest.raises(OSError, match="disk full"):
        prepare(cohort[0], tmp_path / "cache", CFG, SCAN, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_folder_that_is_not_a_cache_is_never_replaced(
    cohort: tuple[Path, list[SeriesSpec]], tmp_path: Path
) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(SlicelibError, match="not a slicelib cache"):
        prepare(cohort[0], tmp_path / "mine", CFG, SCAN, force=True, progress=False)
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "precious"


def test_no_passing_series_names_the_top_reasons(tmp_path: Path) -> None:
    for p in range(2):
        write_series(
            tmp_path / "data" / f"p{p}", patient_id=f"p{p}", field_strength=1.5, rows=8, cols=8
        )
    write_series(tmp_path / "data" / "few", patient_id="p9", n_slices=5, rows=8, cols=8)
    with pytest.raises(
        SlicelibError, match=r"passes the criteria.*2x field strength 1.5 T"
    ) as info:
        prepare(tmp_path / "data", tmp_path / "cache", CFG, SCAN, progress=False)
    assert "1x 5 slices (want >= 20)" in str(info.value)
    assert not (tmp_path / "cache").exists()


def test_normalisation_failure_excludes_and_falls_back(tmp_path: Path) -> None:
    data = tmp_path / "data"
    flat = np.full((30, 8, 8), 500, dtype=np.uint16)
    # A: best series (more slices) is constant -> the next passing series is used.
    write_series(
        data / "a1", patient_id="A", n_slices=30, pixels=flat, series_number=3, rows=8, cols=8
    )
    write_series(data / "a2", patient_id="A", n_slices=24, series_number=4, rows=8, cols=8)
    # B: its only series is constant -> B is left out; C is fine.
    write_series(data / "b", patient_id="B", n_slices=30, pixels=flat, rows=8, cols=8)
    write_series(data / "c", patient_id="C", rows=8, cols=8)
    cache = prepare(data, tmp_path / "cache", CFG, SCAN, progress=False)
    assert [e.patient_id for e in cache.entries()] == ["A", "C"]
    assert cache.entry("A").n_slices == 24
    excluded = cache.manifest["excluded_in_prepare"]
    assert {e["patient_id"] for e in excluded} == {"A", "B"}
    assert all("constant volume" in e["reason"] for e in excluded)


def test_normalise_refuses_bad_volumes() -> None:
    good = np.arange(2 * 4 * 4, dtype=np.float32).reshape(2, 4, 4)
    out = normalise(good)
    assert out.dtype == np.float32 and out.min() == 0.0 and out.max() == 1.0
    with pytest.raises(SlicelibError, match="non-finite"):
        normalise(np.where(good > 3, good, np.nan))
    with pytest.raises(SlicelibError, match="constant"):
        normalise(np.ones((2, 4, 4)))
    spike = np.random.default_rng(0).random((4, 16, 16)).astype(np.float32)
    spike[0, 0, 0] = 1e4
    with pytest.raises(SlicelibError, match="extreme intensity artefact"):
        normalise(spike, min_p99=0.05)
    clipped = normalise(spike, clip_percentiles=(1.0, 99.0), min_p99=0.05)
    assert clipped.dtype == np.float32 and clipped.max() == 1.0
    assert float(np.percentile(clipped, 99)) > 0.5


def test_square_crop_keeps_equal_physical_extent() -> None:
    vol = np.zeros((2, 40, 40), dtype=np.float32)
    cropped, side = square_crop(vol, (0.5, 1.0))  # 20 mm tall, 40 mm wide
    assert cropped.shape == (2, 40, 20) and side == 20.0
    cropped, side = square_crop(np.zeros((1, 30, 50)), (1.0, 1.0))
    assert cropped.shape == (1, 30, 30) and side == 30.0
    const = resize_slices(np.full((3, 30, 20), 0.25, dtype=np.float32), 16)
    assert const.shape == (3, 16, 16) and np.allclose(const, 0.25)


@pytest.mark.parametrize(
    ("n", "counts"),
    [(1, (1, 0, 0)), (3, (1, 1, 1)), (5, (3, 1, 1)), (20, (14, 3, 3)), (58, (40, 9, 9))],
)
def test_split_counts(n: int, counts: tuple[int, int, int]) -> None:
    assert split_counts(n, (0.7, 0.15, 0.15)) == counts


def test_split_determinism() -> None:
    ids = [f"P{i:03d}" for i in range(40)]
    a = split_patients(ids, (0.7, 0.15, 0.15), seed=0)
    assert a == split_patients(list(reversed(ids)), (0.7, 0.15, 0.15), seed=0)
    assert a != split_patients(ids, (0.7, 0.15, 0.15), seed=1)
    assert set(a) == set(ids)
    with pytest.raises(SlicelibError, match="summing to 1"):
        split_patients(ids, (0.5, 0.2, 0.2), seed=0)


def test_nifti_folder_source(tmp_path: Path) -> None:
    data = tmp_path / "nifti"
    data.mkdir()
    rng = np.random.default_rng(0)
    for name in ("case_a", "case_b", "case_c"):
        img = nib.Nifti1Image(
            rng.random((20, 20, 22)).astype(np.float32), np.diag([0.5, 0.5, 1.5, 1])
        )
        nib.save(img, data / f"{name}.nii.gz")
    cache = prepare(data, tmp_path / "cache", CFG, SCAN, progress=False)
    assert [e.patient_id for e in cache.entries()] == ["case_a", "case_b", "case_c"]
    assert cache.manifest["source"]["kind"] == "nifti"
    assert cache.volume("case_b").shape == (22, 16, 16)
    assert cache.entry("case_a").spacing_mm == pytest.approx(1.5)


def test_cli_prepare_and_its_errors(
    cohort: tuple[Path, list[SeriesSpec]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "cache"
    args = ["prepare", str(cohort[0]), str(target), "--size", "12", "--workers", "1"]
    assert main([*args, "--seed", "3", "--clip-percentiles", "--no-progress"]) == 0
    made = Cache(target)
    assert made.size == 12 and made.config.seed == 3 and made.config.clip_percentiles == (1.0, 99.0)
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("slicelib prepare: error: cache") and "\n" not in err
    assert main(["prepare", str(tmp_path / "nowhere"), str(tmp_path / "c2")]) == 2
    assert "data root" in capsys.readouterr().err
