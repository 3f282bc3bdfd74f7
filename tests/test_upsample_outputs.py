"""``upsample`` writes only validated values and conventional outputs: damaged source
tags dropped or repaired, non-finite predictions and weights refused, ``--force``
limited to folders slicelib wrote, group-readable files, the training domain checked,
NIfTI volumes whose slice axis is not the third."""

from __future__ import annotations

import json
import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from test_dicom_writer import DERIVATION, _dciodvfy, upsampled, write_test_series
from test_upsample import _train

import slicelib
from slicelib.checkpoint import checkpoint_digest, read_checkpoint, save_checkpoint
from slicelib.cli import main
from slicelib.data.nifti import load_nifti
from slicelib.environment import code_version
from slicelib.errors import SlicelibError
from slicelib.io import OUTPUT_MARKER
from slicelib.model_card import MODEL_CARD, domain_differences, matching_presets
from slicelib.upsample.dicom_writer import write_dicom_series
from slicelib.upsample.volume import upsample_volume


def _upsample(series: Path, out: Path, ckpt: Path, *extra: str) -> int:
    return main(["upsample", str(series), str(out), "--checkpoint", str(ckpt), *extra])


# Damaged source values ------------------------------------------------------------------


def _set_raw(path: Path, keyword: str, vr: str, value: bytes) -> None:
    from pydicom.dataelem import RawDataElement
    from pydicom.tag import Tag

    ds = pydicom.dcmread(path)
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)  # type: ignore[assignment]
    ds.save_as(path)


def test_damaged_source_tags_are_dropped_or_derived_with_a_warning_naming_the_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    write_test_series(folder)
    files = sorted(folder.iterdir())
    # The damage of the issue: a broken VR, a missing SOP class, a zero pixel spacing.
    _set_raw(files[1], "PatientBirthDate", "SQ", b"19700101")
    _set_raw(files[3], "PatientBirthDate", "XX", b"19700101")
    ds = pydicom.dcmread(files[2])
    del ds.SOPClassUID
    ds.save_as(files[2])
    _set_raw(files[-1], "PixelSpacing", "DS", b"0\\0 ")
    up = upsampled(folder)
    caplog.set_level(logging.WARNING, logger="slicelib")
    written = write_dicom_series(up, tmp_path / "out", DERIVATION)
    text = caplog.text
    assert f"file {files[1]}: damaged PatientBirthDate" in text
    assert f"file {files[3]}: damaged PatientBirthDate" in text
    assert f"file {files[2]}: SOPClassUID missing or damaged" in text
    sop_class = pydicom.dcmread(files[0]).SOPClassUID
    assert all(pydicom.dcmread(p).SOPClassUID == sop_class for p in written)
    spacing = [list(map(float, pydicom.dcmread(p).PixelSpacing)) for p in written]
    assert all(s == list(up.source.pixel_spacing) for s in spacing)
    for path in written[:4]:
        assert _dciodvfy(path) == [], path


def test_required_tags_missing_from_every_file_derived_or_refused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "in"
    write_test_series(folder)
    up = upsampled(folder)
    files = sorted(folder.iterdir())
    for f in files:
        _set_raw(f, "FrameOfReferenceUID", "UI", b"not a uid")
    caplog.set_level(logging.WARNING, logger="slicelib")
    written = write_dicom_series(up, tmp_path / "out", DERIVATION)
    assert "FrameOfReferenceUID missing or damaged; written as" in caplog.text
    assert len({pydicom.dcmread(p).FrameOfReferenceUID for p in written}) == 1
    assert _dciodvfy(written[1]) == []

    for f in files:  # no SOP class anywhere: the IOD of the output is unknown
        ds = pydicom.dcmread(f)
        del ds.SOPClassUID
        del ds.file_meta.MediaStorageSOPClassUID
        ds.save_as(f)
    with pytest.raises(SlicelibError, match="SOPClassUID missing or damaged in every"):
        write_dicom_series(up, tmp_path / "out2", DERIVATION)
    assert not (tmp_path / "out2").exists()


