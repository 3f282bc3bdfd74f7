"""Typed configuration and the presets.

Every default is written once, here. The CLI, the notebooks' ``parameters`` cells
and the study runner all start from a :class:`Preset` and override single fields
with :func:`dataclasses.replace`.

Presets:

- ``paper``: the supplement's settings exactly (256x256, Adam 1e-4, L1, batch 4
  (DDPM 8), epochs 25/25/25/10/20, T=100, linear betas 1e-4..0.02, fp16 on GPU).
- ``demo``: the whole study on the synthetic cohort on 2 CPU cores in minutes.
  Every architecture keeps its structure; the reductions are listed in
  by :func:`preset_differences` and shown in the book.
- ``real``: the real-anatomy arm on the repository's IXI T1 subset at 128 px (see REAL).
- ``smoke``: tiny sizes for the test suite and the notebook checks only.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, get_args

from slicelib.errors import SlicelibError, lookup, unknown_choice

# The study's models: the original's five and the motion-compensated CNN (an extension).
ModelName = Literal["cnn", "unet", "gan", "gan_improved", "ddpm", "mcnet"]
MODEL_NAMES: tuple[ModelName, ...] = ("cnn", "unet", "gan", "gan_improved", "ddpm", "mcnet")
# What train() also trains: a learned 9 x 9 linear filter of the two neighbours, the check
# that the loop learns what a linear predictor can (not a model of the study).
TrainableName = ModelName | Literal["filter"]
TRAINABLE: tuple[TrainableName, ...] = (*MODEL_NAMES, "filter")
PresetName = Literal["demo", "paper", "real", "smoke"]
PRESET_NAMES: tuple[PresetName, ...] = get_args(PresetName)
# The default --preset (README, "The presets"): commands applied to a user's own data
# (prepare, train, evaluate, models) take the study's settings; the commands that make
# or run the demo (demo-data, study, and so `make study`) take the demo's.
USER_PRESET: PresetName = "paper"
DEMO_PRESET: PresetName = "demo"
Precision = Literal["fp16", "bf16", "fp32"]
CpuPrecision = Literal["auto", "bf16", "fp32"]
Schedule = Literal["constant", "cosine"]
Loss = Literal["l1", "mse"]
# Training triplets in the device's memory (slicelib.data.resident): "auto" on CUDA when
# the training split fits, "always", or "never" (the DataLoader).
DataOnDevice = Literal["auto", "always", "never"]
# Which patients of a cache `evaluate` scores: one split, or every patient ("all"), so a
# trained model can be scored on an external cohort prepared into a cache of its own.
EvalSplit = Literal["test", "val", "train", "all"]
EVAL_SPLITS: tuple[EvalSplit, ...] = ("test", "val", "train", "all")


@dataclass(frozen=True)
class CohortConfig:
    """The synthetic demo cohort (``slicelib demo-data``)."""

    patients: int = 12
    seed: int = 0
    matrix: int = 320  # in-plane pixels of the synthetic acquisition
    slices: int = 40  # acquired slices per T2 axial volume (1.5 mm spacing)
    distractors: bool = True  # add the series the scan must reject
    # Square field of view drawn per patient, mm: 0.5-0.7 mm pixels at the 320 matrix.
    fov_mm: tuple[float, float] = (160.0, 224.0)


@dataclass(frozen=True)
class ScanConfig:
    """Inclusion criteria (supplement 1.2) applied by ``slicelib scan``."""

    modality: str = "MR"
    field_strength_t: float = 3.0
    field_strength_tol_t: float = 0.25  # Siemens 3 T systems report 2.89362 T
    manufacturer: str = "siemens"
    t2_patterns: tuple[str, ...] = ("t2", "tse", "spc")
    exclude_patterns: tuple[str, ...] = (
        "dwi",
        "adc",
        "diff",
        "trace",
        "t1",
        "loc",
        "scout",
        "survey",
        "calib",
        "b0",
    )
    max_axial_angle_deg: float = 30.0  # oblique-axial within this counts as axial
    slice_thickness_mm: float = 1.5
    slice_thickness_tol_mm: float = 0.2
    min_slices: int = 20
    spacing_rel_tol: float = 0.05  # non-uniform spacing beyond this excludes
    workers: int = 0  # 0: one per CPU core
    # Largest decoded image a file may announce (rows x columns x frames x bytes),
    # checked from the header before any pixel is read; a safety limit, not a criterion.
    max_slice_mb: float = 64.0
    # Largest volume (a series, a NIfTI file) as slicelib holds it, float32, from the
    # headers before any voxel is read: a 4 MB .nii.gz can inflate to gigabytes, and
    # upsampling holds several copies. 1024 MB is 1024 x 1024 x 256 voxels.
    max_volume_mb: float = 1024.0


@dataclass(frozen=True)
class PrepareConfig:
    """Preprocessing into the cache (supplement 1.2, 1.3): slices resized to ``size`` pixels
    square, patients split by the fractions ``split`` (train, val, test) with ``seed``."""

    size: int = 256
    seed: int = 0
    clip_percentiles: tuple[float, float] | None = None  # ORIGINAL_CLIP_PERCENTILES: the original
    split: tuple[float, float, float] = (0.70, 0.15, 0.15)
    dtype: Literal["float16", "float32"] = "float16"
    # Normalisation fails when, after min-max, the 99th percentile lies below this
    # fraction of the range: a few extreme voxels (artefact) squeeze the anatomy.
    min_p99: float = 0.05
    # NIfTI only: the through-plane voxel axis (0, 1 or 2). None: from the header (dim_info's
    # slice dimension, else the axis of largest spacing, else the third axis; see
    # slicelib.data.nifti.slice_axis).
    slice_axis: int | None = None


# The original code's clipping before min-max (``slicelib prepare --clip-percentiles``).
ORIGINAL_CLIP_PERCENTILES: tuple[float, float] = (1.0, 99.0)


FlowMethod = Literal["tvl1", "ilk"]


@dataclass(frozen=True)
class FlowConfig:
    """The optical flow of the motion-compensated estimate: the "flow" baseline and the
    input of the motion-compensated network (``slicelib.baselines.flow``).

    scikit-image's TV-L1 (``method="tvl1"``) with fewer warps and iterations and a larger
    data attachment than its defaults (5, 10, 15): on the real arm's IXI T1 slices this
    gains 0.09 dB more over linear interpolation at k=1 and takes a quarter of the time
    (about 13 ms per 128 px slice); ``"ilk"``: iterative Lucas-Kanade, its defaults.
    """

    method: FlowMethod = "tvl1"
    num_warp: int = 3
    num_iter: int = 5
    attachment: float = 30.0


@dataclass(frozen=True)
class ModelConfig:
    """Architecture options. Defaults give the supplement's parameter counts."""

    features: int = 64
    cnn_blocks: int = 8
    cnn_convs_per_block: Literal[1, 2] = 1  # 1: 297,217 params; 2: conv-ReLU-conv, 592,641
    improved_blocks: int = 16  # improved GAN generator: 629,668 params with one-conv blocks
    ddpm_channels: int = 64  # DDPM denoiser base width (64: 20,506,113 params, paper 20.5 M)
    ddpm_time_dim: int = 256
    dropout: float = 0.0  # MC dropout for uncertainty (U-Net)
    # Every deterministic generator (CNN, U-Net, both GAN generators) starts as linear
    # interpolation: a global skip from the neighbours' mean and a zero-initialised last
    # layer. False: the supplement's initialisation (the CNN and the GAN generators keep
    # their parameter-free skip, but their random last layer starts far from linear).
    residual_from_linear: bool = False
    # The motion-compensated CNN: this many 3x3 layers of mc_features channels, dilated
    # 1, 2, 4, 2, 1 (29,217 parameters), on the neighbours and their flow estimate.
    mc_features: int = 32
    mc_dilations: tuple[int, ...] = (1, 2, 4, 2, 1)
    flow: FlowConfig = field(default_factory=FlowConfig)


