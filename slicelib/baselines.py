"""Classical slice interpolation: nearest, linear, cubic and motion-compensated.

Every baseline predicts the slice S_i from its neighbours S_{i-k} and S_{i+k}
(2-D float arrays (H, W), values in [0, 1]); the cubic one also uses the wider
context S_{i-3k} and S_{i+3k} when the volume has them. :class:`Neighbours`
carries one slice's inputs, :func:`neighbours` cuts them out of a volume and
:class:`BaselineInterpolator` is each method (by its name in :data:`BASELINES`) as
the evaluation and upsampling use it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple, get_args

import numpy as np
from scipy.ndimage import map_coordinates
from skimage.registration import optical_flow_ilk, optical_flow_tvl1

from slicelib.config import FlowConfig, FlowMethod
from slicelib.errors import SlicelibError, lookup

__all__ = [
    "BASELINES",
    "BASELINE_NAMES",
    "CUBIC_WEIGHTS",
    "BaselineInterpolator",
    "BaselineOutput",
    "FlowMethod",
    "Neighbours",
    "cubic",
    "flow",
    "get_baseline",
    "linear",
    "nearest",
    "neighbours",
    "optical_flow",
    "warp",
]

FLOW_METHODS: tuple[FlowMethod, ...] = get_args(FlowMethod)
DEFAULT_FLOW = FlowConfig()

# Lagrange weights of the cubic through z = -3, -1, 1, 3 evaluated at z = 0
# (Catmull-Rom at the midpoint): exact for any cubic polynomial in z.
CUBIC_WEIGHTS: tuple[float, float, float, float] = (-1 / 16, 9 / 16, 9 / 16, -1 / 16)


@dataclass(frozen=True)
class Neighbours:
    """The inputs of one prediction: slices (H, W) of a volume, values in [0, 1].

    ``far_before`` / ``far_after`` (S_{i-3k}, S_{i+3k}) are None where the
    volume ends before them.
    """

    before: np.ndarray  # S_{i-k}
    after: np.ndarray  # S_{i+k}
    far_before: np.ndarray | None = None  # S_{i-3k}
    far_after: np.ndarray | None = None  # S_{i+3k}

    @property
    def has_far(self) -> bool:
        return self.far_before is not None and self.far_after is not None


def neighbours(volume: np.ndarray, index: int, k: int) -> Neighbours:
    """The neighbours of slice ``index`` at distance ``k`` in ``volume`` (S, H, W).

    Slices are returned as float32. Raises :class:`SlicelibError` when S_{i-k} or
    S_{i+k} is outside the volume.
    """
    n = volume.shape[0]
    if k < 1 or index - k < 0 or index + k > n - 1:
        raise SlicelibError(f"slice {index} has no neighbours at k={k} in a volume of {n} slices")

    def get(j: int) -> np.ndarray:
        return np.asarray(volume[j], dtype=np.float32)

    has_far = index - 3 * k >= 0 and index + 3 * k <= n - 1
    return Neighbours(
        before=get(index - k),
        after=get(index + k),
        far_before=get(index - 3 * k) if has_far else None,
        far_after=get(index + 3 * k) if has_far else None,
    )


def nearest(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Copy of S_{i-k} (the original study's "nearest" baseline); (H, W)."""
    return np.array(before, dtype=np.float32, copy=True)


