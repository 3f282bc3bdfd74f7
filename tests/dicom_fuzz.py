"""Damaged copies of one small good series, and what ``scan``, ``prepare`` and ``upsample``
make of them.

Used by ``tests/test_fuzz.py`` (a few hundred seeded cases) and by
``python -m benchmarks fuzz`` (a longer campaign that prints counts per kind).
Each case is a cohort of two patients: one untouched, one whose series has one
damaged file (or one odd entry beside its files). The outcome of a run says
what happened to the damaged patient:

- ``ok``: its series is used whole (all slices);
- ``excluded``: its series or patient is excluded with a reason, or the run
  stops with a one-line :class:`~slicelib.errors.SlicelibError`;
- ``lost``: its series is used (cached, or upsampled) with a slice missing and no
  reason names the file;
- ``traceback``: any other exception; ``hang``: the run did not finish in time.
"""

from __future__ import annotations

import os
import shutil
import signal
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
from dicom_factory import write_series
from pydicom.dataelem import RawDataElement
from pydicom.filereader import read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.tag import Tag

N_SLICES, ROWS, COLS = 6, 16, 16
OUTCOMES: tuple[str, ...] = ("ok", "excluded", "lost", "traceback", "hang")
COMMANDS: tuple[str, ...] = ("scan", "prepare", "upsample")

DELETABLE = (
    "SOPClassUID",
    "SeriesInstanceUID",
    "Rows",
    "Columns",
    "ImagePositionPatient",
    "ImageOrientationPatient",
    "PixelSpacing",
    "InstanceNumber",
    "PixelData",
    "BitsAllocated",
    "BitsStored",
    "PatientID",
    "Modality",
    "SliceThickness",
    "PixelRepresentation",
    "PhotometricInterpretation",
    "SamplesPerPixel",
    "SeriesNumber",
)
# (tag keyword, VR, raw value) written as the bytes given, whatever the VR allows.
BAD_VALUES: tuple[tuple[str, str, bytes], ...] = (
    ("SeriesNumber", "IS", b"1e400 "),
    ("SeriesNumber", "IS", b"nan "),
    ("SeriesNumber", "IS", b"abc "),
    ("InstanceNumber", "IS", b"1e400 "),
    ("InstanceNumber", "IS", b"-7"),
    ("ImageOrientationPatient", "DS", b"1\\0\\0 "),
    ("ImageOrientationPatient", "DS", b"0\\0\\0\\0\\0\\0 "),
    ("ImageOrientationPatient", "DS", b"nan\\0\\0\\0\\1\\0 "),
    ("ImagePositionPatient", "DS", b"a\\b\\c "),
    ("ImagePositionPatient", "DS", b"inf\\0\\0 "),
    ("ImagePositionPatient", "DS", b"1e308\\0\\0 "),
    ("PixelSpacing", "DS", b"0\\0 "),
    ("PixelSpacing", "DS", b"-1\\-1 "),
    ("PixelSpacing", "DS", b"x "),
    ("SliceThickness", "DS", b"nan "),
    ("MagneticFieldStrength", "DS", b"abc "),
    ("RescaleSlope", "DS", b"abc "),
    ("RescaleIntercept", "DS", b"1e400 "),
    ("NumberOfFrames", "IS", b"abc "),
    ("NumberOfFrames", "IS", b"0 "),
    ("NumberOfFrames", "IS", b"99999999"),
    ("SamplesPerPixel", "US", b"\x03\x00"),
    ("BitsAllocated", "US", b"\x00\x00"),
    ("BitsAllocated", "US", b"\x07\x00"),
    ("BitsAllocated", "US", b"\x40\x00"),
    ("Rows", "US", b"\x00\x00"),
    ("Columns", "US", b"\x01\x00"),
    ("SpecificCharacterSet", "CS", b"ISO_IR 999 "),
    ("PatientID", "LO", b"\xff\xfe\x00"),
)
RESCALES: tuple[tuple[str, str], ...] = (
    ("0", "0"),
    ("100", "0"),
    ("1e30", "0"),
    ("-1", "0"),
    ("1", "1e30"),
    ("1", "-5000"),
)
WRONG_VRS: tuple[tuple[str, str], ...] = (
    ("PatientBirthDate", "SQ"),
    ("ImagePositionPatient", "US"),
    ("Rows", "DS"),
    ("SeriesInstanceUID", "OB"),
    ("SeriesNumber", "FD"),
    ("ImageOrientationPatient", "AT"),
    ("PixelSpacing", "UN"),
    ("Modality", "SQ"),
)
TRANSFER_SYNTAXES: tuple[str, ...] = (
    pydicom.uid.ExplicitVRBigEndian,
    pydicom.uid.ImplicitVRLittleEndian,
    pydicom.uid.RLELossless,
    pydicom.uid.JPEGBaseline8Bit,
    pydicom.uid.JPEG2000Lossless,
    pydicom.uid.DeflatedExplicitVRLittleEndian,
    "1.2.3.4.5",
)