@dataclass(frozen=True)
class DiffusionConfig:
    """The Gaussian diffusion process (supplement 2.5)."""

    timesteps: int = 100
    schedule: Literal["linear", "cosine"] = "linear"  # cosine ignores beta_start/beta_end
    beta_start: float = 1e-4
    beta_end: float = 0.02
    rescale: bool = False  # True: diffuse in [-1, 1]; False: in [0, 1] (the original)


@dataclass(frozen=True)
class TrainConfig:
    """One training run: a model, a k, and how to optimise it."""

    model: TrainableName = "unet"
    k: int = 1
    epochs: int = 25
    batch_size: int = 4  # the effective batch, over all processes (BATCH_RULE)
    lr: float = 1e-4
    # Learning rate over the run: constant (the original), or cosine decay to 0 after a
    # linear warm-up over the first ``warmup`` fraction of the steps (from lr / 25).
    schedule: Schedule = "constant"
    warmup: float = 0.0
    loss: Loss = "l1"  # cnn, unet, mcnet, filter: L1 (the original) or MSE
    grad_clip: float | None = None  # clip the gradient norm to this (None: no clipping)
    crop: int | None = None  # random square crops for CPU-sized training
    augment: bool = True  # flips and rot90, p=0.5 each (the original)
    steps_per_epoch: int | None = None  # None: one pass over the training triplets
    val_max_slices: int | None = None  # None: the whole validation split
    # At most this many evenly spaced training slices per patient (None: every slice): the
    # motion-compensated network's flow estimates are computed once for these.
    slices_per_patient: int | None = None
    adv_weight: float = 0.001  # gan; gan_improved uses 0.01
    fm_weight: float = 0.1  # gan_improved feature matching
    val_ddim_steps: int = 10  # ddpm: DDIM steps of the per-epoch validation PSNR/SSIM
    precision: Precision = "fp16"  # on CUDA
    # On the CPU: bfloat16 autocast (with channels_last) where the CPU computes it natively
    # ("auto"), always ("bf16") or never ("fp32"); the run records what it used.
    cpu_precision: CpuPrecision = "fp32"
    device: str = "auto"
    seed: int = 0
    num_workers: int | None = None  # DataLoader workers; None: 0 on the CPU, CUDA_LOADER_WORKERS
    compile: bool = False
    data_on_device: DataOnDevice = "auto"
    model_cfg: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)


