"""What a method is, its name in results files and its label in the book.

A method is a family (a classical baseline, a trained model, or the refiner) and,
for the samplers of the DDPM and the refiner, how it samples: ancestral with all T
steps, DDIM with ``steps`` steps, or the mean of ``samples`` ancestral samples.
:class:`MethodSpec` gives each its name (``ddpm_ddim20``) and label ("DDPM, DDIM 20
steps"); :func:`method_spec` reads a name back, the one place that does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from slicelib.config import MODEL_NAMES, ModelName

Sampler = Literal["ancestral", "ddim"]

CLASSICAL: tuple[str, ...] = ("nearest", "linear", "cubic", "flow")
# The networks that predict one slice per pass (every model but the DDPM).
DETERMINISTIC_MODELS: tuple[ModelName, ...] = ("cnn", "unet", "gan", "gan_improved")
SAMPLING_FAMILIES: tuple[str, ...] = ("ddpm", "refine")

# The label of every family, and of each family's samplers.
FAMILY_LABELS: dict[str, str] = {
    "nearest": "nearest",
    "linear": "linear",
    "cubic": "cubic",
    "flow": "optical flow",
    "cnn": "CNN (EDSR)",
    "unet": "U-Net",
    "gan": "GAN",
    "gan_improved": "improved GAN",
    "ddpm": "DDPM",
    "mcnet": "motion-compensated CNN",
    "filter": "learned 9x9 filter",
    "refine": "refiner",
}


@dataclass(frozen=True)
class MethodSpec:
    """One method: ``family`` and, for a sampling family, its ``sampler``, DDIM
    ``steps``, and the number of ancestral ``samples`` averaged."""

    family: str
    sampler: Sampler | None = None
    steps: int | None = None  # DDIM only
    samples: int = 1  # ancestral only: above 1, the mean of that many samples

    @property
    def name(self) -> str:
        """The name in results files: ``unet``, ``ddpm_ancestral``, ``refine_ddim10``."""
        if self.sampler is None:
            return self.family
        if self.sampler == "ddim":
            return f"{self.family}_ddim{self.steps}"
        if self.samples > 1:
            return f"{self.family}_mean{self.samples}"
        return f"{self.family}_ancestral"

    @property
    def label(self) -> str:
        """How the book names it: "DDPM, DDIM 20 steps"."""
        family = FAMILY_LABELS.get(self.family, self.family)
        if self.sampler == "ddim":
            return f"{family}, DDIM {self.steps} steps"
        if self.samples > 1:
            return f"{family}, mean of {self.samples} samples"
        if self.sampler == "ancestral":
            return f"{family}, ancestral"
        return family

    def network_passes(self, timesteps: int) -> int | None:
        """Forward passes per slice (None for a classical method): a deterministic model
        1, ancestral T, DDIM min(steps, T), the mean of n n*T; the refiner adds its U-Net's."""
        if self.family in CLASSICAL:
            return None
        if self.sampler is None:
            return 1
        if self.sampler == "ddim":
            passes = min(int(self.steps or 0), timesteps)
        else:
            passes = self.samples * timesteps
        return passes + (1 if self.family == "refine" else 0)


def method_spec(name: str) -> MethodSpec | None:
    """The method a results file's ``name`` denotes; None for a name of no known method."""
    if name in CLASSICAL or name in MODEL_NAMES:
        return MethodSpec(name)
    family, _, variant = name.partition("_")
    if family not in SAMPLING_FAMILIES:
        return None
    if variant == "ancestral":
        return MethodSpec(family, "ancestral")
    for prefix in ("ddim", "mean"):
        count = variant.removeprefix(prefix)
        if variant.startswith(prefix) and count.isdigit() and int(count) >= 1:
            if prefix == "ddim":
                return MethodSpec(family, "ddim", steps=int(count))
            return MethodSpec(family, "ancestral", samples=int(count))
    return None


def method_label(name: str) -> str:
    """A method's label from its name (an unknown name as it is)."""
    spec = method_spec(name)
    return name if spec is None else spec.label


def family_of(name: str) -> str | None:
    """The family of the method ``name`` (``ddpm`` for ``ddpm_ddim20``); None if unknown."""
    spec = method_spec(name)
    return None if spec is None else spec.family


# The DDPM's ancestral sampler with all T steps: the original's DDPM method.
ANCESTRAL = MethodSpec("ddpm", "ancestral").name


def is_ddim(name: str, family: str = "ddpm") -> bool:
    """True when ``name`` is a DDIM variant of ``family``."""
    spec = method_spec(name)
    return spec is not None and spec.family == family and spec.sampler == "ddim"