def linear(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Mean of the two neighbours; (H, W) float32."""
    return (0.5 * (np.asarray(before, np.float32) + np.asarray(after, np.float32))).astype(
        np.float32
    )


def cubic(
    far_before: np.ndarray, before: np.ndarray, after: np.ndarray, far_after: np.ndarray
) -> np.ndarray:
    """Cubic interpolation through S_{i-3k}, S_{i-k}, S_{i+k}, S_{i+3k} at S_i; (H, W).

    Weights (-1, 9, 9, -1) / 16. May leave [0, 1] slightly (overshoot); the
    evaluation clips.
    """
    w0, w1, w2, w3 = CUBIC_WEIGHTS
    out = (
        w0 * np.asarray(far_before, np.float64)
        + w1 * np.asarray(before, np.float64)
        + w2 * np.asarray(after, np.float64)
        + w3 * np.asarray(far_after, np.float64)
    )
    return out.astype(np.float32)


def optical_flow(reference: np.ndarray, moving: np.ndarray, cfg: FlowConfig) -> np.ndarray:
    """Dense flow (2, H, W) (rows, cols) with ``reference(x) ~ moving(x + flow(x))``."""
    ref = np.asarray(reference, dtype=np.float32)
    mov = np.asarray(moving, dtype=np.float32)
    if cfg.method == "tvl1":
        tvl1 = {"num_warp": cfg.num_warp, "num_iter": cfg.num_iter, "attachment": cfg.attachment}
        return np.asarray(optical_flow_tvl1(ref, mov, **tvl1), dtype=np.float32)
    if cfg.method == "ilk":
        return np.asarray(optical_flow_ilk(ref, mov), dtype=np.float32)
    raise SlicelibError(f"unknown optical flow method {cfg.method!r} (choose from tvl1, ilk)")


def warp(image: np.ndarray, displacement: np.ndarray) -> np.ndarray:
    """``image(x + displacement(x))`` sampled bilinearly; image (H, W), displacement (2, H, W).

    Samples outside the image take the nearest edge value.
    """
    h, w = image.shape
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    coords = np.stack([rows + displacement[0], cols + displacement[1]])
    out = map_coordinates(np.asarray(image, np.float32), coords, order=1, mode="nearest")
    return np.asarray(out, dtype=np.float32)


def flow(before: np.ndarray, after: np.ndarray, cfg: FlowConfig = DEFAULT_FLOW) -> np.ndarray:
    """Motion-compensated interpolation of the middle slice; (H, W) float32.

    The flow f from S_{i-k} to S_{i+k} (``S_{i-k}(x) ~ S_{i+k}(x + f(x))``) is
    assumed linear in z, so a structure half-way sits at x with
    ``S_i(x) ~ S_{i-k}(x - f/2) ~ S_{i+k}(x + f/2)``; both warps are blended
    equally, which is the linear baseline where the flow is zero.
    """
    f = optical_flow(before, after, cfg)
    half = 0.5 * f
    return 0.5 * (warp(before, -half) + warp(after, half))


class BaselineOutput(NamedTuple):
    prediction: np.ndarray  # (H, W) float32, unclipped
    fallback: bool  # True where the method fell back to linear (cubic near the ends)


# Every classical method by name, with what it does.
BASELINES: dict[str, str] = {
    "nearest": "copy of S_{i-k}",
    "linear": "mean of S_{i-k} and S_{i+k}",
    "cubic": "cubic through S_{i-3k}, S_{i-k}, S_{i+k}, S_{i+3k}; linear near the ends",
    "flow": "optical flow between the neighbours, both warped half-way",
}
BASELINE_NAMES: tuple[str, ...] = tuple(BASELINES)


class BaselineInterpolator:
    """A classical method as an :class:`~slicelib.interpolator.Interpolator`: tensor
    (N, 2, H, W) in [0, 1] -> (N, 1, H, W) clipped to [0, 1], computed with numpy on the
    CPU. Called on two neighbours, the cubic method falls back to linear; the evaluation
    gives it its wider context through :meth:`predict`."""

    def __init__(self, name: str, flow: FlowConfig = DEFAULT_FLOW) -> None:
        lookup(BASELINES, name, "baseline")
        self.name = name
        self.flow = flow

    def predict(self, nb: Neighbours) -> BaselineOutput:
        """The prediction (H, W) of one slice from its neighbours, unclipped."""
        if self.name == "nearest":
            return BaselineOutput(nearest(nb.before, nb.after), False)
        if self.name == "flow":
            return BaselineOutput(flow(nb.before, nb.after, self.flow), False)
        if self.name == "cubic" and nb.far_before is not None and nb.far_after is not None:
            return BaselineOutput(cubic(nb.far_before, nb.before, nb.after, nb.far_after), False)
        return BaselineOutput(linear(nb.before, nb.after), self.name == "cubic")

    def __call__(self, inputs: Any) -> Any:
        import torch

        x = inputs.detach().float().cpu().numpy()
        out = [self.predict(Neighbours(a, b)) for a, b in x[:, :2]]
        pred = np.clip(np.stack([o.prediction for o in out]), 0.0, 1.0).astype(np.float32)
        return torch.from_numpy(pred[:, None]).to(inputs.device)


def get_baseline(name: str, flow: FlowConfig = DEFAULT_FLOW) -> BaselineInterpolator:
    """The classical method called ``name``; :class:`SlicelibError` for an unknown one."""
    return BaselineInterpolator(name, flow)