FACTOR = 2  # the one supported through-plane upsampling factor

# Settings that change where or how fast a run goes, not what it is: a run may be
# resumed, reused or adopted under other values of these (and with more epochs).
# What a `prepare` input folder holds (DICOM tree or NIfTI files) and how it is told.
INPUT_KINDS: tuple[str, ...] = ("auto", "dicom", "nifti")
DEFAULT_INPUT_KIND = "auto"
INPUT_KIND_RULE = (
    "auto: a folder with .nii/.nii.gz files and no file named like DICOM (.dcm, .ima, "
    ".dicom, .img or no suffix) is a NIfTI folder; one without NIfTI files is a DICOM tree; "
    "both is an error that lists what was found. dicom: NIfTI files are ignored; nifti: "
    "only .nii/.nii.gz files are read"
)


RUN_INVARIANT_FIELDS: tuple[str, ...] = (
    "device",
    "precision",
    "cpu_precision",
    "num_workers",
    "compile",
    "data_on_device",
)

# How the processes of a torchrun job share a batch, and what that makes of the run.
BATCH_RULE = (
    "batch_size is the effective batch, the samples of one optimiser step over all "
    "processes: under torchrun each of N processes takes batch_size / N (N must divide "
    "it), so a run on N GPUs makes the steps of one process with that batch and is the "
    "same setting; a run of another effective batch is another setting. A run's identity "
    "therefore holds its effective batch (per-process batch x processes), not the number "
    "of processes"
)