def test_unreadable_slice_file_is_an_error_never_a_shorter_series(
    run: Path, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    last = sorted(series.iterdir())[-1]
    last.write_bytes(last.read_bytes()[:64])
    assert _upsample(series, tmp_path / "o", run) == 2
    assert str(last) in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


# Non-finite predictions and weights -----------------------------------------------------


def test_nan_predictions_refused(series: Path) -> None:
    from slicelib.data.dicom import load_series

    def nan_predict(inputs: torch.Tensor) -> torch.Tensor:
        return torch.full_like(inputs[:, :1], float("nan"))

    with pytest.raises(SlicelibError, match="NaN or infinite"):
        upsample_volume(load_series(series), nan_predict, 16)


def test_checkpoint_with_non_finite_weights_refused(
    run: Path, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    state = read_checkpoint(run / "best.pt")
    key = next(iter(state["models"]["generator"]))
    state["models"]["generator"][key].view(-1)[0] = float("inf")
    bad = tmp_path / "bad.pt"
    save_checkpoint(bad, state)
    assert _upsample(series, tmp_path / "o", bad) == 2
    err = capsys.readouterr().err
    assert f"checkpoint {bad}" in err and "NaN or infinite" in err and "Traceback" not in err
    assert not (tmp_path / "o").exists()


# --force and the marker file ------------------------------------------------------------


def test_force_replaces_only_a_folder_slicelib_wrote(
    run: Path, series: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("years of work")
    assert _upsample(series, precious, run, "--force") == 2
    assert "not written by slicelib" in capsys.readouterr().err
    assert sorted(p.name for p in precious.iterdir()) == ["thesis.tex"]

    out = tmp_path / "x2"
    assert _upsample(series, out, run) == 0
    assert json.loads((out / OUTPUT_MARKER).read_text())["written_by"] == "slicelib"
    assert _upsample(series, out, run, "--force") == 0
    assert (out / "interpolated").is_dir()


# Files for shared storage ---------------------------------------------------------------


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_train_evaluate_and_upsample_outputs_are_group_readable_under_umask_022(
    umask_022: None, tiny_cache: Path, series: Path, tmp_path: Path
) -> None:
    run_dir = _train(tiny_cache, tmp_path / "run")
    results = tmp_path / "results" / "k1.csv"
    argv = ["evaluate", "--cache", str(tiny_cache), "--k", "1", "--out", str(results)]
    assert main([*argv, "--methods", "linear", "--no-progress"]) == 0
    assert main(["upsample", str(series), str(tmp_path / "x2"), "--checkpoint", str(run_dir)]) == 0
    checked, wrong = 0, {}
    for root in (run_dir, results.parent, tmp_path / "x2"):
        for path in [root, *root.rglob("*")]:
            mode = stat.S_IMODE(path.lstat().st_mode)
            checked += 1
            # Folders 0755, files 0644: what the umask allows, not tempfile's 0600/0700.
            if mode != (0o755 if path.is_dir() else 0o644):
                wrong[str(path.relative_to(tmp_path))] = oct(mode)
    assert (run_dir / "best.pt").is_file() and (run_dir / MODEL_CARD).is_file()
    assert list(results.parent.glob("*.csv")) and list((tmp_path / "x2").rglob("*.dcm"))
    assert checked > 10 and wrong == {}


# The training domain --------------------------------------------------------------------


def test_training_records_its_domain_and_writes_a_model_card(run: Path) -> None:
    state = read_checkpoint(run / "best.pt")
    domain = state["training_domain"]
    assert domain["patients"] == {"test": 1, "train": 3, "val": 1}
    assert domain["image_size"] == 32
    card = (run / MODEL_CARD).read_text()
    for heading in ("## Data", "## Domain", "## Intended use", "## Limits"):
        assert heading in card
    assert "best epoch 1: validation PSNR" in card
    assert "- preset: none (settings of its own)" in card  # 4 features: no preset's U-Net


def test_model_card_names_the_preset_a_run_used() -> None:
    from slicelib.config import get_preset, to_dict

    smoke = get_preset("smoke")
    train = {**to_dict(smoke.train_config("cnn", 1)), "device": "cuda"}  # where: ignored
    assert "smoke" in matching_presets(train, to_dict(smoke.prepare)).split(", ")
    train["lr"] = 0.5
    assert matching_presets(train, to_dict(smoke.prepare)) == "none (settings of its own)"


def test_domain_differences_say_what_differs_and_by_how_much() -> None:
    domain = {
        "slice_spacing_mm": [3.0, 3.0],
        "pixel_spacing_mm": [0.5, 0.5],
        "matrix": [[384, 384]],
        "modality": "MR",
        "series_descriptions": ["t2_tse_tra"],
    }
    # a k=1 model trained on 3 mm slices fills 6 mm gaps: a 6 mm series is its domain
    same = dict(slice_spacing=6.0, pixel_spacing=[0.5, 0.5], matrix=[384, 384], modality="MR")
    assert domain_differences(domain, **same, description="T2_TSE_TRA") == []  # type: ignore[arg-type]
    found = domain_differences(
        domain,
        slice_spacing=1.5,
        pixel_spacing=[0.5, 0.5],
        matrix=[20, 24],
        modality="CT",
        description="ep2d_diff",
    )
    assert found == [
        "neighbour distance 1.50 mm (the k=1 model was trained on neighbours 6.00 mm apart, x0.25)",
        "matrix 20x24 (trained on 384x384)",
        "modality CT (trained on MR)",
        "sequence 'ep2d_diff' (trained on 't2_tse_tra')",
    ]
    assert domain_differences(None, slice_spacing=1.0, pixel_spacing=[1, 1], matrix=[2, 2]) == []


def test_upsample_warns_in_one_line_outside_the_training_domain(
    run: Path, series: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = read_checkpoint(run / "best.pt")
    state["training_domain"] = {
        "slice_spacing_mm": [3.0, 3.0],
        "pixel_spacing_mm": [0.5, 0.5],
        "matrix": [[20, 24]],
        "modality": "MR",
        "series_descriptions": ["t2_tse_tra"],
    }
    ckpt = tmp_path / "domain.pt"
    save_checkpoint(ckpt, state)
    caplog.set_level(logging.WARNING, logger="slicelib")
    assert _upsample(series, tmp_path / "o", ckpt) == 0
    lines = [r.getMessage() for r in caplog.records if "training domain" in r.getMessage()]
    assert len(lines) == 1 and "\n" not in lines[0]
    assert (
        "neighbour distance 1.50 mm (the k=1 model was trained on neighbours 6.00 mm" in (lines[0])
    )
    assert "pixel size" in lines[0] and "matrix" not in lines[0]
    record = json.loads((tmp_path / "o" / "upsample.json").read_text())
    assert len(record["outside_training_domain"]) == 2

    caplog.clear()
    state["training_domain"]["slice_spacing_mm"] = [0.75, 0.75]  # neighbours 1.5 mm apart
    state["training_domain"]["pixel_spacing_mm"] = [0.25, 0.75]
    save_checkpoint(ckpt, state)
    assert _upsample(series, tmp_path / "o2", ckpt) == 0
    assert not [r for r in caplog.records if "training domain" in r.getMessage()]


# NIfTI with the slices along the first voxel axis ----------------------------------------


def test_nifti_with_slice_axis_0_upsampled_along_that_axis(run: Path, tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 1000, size=(5, 12, 10)).astype(np.int16)  # 5 sagittal slices
    affine = np.diag([3.0, 0.8, 0.9, 1.0])  # axis 0 is the coarsest: the slice axis
    affine[:3, 3] = [-6.0, 4.0, 2.0]
    src = tmp_path / "sag.nii.gz"
    nib.save(nib.Nifti1Image(stored, affine), src)
    assert load_nifti(src).n_slices == 5

    out = tmp_path / "out"
    assert main(["upsample", str(src), str(out), "--checkpoint", str(run)]) == 0
    img = nib.load(out / "sag_x2.nii.gz")
    assert img.shape == (9, 12, 10)
    assert np.allclose(img.affine[:3, 0], [1.5, 0.0, 0.0])
    assert np.allclose(img.affine[:3, 1:], affine[:3, 1:])
    assert np.array_equal(np.asarray(img.dataobj.get_unscaled())[0::2], stored)
    assert img.header.get_zooms()[:3] == pytest.approx((1.5, 0.8, 0.9))
    back = load_nifti(out / "sag_x2.nii.gz")
    assert back.n_slices == 9 and back.slice_spacing == pytest.approx(1.5)


# Real DICOM: the ProstateX axial T2 -----------------------------------------------------

PROSTATEX_T2 = (
    Path(__file__).resolve().parent.parent
    / "data/prostatex-0218/ProstateX-0218/02-18-2011/5.000000-t2tsetra320p2-09906"
)


def test_prostatex_t2_upsampled_with_no_new_dciodvfy_finding(run: Path, tmp_path: Path) -> None:
    """The derived series and its std map add no error or warning to the source's own."""
    state = read_checkpoint(run / "best.pt")
    state["models"]["generator"]["final.bias"] += 0.1  # a second ensemble member
    other = tmp_path / "other.pt"
    save_checkpoint(other, state)
    out = tmp_path / "x2"
    argv = ["upsample", str(PROSTATEX_T2), str(out), "--checkpoint", str(run)]
    assert main([*argv, "--uncertainty", "--ensemble", str(other)]) == 0
    source = set(_dciodvfy(sorted(PROSTATEX_T2.iterdir())[0]))
    image = sorted((out / "interpolated").iterdir())
    std = sorted((out / "uncertainty").iterdir())
    assert len(image) == len(std) == 39
    for path in (image[0], image[1], std[1]):
        assert set(_dciodvfy(path)) - source == set(), path

    # What leaves the machine says what made it, and nothing about this machine.
    labels = [f"sha256:{checkpoint_digest(p)[:16]}" for p in (run / "best.pt", other)]
    code = code_version()
    local = [str(p) for p in (run, other, tmp_path, Path.home(), PROSTATEX_T2)]
    for path in (image[0], image[1], std[1]):
        ds = pydicom.dcmread(path)
        assert not [text for text in _texts(ds) if any(place in text for place in local)]
        assert all(label in ds.DerivationDescription for label in labels)
        assert f"slicelib {slicelib.__version__}" in ds.DerivationDescription
        codes = [(c.CodeValue, c.CodingSchemeDesignator) for c in ds.DerivationCodeSequence]
        assert codes[0] == ("113085", "DCM")
        versions = list(ds.ContributingEquipmentSequence[-1].SoftwareVersions)
        assert versions[0] == slicelib.__version__
        assert code["commit"] is not None and versions[1].startswith(f"commit {code['commit']}")
        assert code["commit"][:12] in ds.DerivationDescription
        assert ds["SpacingBetweenSlices"].repval.strip("'") == "1.8"  # not 1.80000002167304
    acquired, synthesized = pydicom.dcmread(image[0]), pydicom.dcmread(image[1])
    assert "AcquisitionTime" in acquired
    assert not any(k in synthesized for k in ("AcquisitionTime", "AcquisitionDate"))
    assert "AcquisitionTime" not in pydicom.dcmread(std[0])
    record = json.loads((out / "upsample.json").read_text())
    assert record["checkpoint_sha256"].startswith(labels[0][len("sha256:") :])
    assert record["slicelib_commit"] == code["commit"]


def _texts(ds: pydicom.Dataset) -> list[str]:
    """Every text value of ``ds``, in nested sequences too."""
    found: list[str] = []
    for elem in ds.iterall():
        if elem.VR in ("LO", "LT", "SH", "ST", "UT", "UC", "UR", "PN", "CS"):
            values = (
                elem.value
                if isinstance(elem.value, list | pydicom.multival.MultiValue)
                else [elem.value]
            )
            found += [str(v) for v in values]
    return found


def test_slice_axis_option_overrides_the_header(run: Path, tmp_path: Path) -> None:
    stored = np.random.default_rng(4).integers(0, 1000, size=(5, 12, 10)).astype(np.int16)
    src = tmp_path / "iso.nii"
    nib.save(nib.Nifti1Image(stored, np.eye(4)), src)  # isotropic: the header says axis 2
    out = tmp_path / "out"
    argv = ["upsample", str(src), str(out), "--checkpoint", str(run), "--slice-axis", "0"]
    assert main(argv) == 0
    img = nib.load(out / "iso_x2.nii")
    assert img.shape == (9, 12, 10)
    assert np.array_equal(np.asarray(img.dataobj.get_unscaled())[0::2], stored)


IXI_T1 = PROSTATEX_T2.parents[3] / "ixi-t1-2mm/IXI012-HH-1211_T1.nii.gz"


def test_classical_methods_upsample_the_real_series(tmp_path: Path) -> None:
    """``--method`` in place of a checkpoint, on the ProstateX T2 (DICOM) and an IXI T1
    (NIfTI): acquired slices kept, each new one the method's, optical flow not linear."""
    out = {m: tmp_path / f"ixi_{m}" for m in ("linear", "flow")}
    for method, folder in out.items():
        assert main(["upsample", str(IXI_T1), str(folder), "--method", method]) == 0
        assert json.loads((folder / "upsample.json").read_text())["model"] == method
    source = np.asarray(nib.load(IXI_T1).dataobj.get_unscaled())
    linear, flow = (
        np.asarray(nib.load(f / "IXI012-HH-1211_T1_x2.nii.gz").dataobj.get_unscaled())
        for f in out.values()
    )
    assert flow.shape[2] == 2 * source.shape[2] - 1
    assert np.array_equal(flow[..., 0::2], linear[..., 0::2])
    mean = (source[..., :-1].astype(float) + source[..., 1:]) / 2
    assert np.abs(linear[..., 1::2] - mean).max() <= 1  # linear: the neighbours' mean
    assert np.array_equal(flow[..., 0::2], source)  # stored values kept bit for bit
    assert np.abs(flow[..., 1::2] - mean).mean() > 0.5  # flow moves the pixels (1.6 here)

    dicom = tmp_path / "t2_flow"
    assert main(["upsample", str(PROSTATEX_T2), str(dicom), "--method", "flow"]) == 0
    image = sorted((dicom / "interpolated").iterdir())
    assert len(image) == 39
    synthesized = pydicom.dcmread(image[1])
    assert "flow" in synthesized.DerivationDescription
    assert set(_dciodvfy(image[1])) - set(_dciodvfy(sorted(PROSTATEX_T2.iterdir())[0])) == set()