@dataclass(frozen=True)
class Case:
    """One damaged copy: ``kind`` of damage, a ``detail`` for the log, and its seed."""

    kind: str
    seed: int
    detail: str = ""


def _set_raw(ds: pydicom.Dataset, keyword: str, vr: str, value: bytes) -> None:
    tag = Tag(keyword)
    ds[tag] = RawDataElement(tag, vr, len(value), value, 0, False, True)  # type: ignore[assignment]


def _pick(rng: np.random.Generator, files: list[Path]) -> Path:
    """First, last or a middle file: the ends are where slices used to go missing."""
    return files[int(rng.choice([0, len(files) - 1, len(files) // 2]))]


def mutate_truncate(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    data = f.read_bytes()
    cut = int(rng.choice([0, 64, 128, 132, 200, int(rng.integers(133, len(data)))]))
    f.write_bytes(data[:cut])
    return f"{f.name} cut to {cut} bytes"


def mutate_byte_flip(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    data = bytearray(f.read_bytes())
    n = int(rng.integers(1, 9))
    for i in rng.integers(0, len(data), size=n):
        data[int(i)] ^= int(rng.integers(1, 256))
    f.write_bytes(bytes(data))
    return f"{f.name}: {n} bytes flipped"


def mutate_delete_tag(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    keyword = str(rng.choice(DELETABLE))
    ds = pydicom.dcmread(f)
    if keyword in ds:
        del ds[keyword]
    ds.save_as(f)
    return f"{f.name}: {keyword} deleted"


def mutate_bad_value(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    keyword, vr, value = BAD_VALUES[int(rng.integers(len(BAD_VALUES)))]
    ds = pydicom.dcmread(f)
    _set_raw(ds, keyword, vr, value)
    ds.save_as(f)
    return f"{f.name}: {keyword}={value!r}"


def mutate_rescale(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    slope, intercept = RESCALES[int(rng.integers(len(RESCALES)))]
    ds = pydicom.dcmread(f)
    _set_raw(ds, "RescaleSlope", "DS", f"{slope} ".encode()[: len(slope) + len(slope) % 2])
    _set_raw(ds, "RescaleIntercept", "DS", f"{intercept} ".encode()[: len(intercept) + 1])
    ds.save_as(f)
    return f"{f.name}: slope {slope} intercept {intercept}"


def mutate_wrong_vr(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    keyword, vr = WRONG_VRS[int(rng.integers(len(WRONG_VRS)))]
    ds = pydicom.dcmread(f)
    if keyword == "PatientBirthDate":
        ds.PatientBirthDate = "19700101"
    value = ds[keyword].value
    raw = value if isinstance(value, bytes) else str(value).encode()
    if keyword in ("Rows",):
        raw = int(value).to_bytes(2, "little")
    raw += b" " * (len(raw) % 2)
    _set_raw(ds, keyword, vr, raw)
    ds.save_as(f)
    return f"{f.name}: {keyword} as VR {vr}"


def mutate_transfer_syntax(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    ts = TRANSFER_SYNTAXES[int(rng.integers(len(TRANSFER_SYNTAXES)))]
    with open(f, "rb") as fp:
        read_preamble(fp, False)
        meta = pydicom.filereader._read_file_meta_info(fp)
        body = fp.read()
    meta.TransferSyntaxUID = pydicom.uid.UID(ts)
    with open(f, "wb") as fp:
        fp.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(fp, meta, enforce_standard=True)
        fp.write(body)
    return f"{f.name}: relabelled {ts}"


def mutate_pixel_length(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    ds = pydicom.dcmread(f)
    data = ds.PixelData
    new = {
        0: b"",
        1: data[: len(data) // 2],
        2: data[:-2],
        3: data + b"\x00" * 64,
        4: data[:-1] + b"\x00\x00",
    }[int(rng.integers(5))]
    ds.PixelData = new
    ds.save_as(f)
    return f"{f.name}: pixel data {len(data)} -> {len(new)} bytes"


def mutate_huge(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    f = _pick(rng, files)
    ds = pydicom.dcmread(f)
    choice = int(rng.integers(4))
    if choice == 0:
        ds.Rows = ds.Columns = 65535
    elif choice == 1:
        ds.Rows = ds.Columns = 65535
        meta = ds.file_meta
        meta.TransferSyntaxUID = pydicom.uid.RLELossless
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
        ds["PixelData"].VR = "OB"
    elif choice == 2:
        _set_raw(ds, "NumberOfFrames", "IS", b"65535 ")
    else:
        ds.Rows = 40000
        ds.Columns = 40000
        ds.PixelData = b""
    ds.save_as(f)
    return f"{f.name}: huge dimensions ({choice})"


def mutate_odd_entry(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    choice = int(rng.integers(5))
    if choice == 0:
        os.mkfifo(folder / "fifo.dcm")
        return "FIFO beside the files"
    if choice == 1:
        os.symlink(".", folder / "loop")
        return "symlink loop beside the files"
    if choice == 2:
        f = _pick(rng, files)
        os.symlink(f.name + ".missing", folder / "dangling.dcm")
        return "dangling symlink beside the files"
    if choice == 3:
        f = _pick(rng, files)
        f.chmod(0)  # unreadable unless the tests run as root
        return f"{f.name} unreadable (mode 000)"
    f = _pick(rng, files)
    data = f.read_bytes()
    f.write_bytes(data[128 + 4 :])  # no preamble: a plain data set
    return f"{f.name}: preamble removed"


# SOP classes a damaged file may claim: a DICOMDIR's (a directory record), a report's.
OTHER_CLASSES: tuple[str, ...] = (
    "1.2.840.10008.1.3.10",  # Media Storage Directory Storage
    "1.2.840.10008.5.1.4.1.1.88.11",  # Basic Text SR
)


def mutate_sop_class(rng: np.random.Generator, files: list[Path], folder: Path) -> str:
    """An image whose SOP class (in the data set, the file meta or both) says it is
    something else: it must never be skipped as "other DICOM" in silence."""
    f = _pick(rng, files)
    uid = OTHER_CLASSES[int(rng.integers(len(OTHER_CLASSES)))]
    where = ("data set", "file meta", "both")[int(rng.integers(3))]
    ds = pydicom.dcmread(f)
    if where in ("data set", "both"):
        ds.SOPClassUID = uid
    if where in ("file meta", "both"):
        ds.file_meta.MediaStorageSOPClassUID = uid
    ds.save_as(f)
    return f"{f.name}: SOP class {uid} in the {where}"


Mutation = Callable[[np.random.Generator, list[Path], Path], str]
MUTATIONS: dict[str, Mutation] = {
    "truncate": mutate_truncate,
    "byte_flip": mutate_byte_flip,
    "delete_tag": mutate_delete_tag,
    "bad_value": mutate_bad_value,
    "rescale": mutate_rescale,
    "wrong_vr": mutate_wrong_vr,
    "transfer_syntax": mutate_transfer_syntax,
    "pixel_length": mutate_pixel_length,
    "huge_dims": mutate_huge,
    "odd_entry": mutate_odd_entry,
    "sop_class": mutate_sop_class,
}


def cases(n_per_kind: int, seed: int = 0) -> list[Case]:
    """``n_per_kind`` seeded cases of every kind in :data:`MUTATIONS`."""
    return [
        Case(kind, seed * 100_003 + i * 101 + k)
        for k, kind in enumerate(MUTATIONS)
        for i in range(n_per_kind)
    ]


def write_template(root: Path) -> None:
    """The two-patient cohort every case copies (written once)."""
    for p in ("GOOD", "DAMAGED"):
        write_series(
            root / p / "series",
            patient_id=p,
            n_slices=N_SLICES,
            rows=ROWS,
            cols=COLS,
            seed=0 if p == "GOOD" else 1,
        )


def build_case(template: Path, case: Case, root: Path) -> str:
    """Copy ``template`` to ``root`` and damage the DAMAGED patient's series."""
    shutil.copytree(template, root, symlinks=True)
    folder = root / "DAMAGED" / "series"
    files = sorted(folder.iterdir())
    rng = np.random.default_rng(case.seed)
    return MUTATIONS[case.kind](rng, files, folder)


class Hang(Exception):
    """The run did not finish within the time limit."""


@contextmanager
def time_limit(seconds: int) -> Iterator[None]:
    def _raise(signum: int, frame: object) -> None:
        raise Hang(f"no result after {seconds} s")

    old = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def write_checkpoint(path: Path) -> Path:
    """An untrained tiny U-Net checkpoint at :data:`ROWS` px: enough to drive ``upsample``."""
    import torch

    from slicelib.checkpoint import checkpoint_header, save_checkpoint
    from slicelib.config import ModelConfig, PrepareConfig, TrainConfig, to_dict
    from slicelib.models import build_generator

    cfg = TrainConfig(model="unet", model_cfg=ModelConfig(features=4))
    torch.manual_seed(0)
    net = build_generator(cfg.model, cfg.model_cfg)
    state = {
        **checkpoint_header(cfg.model, cfg.k, ROWS, 1, [], (1, 0.0)),
        "train_config": to_dict(cfg),
        "cache_config": to_dict(PrepareConfig(size=ROWS)),
        "models": {"generator": net.state_dict()},
    }
    save_checkpoint(path, state)
    return path


def _run_upsample(root: Path, work: Path, checkpoint: Path, seconds: int) -> tuple[str, str]:
    """Outcome and reason of ``upsample`` on the damaged series (see the module docstring)."""
    from slicelib.errors import SlicelibError
    from slicelib.upsample.folder import upsample_to_folder

    try:
        with time_limit(seconds):
            report = upsample_to_folder(
                root / "DAMAGED" / "series", work / "x2", checkpoint, device="cpu"
            )
    except Hang as exc:
        return "hang", str(exc)
    except SlicelibError as exc:
        return "excluded", str(exc)
    except Exception:
        return "traceback", traceback.format_exc(limit=-3)
    if report.slices_in == N_SLICES and report.slices_out == 2 * N_SLICES - 1:
        return "ok", ""
    return "lost", f"upsampled {report.slices_in} of {N_SLICES} slices"


def run_case(
    template: Path,
    case: Case,
    work: Path,
    seconds: int = 60,
    checkpoint: Path | None = None,
) -> dict[str, str]:
    """Build ``case`` under ``work`` and run scan and prepare (and, given a
    ``checkpoint``, upsample) in this process.

    Returns ``{"detail", "scan", "prepare", "upsample", "why"}``: the outcome of each
    run (see the module docstring; ``upsample`` is "" without a checkpoint) and the
    traceback or reason behind it.
    """
    from slicelib.config import PrepareConfig, ScanConfig
    from slicelib.data.prepare import prepare
    from slicelib.data.scan import scan
    from slicelib.errors import SlicelibError

    root = work / "data"
    detail = build_case(template, case, root)
    scan_cfg = ScanConfig(min_slices=3, workers=1)
    out = {"detail": detail, "scan": "", "prepare": "", "upsample": "", "why": ""}
    damaged = str(root / "DAMAGED")
    try:
        with time_limit(seconds):
            result = scan(root, scan_cfg, progress=False)
        rows = [r for r in result.series if r.patient_id == "DAMAGED" and r.n_files > 1]
        whole = [r for r in rows if r.included and r.n_files == N_SLICES]
        if whole:
            out["scan"] = "ok"
        elif any(r.included for r in rows):
            out["scan"] = "lost"
            out["why"] = "; ".join(f"{r.n_files} files included" for r in rows)
        else:
            out["scan"] = "excluded"
            out["why"] = "; ".join(r.reason for r in rows) or "; ".join(
                e for p, e in result.unreadable if p.startswith(damaged)
            )
    except Hang as exc:
        out["scan"], out["why"] = "hang", str(exc)
    except SlicelibError as exc:
        out["scan"], out["why"] = "excluded", str(exc)
    except Exception:
        out["scan"], out["why"] = "traceback", traceback.format_exc(limit=-3)

    try:
        with time_limit(seconds):
            cache = prepare(root, work / "cache", PrepareConfig(size=16), scan_cfg, progress=False)
        entries = {e.patient_id: e for e in cache.entries()}
        if "DAMAGED" not in entries:
            out["prepare"] = "excluded"
            reasons = [e["reason"] for e in cache.manifest.get("excluded_in_prepare", [])]
            out["why"] += "; " + "; ".join(reasons) if reasons else ""
        elif entries["DAMAGED"].n_slices == N_SLICES:
            out["prepare"] = "ok"
        else:
            out["prepare"] = "lost"
            out["why"] += f"; cached {entries['DAMAGED'].n_slices} slices"
    except Hang as exc:
        out["prepare"], out["why"] = "hang", out["why"] + f"; {exc}"
    except SlicelibError as exc:
        out["prepare"] = "excluded"
        out["why"] += f"; {exc}"
    except Exception:
        out["prepare"] = "traceback"
        out["why"] += "; " + traceback.format_exc(limit=-3)

    if checkpoint is not None:
        outcome, why = _run_upsample(root, work, checkpoint, seconds)
        out["upsample"] = outcome
        out["why"] += f"; upsample: {why}" if why else ""
    return out


def restore_permissions(root: Path) -> None:
    """Make every entry under ``root`` removable again (cases may chmod 000)."""
    for folder, dirs, names in os.walk(root):
        for n in dirs + names:
            p = Path(folder) / n
            if not p.is_symlink():
                p.chmod(0o755)