def process_batch(batch_size: int, world_size: int) -> int:
    """Each process's share of the effective ``batch_size`` (:data:`BATCH_RULE`)."""
    if world_size < 1 or batch_size % world_size:
        raise SlicelibError(
            f"batch_size={batch_size} (the effective batch) does not split over {world_size} "
            f"processes: choose a number of processes that divides it, or another batch "
            f"size (then the run is another setting than the preset's)"
        )
    return batch_size // world_size


def run_defining(cfg: TrainConfig) -> dict[str, Any]:
    """The settings of ``cfg`` that define a run (JSON-ready): all but
    :data:`RUN_INVARIANT_FIELDS` and, under a constant learning rate, ``epochs`` (a run
    with more epochs continues the same one; a schedule spans the run's epochs, so there
    they define it), with the batch as ``effective_batch`` (:data:`BATCH_RULE`)."""
    return recorded_run_defining(to_dict(cfg))


def recorded_run_defining(
    train: Mapping[str, Any], world_size: int = 1, per_process: int | None = None
) -> dict[str, Any]:
    """:func:`run_defining` of a trained run from what it recorded: ``train`` (the
    ``train`` of its ``config.json``, or its checkpoint's ``train_config``), its
    ``world_size`` and its per-process batch (``process_batch``). A run recorded
    without the latter (slicelib 0.1) took ``batch_size`` in every process: its
    effective batch is ``batch_size x world_size``."""
    constant = train.get("schedule", "constant") == "constant" and not train.get("warmup")
    skip = (*RUN_INVARIANT_FIELDS, "epochs") if constant else RUN_INVARIANT_FIELDS
    defining: dict[str, Any] = {}
    for name, value in train.items():
        if name == "batch_size":  # in its place, so that errors name it in the same order
            share = value if per_process is None else per_process
            defining["effective_batch"] = int(share) * int(world_size)
        elif name not in skip:
            defining[name] = value
    return defining


# Training data loader workers on CUDA when TrainConfig.num_workers is None: they load the
# next batches while the GPU computes (on the CPU they would compete for the same cores).
# A worker process hands each batch over through shared memory, about 600 triplets/s at
# 256 px with batch 4 (in-process loading: about 2,500/s); four keep a GPU fed.
CUDA_LOADER_WORKERS = 4


@dataclass(frozen=True)
class EvalConfig:
    methods: tuple[str, ...] = ("nearest", "linear", "cubic", "flow")
    common: bool = False  # restrict to slices where k=1 and k=2 are both evaluable
    ddim_steps: tuple[int, ...] = (10, 20, 50)
    ddpm_samples: int = 4  # samples averaged for the "mean of n" DDPM variant
    ddpm_max_slices: int | None = None  # None: the whole test split
    seed: int = 0
    device: str = "auto"
    flow: FlowConfig = field(default_factory=FlowConfig)  # of the "flow" baseline
    batch_size: int = 8  # slices per forward pass of a trained run; timing is per slice
    std_examples: int = 4  # slices whose DDPM mean/std maps are saved for the analysis
    split: EvalSplit = "test"  # the patients scored (see EvalSplit)
    # At most this many slices per patient, the same at every k: evenly spaced over the
    # slices both k=1 and k=2 can score, away from the volume's ends (None: every slice).
    slices_per_patient: int | None = None


# upsample: a predicted slice whose mean, or whose 1st or 99th percentile before
# clipping, lies more than this fraction of the series' intensity range outside what its
# two neighbours span (their means; their lowest and highest values) is reported in a
# warning: a good model's slice lies between its neighbours, give or take noise and
# small shifts, while a saturated or collapsed one (a damaged checkpoint) looks like
# data once clipped.
NEIGHBOUR_RANGE_TOL = 0.1


@dataclass(frozen=True)
class UpsampleConfig:
    """Whole-volume x2 upsampling (``slicelib upsample``)."""

    batch_size: int = 8  # slice pairs per forward pass
    mc_samples: int = 16  # MC dropout passes for --uncertainty
    ddim_steps: int = 20  # a DDPM checkpoint samples with deterministic DDIM
    seed: int = 0
    # auto: bfloat16 on CPUs with AMX/AVX512-BF16 (slicelib.inference), else fp32
    cpu_precision: CpuPrecision = "auto"


def _refine_train() -> TrainConfig:
    # The refiner's denoiser is the DDPM's network: its budget (20 epochs of batch 8 in
    # the paper preset), its DDIM validation and its diffusion, in [-1, 1].
    return TrainConfig(
        model="ddpm", epochs=20, batch_size=8, diffusion=DiffusionConfig(rescale=True)
    )


@dataclass(frozen=True)
class RefineConfig:
    """Residual diffusion refining a trained U-Net (supplement 4.3).

    It composes :class:`TrainConfig` rather than copying its fields: ``train`` says how
    the refiner's denoiser is optimised, validated and where it runs, exactly as for any
    run (epochs, batch, lr, crop, steps, precision, device, seed, ``model_cfg`` with the
    DDPM's ``ddpm_channels``, ``diffusion``), and :func:`slicelib.train.train` reads it
    as it reads any run's. ``train.model`` is ``"ddpm"``: the denoiser is the DDPM's
    conditional U-Net (with one more conditioning channel). Only what refinement alone
    has is written here. ``unet_run``: the trained run whose predictions are refined
    (filled in by whoever trains; the presets leave it empty).
    """

    train: TrainConfig = field(default_factory=_refine_train)
    recon_weight: float = 1.0  # loss = noise MSE + recon_weight * L1(refined, target)
    residual_quantile: float = 0.95  # this |residual| quantile maps to the edge of [0, 1]
    unet_run: str | None = None

    @property
    def k(self) -> int:
        return self.train.k


# What slicelib.train.train trains: one model, or the refinement of a trained U-Net.
RunConfig = TrainConfig | RefineConfig


def train_part(cfg: RunConfig) -> TrainConfig:
    """How ``cfg`` is optimised: the :class:`TrainConfig` itself, or a refinement's."""
    return cfg.train if isinstance(cfg, RefineConfig) else cfg


def run_kind(cfg: RunConfig) -> str:
    """The ``model`` a run's checkpoint records: the model's name, or ``"refine"``."""
    return "refine" if isinstance(cfg, RefineConfig) else cfg.model


# Per-model settings from the supplement (section 2).
PAPER_EPOCHS: dict[str, int] = {"cnn": 25, "unet": 25, "gan": 25, "gan_improved": 10, "ddpm": 20}
PAPER_BATCH: dict[str, int] = {"cnn": 4, "unet": 4, "gan": 4, "gan_improved": 4, "ddpm": 8}
# The motion-compensated network (not in the supplement) trains as the CNN does, with MSE:
# its corrections are small, and squared errors weigh the large ones it exists to fix.
PAPER_EPOCHS["mcnet"], PAPER_BATCH["mcnet"] = PAPER_EPOCHS["cnn"], PAPER_BATCH["cnn"]
MCNET_TRAINING: dict[str, Any] = {"loss": "mse"}
ADV_WEIGHT: dict[str, float] = {"gan": 0.001, "gan_improved": 0.01}


@dataclass(frozen=True)
class Preset:
    name: PresetName
    cohort: CohortConfig
    scan: ScanConfig
    prepare: PrepareConfig
    model: ModelConfig
    diffusion: DiffusionConfig
    epochs: dict[str, int]
    batch: dict[str, int]
    crop: int | None
    steps_per_epoch: int | None
    val_max_slices: int | None
    eval: EvalConfig
    ks: tuple[int, ...] = (1, 2)
    ddpm_ks: tuple[int, ...] = (1,)  # the original trained the DDPM for k=1 only
    upsample: UpsampleConfig = field(default_factory=UpsampleConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    lr: float = TrainConfig.lr  # Adam's learning rate for every model
    models: tuple[ModelName, ...] = MODEL_NAMES  # the networks the study trains
    cpu_precision: CpuPrecision = TrainConfig.cpu_precision  # every model, on the CPU
    # Per model: TrainConfig fields beside its epochs and batch (e.g. the motion-compensated
    # network's MSE loss, a schedule).
    per_model: dict[str, dict[str, Any]] = field(default_factory=dict)

    def train_config(self, model: TrainableName, k: int, **overrides: Any) -> TrainConfig:
        """The training configuration of ``model`` at ``k`` under this preset."""
        if model not in self.epochs:
            raise unknown_choice("model", model, tuple(self.epochs))
        if k < 1:
            raise SlicelibError(f"k must be >= 1 (got {k})")
        cfg = TrainConfig(
            model=model,
            k=k,
            epochs=self.epochs[model],
            batch_size=self.batch[model],
            lr=self.lr,
            crop=self.crop,
            steps_per_epoch=self.steps_per_epoch,
            val_max_slices=self.val_max_slices,
            adv_weight=ADV_WEIGHT.get(model, TrainConfig.adv_weight),
            model_cfg=self.model,
            diffusion=self.diffusion,
            cpu_precision=self.cpu_precision,
        )
        return replace_checked(cfg, **{**self.per_model.get(model, {}), **overrides})


PAPER = Preset(
    name="paper",
    cohort=CohortConfig(),
    scan=ScanConfig(),
    prepare=PrepareConfig(),
    model=ModelConfig(),
    diffusion=DiffusionConfig(),
    epochs=PAPER_EPOCHS,
    batch=PAPER_BATCH,
    crop=None,
    steps_per_epoch=None,
    val_max_slices=None,
    eval=EvalConfig(),
    per_model={"mcnet": MCNET_TRAINING},
)

# The demo's optimisation budget, the same for every network (DDPM included):
# DEMO_EPOCHS x DEMO_STEPS_PER_EPOCH steps of DEMO_BATCH crops = 480 training samples.
DEMO_EPOCHS = 3
DEMO_STEPS_PER_EPOCH = 40
DEMO_BATCH = 4

DEMO = Preset(
    name="demo",
    # 16 patients split 8 / 2 / 6: six test patients, the fewest a patient-level test
    # at the 5 % level can use (slicelib.stats.MIN_TEST_PATIENTS).
    cohort=CohortConfig(patients=16),
    scan=ScanConfig(),
    prepare=PrepareConfig(size=96, split=(0.5, 0.125, 0.375)),
    model=ModelConfig(ddpm_channels=16, residual_from_linear=True),
    diffusion=DiffusionConfig(),
    epochs=dict.fromkeys(MODEL_NAMES, DEMO_EPOCHS),
    batch=dict.fromkeys(MODEL_NAMES, DEMO_BATCH),
    crop=40,
    steps_per_epoch=DEMO_STEPS_PER_EPOCH,
    val_max_slices=16,
    eval=EvalConfig(ddpm_max_slices=6, ddim_steps=(10, 25), ddpm_samples=2),
    refine=RefineConfig(
        dataclasses.replace(
            _refine_train(), epochs=2, crop=40, steps_per_epoch=50, val_max_slices=8, lr=1e-3
        )
    ),
    lr=1e-3,
    cpu_precision="auto",
    per_model={"mcnet": MCNET_TRAINING},
)

SMOKE = Preset(
    name="smoke",
    cohort=CohortConfig(patients=4, matrix=96, slices=24),
    scan=ScanConfig(),
    prepare=PrepareConfig(size=32),
    model=ModelConfig(ddpm_channels=8),
    diffusion=DiffusionConfig(timesteps=10),
    epochs=dict.fromkeys(TRAINABLE, 1),
    batch=dict.fromkeys(TRAINABLE, 4),
    crop=None,
    steps_per_epoch=2,
    val_max_slices=4,
    eval=EvalConfig(ddpm_max_slices=2, ddim_steps=(2,), ddpm_samples=2),
    upsample=UpsampleConfig(batch_size=4, mc_samples=3, ddim_steps=2),
    refine=RefineConfig(
        dataclasses.replace(
            _refine_train(), epochs=1, batch_size=4, steps_per_epoch=2, val_max_slices=2
        )
    ),
    per_model={"mcnet": MCNET_TRAINING},
)

# The real-anatomy arm on the repository's IXI T1 subset (data/ixi-t1-2mm, 70 subjects),
# run by `slicelib study` beside the demo preset's synthetic arm in about 8 minutes of a
# 2-core machine. 128 px keeps the volumes whole; 55/15/30 % gives 39/10/21 subjects (21
# test). The CNN, the U-Net and the motion-compensated CNN train at k=1 and k=2, each
# with the recipe chosen on validation subjects for CPU training that counts (longer
# budgets of the same recipe: `python -m benchmarks real`):
# - MSE, not L1: PSNR is an MSE measure and the residual over linear interpolation is
#   heavy-tailed, so L1's sign gradients barely move it (the U-Net at 2,560 samples:
#   L1 +0.02 dB, MSE +0.31 dB over linear at k=1);
# - a 5 % warm-up from lr / 25, then a cosine decay to 0: at a constant 1e-3 the CNN's
#   validation gain swung by 2 dB from epoch to epoch; its peak is 3e-4 (1e-3 still
#   swings; gradient clipping did not help);
# - bfloat16 autocast with channels_last where the CPU has it (1.9 to 2.6 times the fp32
#   throughput at the same final loss);
# - 64 px crops (48 for the CNN), batch 8 (16 for the small motion-compensated CNN), at
#   most 60 evenly spaced training slices per subject (the motion-compensated CNN's flow
#   estimates are computed once for them; with 12 per subject it gained 0.04 dB over
#   optical flow at k=1, with 60 some 0.45 dB);
# - budgets of 5,120 samples (U-Net, CNN) and about 24,000 (the motion-compensated CNN, at
#   some 700 samples/s); REAL_STEPS_PER_EPOCH steps per epoch, so the validation curve has
#   points to show whether a run flattened.
# The evaluation scores REAL_SLICES_PER_PATIENT slices of each test subject: all 1,890
# would take ten minutes per k.
REAL_STEPS_PER_EPOCH = 40
REAL_SLICES_PER_PATIENT = 6
REAL_RECIPE: dict[str, Any] = {"loss": "mse", "schedule": "cosine", "warmup": 0.05}
REAL = Preset(
    name="real",
    cohort=CohortConfig(),
    scan=ScanConfig(),
    prepare=PrepareConfig(size=128, split=(0.55, 0.15, 0.30)),
    model=ModelConfig(ddpm_channels=16, residual_from_linear=True),
    diffusion=DiffusionConfig(),
    epochs={**dict.fromkeys(MODEL_NAMES, 16), "mcnet": 26, "filter": 5},
    batch={**dict.fromkeys(MODEL_NAMES, 8), "mcnet": 16, "filter": 16},
    crop=64,
    steps_per_epoch=REAL_STEPS_PER_EPOCH,
    val_max_slices=8,
    eval=dataclasses.replace(DEMO.eval, slices_per_patient=REAL_SLICES_PER_PATIENT),
    refine=RefineConfig(dataclasses.replace(DEMO.refine.train, crop=64)),
    lr=1e-3,
    models=("cnn", "unet", "mcnet"),
    cpu_precision="auto",
    per_model={
        "unet": {**REAL_RECIPE, "slices_per_patient": 60},
        "cnn": {**REAL_RECIPE, "lr": 3e-4, "crop": 48, "slices_per_patient": 60},
        "mcnet": {**REAL_RECIPE, "slices_per_patient": 60, "steps_per_epoch": 58},
        # The check that the loop learns what a linear predictor can: the convex problem
        # of the least-squares filter, a high rate after a warm-up, float32 (bfloat16
        # gains nothing on 163 parameters).
        "filter": {**REAL_RECIPE, "lr": 1e-2, "steps_per_epoch": 200, "cpu_precision": "fp32"},
    },
)

PRESETS: dict[str, Preset] = {p.name: p for p in (DEMO, PAPER, REAL, SMOKE)}


def get_preset(name: str) -> Preset:
    return lookup(PRESETS, name, "preset")


T = TypeVar("T")


def given(**overrides: Any) -> dict[str, Any]:
    """The ``overrides`` that are set (not None: an option not given on the command line),
    in order, for :func:`replace_checked`."""
    return {name: value for name, value in overrides.items() if value is not None}


def replace_checked(cfg: T, **overrides: Any) -> T:
    """``dataclasses.replace`` that names an unknown parameter in a one-line error."""
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(overrides) - names)
    if unknown:
        raise SlicelibError(
            f"unknown parameter(s) {', '.join(unknown)} for {type(cfg).__name__} "
            f"(known: {', '.join(sorted(names))})"
        )
    return dataclasses.replace(cfg, **overrides)  # type: ignore[type-var]


def to_dict(cfg: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config dataclass (tuples become lists)."""
    return dataclasses.asdict(cfg)


# Fields renamed since configurations were first saved: old name -> new name.
RENAMED_FIELDS: dict[str, str] = {"unet_residual": "residual_from_linear"}


def from_dict(cls: type[T], data: dict[str, Any]) -> T:
    """Rebuild a config dataclass saved with :func:`to_dict` (nested ones included)."""
    kwargs: dict[str, Any] = {}
    hints = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for key, value in data.items():
        if key not in hints and RENAMED_FIELDS.get(key) in hints:
            key = RENAMED_FIELDS[key]
        if key not in hints:
            raise SlicelibError(f"unknown field {key!r} in saved {cls.__name__}")
        default = hints[key].default_factory  # type: ignore[misc]
        if dataclasses.is_dataclass(default) or (
            callable(default) and dataclasses.is_dataclass(default)
        ):
            value = from_dict(default, value)  # type: ignore[arg-type]
        elif isinstance(value, list):
            value = tuple(value)
        kwargs[key] = value
    return cls(**kwargs)


def differences(ours: Any, theirs: Any, reference: str, skip: tuple[str, ...] = ()) -> list[str]:
    """Every setting in which the config dataclass ``ours`` differs from ``theirs``, one
    line each, e.g. ``"prepare.size: 96 (paper: 256)"`` (``reference`` names ``theirs``;
    top-level fields in ``skip`` are left out)."""
    lines: list[str] = []

    def walk(mine: Any, other: Any, path: str) -> None:
        if dataclasses.is_dataclass(mine) and not isinstance(mine, type):
            for f in dataclasses.fields(mine):
                if path or f.name not in skip:
                    walk(getattr(mine, f.name), getattr(other, f.name), f"{path}{f.name}.")
        elif isinstance(mine, dict):
            for key in mine:
                walk(
                    mine[key], other.get(key) if isinstance(other, dict) else None, f"{path}{key}."
                )
        elif mine != other:
            lines.append(f"{path.rstrip('.')}: {mine} ({reference}: {other})")

    walk(ours, theirs, "")
    return lines


def preset_differences(preset: Preset, reference: Preset = PAPER) -> list[str]:
    """Every setting in which ``preset`` differs from ``reference`` (the cohort is
    described with the data), one line each. The book lists these for the demo preset,
    so the list can never disagree with the settings that were run."""
    return differences(preset, reference, reference.name, skip=("name", "cohort"))
