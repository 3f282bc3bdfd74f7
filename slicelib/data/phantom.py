"""A synthetic male pelvis as seen by an axial T2-weighted MRI: the image model.

The anatomy is a continuous 3-D function of position in millimetres, sampled on
the acquisition grid, so the same subject can be imaged at any matrix, slice
spacing or thickness. It is built from:

- analytic shapes (:class:`Blob`: superellipse cross-sections whose centre,
  size and angle change smoothly and nonlinearly along z) painted in order with
  soft, pixel-wide edges (:class:`Layer`);
- smooth 3-D random fields (:class:`LatticeField`: Gaussian kernels on a regular
  lattice, separable, so sampling is three sparse matrix products) that give each
  tissue its texture, the fat its septa, the seminal vesicles their convolutions,
  the rectum its gas, and the organs irregular outlines.

Through-plane detail lives at the few-millimetre scale: texture correlation
lengths of 1-3 mm along z, outlines that wiggle over 2-3 mm, nodules, vessels and
organ ends whose cross-sections move and change size nonlinearly from slice to
slice. That makes predicting a slice from neighbours 3 mm apart (k=1)
moderately hard and from 6 mm apart (k=2) hard, while the noise stays
independent from slice to slice. The amplitudes are calibrated so that linear
interpolation scores as on the original data (see
:func:`slicelib.data.synthetic.cohort_difficulty`).

:func:`acquire` turns a subject into an image volume: each slice integrates the
anatomy over its slice profile (a box of the slice thickness, sampled at
``profile_samples`` points), then in-plane motion between slices (some
subjects), a smooth receive-coil bias field and Rician noise are applied.
Intensities are relative T2 signal (fat about 0.7, urine about 1.0).

Coordinates: ``x`` to the patient's left, ``y`` posterior, ``z`` superior (DICOM
LPS), centred on the prostate. Images are (rows, columns) = (y, x): anterior at
the top, the patient's right on the left of the image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from scipy import ndimage, sparse

F32 = np.float32


# --------------------------------------------------------------------------- fields


@dataclass(frozen=True)
class FieldSpec:
    """A smooth random field: Gaussian kernel widths and lattice steps, in mm."""

    sigma_xy: float
    sigma_z: float
    step_xy: float
    step_z: float


# Random fields by role. "fine": tissue grain; "medium": tissue texture; "septa": its
# level sets draw fat septa and vesicle walls; "coarse": slow texture, rectal gas;
# "outline": irregular organ outlines; "bias": coil sensitivity.
FIELD_SPECS: dict[str, FieldSpec] = {
    "fine": FieldSpec(sigma_xy=0.6, sigma_z=1.2, step_xy=0.6, step_z=1.0),
    "medium": FieldSpec(sigma_xy=1.8, sigma_z=1.8, step_xy=1.8, step_z=1.25),
    "septa": FieldSpec(sigma_xy=2.0, sigma_z=3.0, step_xy=2.0, step_z=2.0),
    "coarse": FieldSpec(sigma_xy=6.0, sigma_z=6.0, step_xy=6.0, step_z=6.0),
    "outline": FieldSpec(sigma_xy=4.0, sigma_z=2.5, step_xy=4.0, step_z=2.0),
    "bias": FieldSpec(sigma_xy=60.0, sigma_z=60.0, step_xy=45.0, step_z=45.0),
}


def _kernel(
    coords: np.ndarray, lattice: np.ndarray, sigma: float, scale: float = 1.0
) -> sparse.csr_matrix:
    """Gaussian kernel matrix (len(coords), len(lattice)), peak ``scale``, cut at 3.5 sigma."""
    diff = (np.asarray(coords, dtype=np.float64)[:, None] - lattice[None, :]) / sigma
    k = (scale * np.exp(-0.5 * diff * diff)).astype(F32)
    k[np.abs(diff) > 3.5] = 0.0
    return sparse.csr_matrix(k)


def _lattice(lo: float, hi: float, step: float, sigma: float) -> np.ndarray:
    """Lattice points (mm) anchored at multiples of ``step``, covering [lo, hi] +- 3.5 sigma."""
    first = math.floor((lo - 3.5 * sigma) / step)
    last = math.ceil((hi + 3.5 * sigma) / step)
    return np.arange(first, last + 1, dtype=np.float64) * step


class LatticeField:
    """A unit-variance smooth random field f(x, y, z) on a fixed (x, y) pixel grid.

    f = sum_ijk w_ijk g(x - X_i) g(y - Y_j) g(z - Z_k) with w uniform, zero mean,
    on a lattice anchored in millimetres, scaled to unit variance. In-plane the
    field is seen through the pixel's point-spread (a Gaussian of half a pixel):
    the kernel widens to ``sigma_eff`` and the variance drops by
    ``sigma / sigma_eff`` per axis, so small matrices are not aliased; the lattice
    step grows with the kernel, so coarse matrices cost little. The kernels are
    sparse (cut at 3.5 sigma): sampling costs a few multiply-adds per output
    pixel. ``sample(zs)`` evaluates any z positions: (len(zs), H, W) float32.
    """

    def __init__(
        self,
        rng: np.random.Generator,
        spec: FieldSpec,
        xs: np.ndarray,
        ys: np.ndarray,
        z_range: tuple[float, float],
        psf_mm: float,
    ) -> None:
        sigma_eff = math.hypot(spec.sigma_xy, psf_mm)
        step = spec.step_xy * sigma_eff / spec.sigma_xy
        lat_x = _lattice(float(xs.min()), float(xs.max()), step, sigma_eff)
        lat_y = _lattice(float(ys.min()), float(ys.max()), step, sigma_eff)
        self._lat_z = _lattice(z_range[0], z_range[1], spec.step_z, spec.sigma_z)
        self._sigma_z = spec.sigma_z
        # A lattice sum of unit Gaussians has variance prod over axes of sigma sqrt(pi) / step;
        # uniform weights on [-0.5, 0.5) have variance 1/12. Target: sigma / sigma_eff per
        # in-plane axis (the point-spread's loss), 1 along z.
        raw_xy = sigma_eff * math.sqrt(math.pi) / step
        raw_z = spec.sigma_z * math.sqrt(math.pi) / spec.step_z / 12.0
        amp_xy = math.sqrt(spec.sigma_xy / sigma_eff / raw_xy)
        kx = _kernel(xs, lat_x, sigma_eff, amp_xy)
        ky = _kernel(ys, lat_y, sigma_eff, amp_xy / math.sqrt(raw_z))
        nz, ny, nx = len(self._lat_z), len(lat_y), len(lat_x)
        h, w = len(ys), len(xs)
        # Weights laid out (x, z, y) so both contractions are sparse @ contiguous dense.
        weights = rng.random((nx, nz * ny), dtype=F32)
        weights -= F32(0.5)
        a = kx @ weights  # (W, nz * ny)
        a = np.ascontiguousarray(a.reshape(w, nz, ny).transpose(2, 1, 0)).reshape(ny, nz * w)
        b = ky @ a  # (H, nz * W)
        self._planes = np.ascontiguousarray(b.reshape(h, nz, w).transpose(1, 0, 2)).reshape(nz, -1)
        self._shape = (h, w)

    def sample(self, zs: np.ndarray) -> np.ndarray:
        kz = _kernel(zs, self._lat_z, self._sigma_z)
        return np.asarray(kz @ self._planes).reshape(len(zs), *self._shape)


# --------------------------------------------------------------------------- shapes


@dataclass(frozen=True)
class Blob:
    """A solid whose axial cross-section is a superellipse changing along z.

    With ``t = (z - z0) / c``: the cross-section's semi-axes are ``(a, b) * s(t)``
    with ``s = sqrt(1 - t^2)`` (``ellipsoid``) or ``s = 1`` inside ``|t| <= 1``
    (``cylinder``), times ``1 + taper * t``; its centre drifts by
    ``(dx1 t + dx2 t^2, dy1 t + dy2 t^2)`` mm; it is turned by ``angle`` (radians)
    in-plane. ``lobulation`` perturbs the outline by the "outline" field (relative).
    All lengths in mm, in the subject's anatomical frame.
    """

    x: float
    y: float
    z: float
    a: float
    b: float
    c: float
    angle: float = 0.0
    power: float = 2.0
    taper: float = 0.0
    dx1: float = 0.0
    dx2: float = 0.0
    dy1: float = 0.0
    dy2: float = 0.0
    lobulation: float = 0.0
    ellipsoid: bool = True

    @property
    def z_invariant(self) -> bool:
        """True when the cross-section is the same at every z inside the solid."""
        drift = self.dx1 or self.dx2 or self.dy1 or self.dy2
        return not (self.ellipsoid or self.taper or drift or self.lobulation)

    def centre(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        t = (z - self.z) / self.c
        return self.x + self.dx1 * t + self.dx2 * t * t, self.y + self.dy1 * t + self.dy2 * t * t

    def half_extent(self, rotation: float) -> tuple[float, float]:
        """Upper bounds of the in-plane half-widths along image x and y (mm) when the
        anatomy is turned by ``rotation`` (radians)."""
        grow = (1.0 + abs(self.taper)) * (1.0 + 3 * self.lobulation)
        a, b = self.a * grow, self.b * grow
        phi = self.angle + rotation
        cos, sin = abs(math.cos(phi)), abs(math.sin(phi))
        if self.power == 2.0:
            return math.hypot(a * cos, b * sin), math.hypot(a * sin, b * cos)
        return a * cos + b * sin, a * sin + b * cos

    def distance(
        self, xx: np.ndarray, yy: np.ndarray, z: np.ndarray, outline: np.ndarray | None
    ) -> np.ndarray:
        """Approximate signed distance (mm, negative inside), (len(z), H', W').

        ``xx``, ``yy``: (H', W') anatomical coordinates of the pixels; ``z``: (Z',);
        ``outline``: the outline field on the same (Z', H', W') box (for lobulation).
        """
        t = (z - self.z) / self.c
        s = np.sqrt(np.clip(1.0 - t * t, 0.0, None)) if self.ellipsoid else np.ones_like(t)
        s = np.maximum(s * (1.0 + self.taper * t), 1e-3).astype(F32)[:, None, None]
        cx, cy = self.centre(z)
        u = xx[None] - cx.astype(F32)[:, None, None]
        v = yy[None] - cy.astype(F32)[:, None, None]
        if self.angle:
            cos, sin = F32(math.cos(self.angle)), F32(math.sin(self.angle))
            u, v = cos * u + sin * v, cos * v - sin * u
        ua = np.abs(u) / (F32(self.a) * s)
        vb = np.abs(v) / (F32(self.b) * s)
        p = self.power
        if p == 2.0:
            r = np.sqrt(ua * ua + vb * vb)
            # |grad r| = sqrt((u/A^2)^2 + (v/B^2)^2) / r; first-order distance (r - 1) / |grad r|
            gu, gv = ua / (F32(self.a) * s), vb / (F32(self.b) * s)
            grad = np.sqrt(gu * gu + gv * gv) / np.maximum(r, F32(1e-6))
        else:
            up, vp = ua**p, vb**p
            r = (up + vp) ** (1.0 / p)
            gu = up / np.maximum(ua, F32(1e-6)) / (F32(self.a) * s)
            gv = vp / np.maximum(vb, F32(1e-6)) / (F32(self.b) * s)
            grad = np.sqrt(gu * gu + gv * gv) * np.maximum(r, F32(1e-6)) ** (1.0 - p)
        if self.lobulation and outline is not None:
            r = r * (1.0 - F32(self.lobulation) * outline)
        d = (r - 1.0) / np.maximum(grad, F32(1e-6))
        # Beyond the ends along z the solid is absent whatever the in-plane distance.
        ends = ((np.abs(t) - 1.0) * self.c).astype(F32)[:, None, None]
        return np.maximum(d, ends)


@dataclass(frozen=True)
class Ridge:
    """Septa or walls in a tissue: its signal darkened by the fraction ``depth`` along the
    level set ``S = level`` of the septa field, over ``|S - level| ~ width``."""

    depth: float
    level: float = 0.0
    width: float = 0.2


@dataclass(frozen=True)
class Tissue:
    """Relative T2 signal of a tissue and its texture.

    value = mean * (1 + fine * F + medium * M + coarse * C) with the unit-variance
    fields of :data:`FIELD_SPECS`, darkened along a ``ridge`` of the septa field S
    (septa, vesicle walls), and taken to ``void`` signal where ``C > void_level`` (gas).
    """

    mean: float
    fine: float = 0.0
    medium: float = 0.0
    coarse: float = 0.0
    ridge: Ridge | None = None
    void_level: float | None = None
    void: float = 0.02


@dataclass(frozen=True)
class Layer:
    """A shape painted with a tissue, optionally with a wall of another tissue.

    ``tissue=None`` paints the wall only (a ring: levator ani, skin); ``invert``
    paints outside the shape (air around the body). ``wall`` is in mm.
    """

    name: str
    blob: Blob
    tissue: Tissue | None
    wall: float = 0.0
    wall_tissue: Tissue | None = None
    invert: bool = False


@dataclass(frozen=True)
class Subject:
    """One synthetic patient: anatomy and acquisition-side nuisances.

    ``offset`` (mm) and ``rotation`` (radians) place the anatomy in the field of
    view; ``noise`` is the Rician noise level relative to fat signal; ``bias`` the
    strength of the smooth coil sensitivity; ``motion_mm`` the standard deviation
    of the in-plane shift between consecutive slices (0: none).
    """

    background: Tissue
    layers: tuple[Layer, ...]
    offset: tuple[float, float]
    rotation: float
    z_centre: float  # centre of the slice stack relative to the prostate centre, mm
    noise: float
    bias: float
    motion_mm: float
    fov_mm: float


# --------------------------------------------------------------------------- anatomy

AIR = Tissue(0.0)
FAT = Tissue(0.72, fine=0.06, medium=0.12, coarse=0.04, ridge=Ridge(0.3, level=1.3, width=0.25))
MUSCLE = Tissue(0.2, fine=0.1, medium=0.2, coarse=0.05)
CORTEX = Tissue(0.05, fine=0.1)
MARROW = Tissue(0.5, fine=0.1, medium=0.25, coarse=0.05, ridge=Ridge(0.3, level=-1.0))
WALL = Tissue(0.18, fine=0.1, medium=0.1)
URINE = Tissue(1.0, fine=0.01)


class _Draw:
    """Uniform draws from one random stream, with the shorthand the anatomy uses."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def __call__(self, lo: float, hi: float) -> float:
        return float(self.rng.uniform(lo, hi))

    def chance(self, p: float) -> bool:
        return bool(self.rng.random() < p)

    def tissue(self, base: Tissue, spread: float = 0.08) -> Tissue:
        """``base`` with its mean scaled by a patient-specific factor 1 +- spread."""
        return replace(base, mean=base.mean * self(1 - spread, 1 + spread))


@dataclass(frozen=True)
class _Frame:
    """Key dimensions (mm) that place the organs relative to each other."""

    pa: float  # prostate half-width
    pb: float  # prostate half-depth
    pc: float  # prostate half-length
    tz_frac: float  # transition zone size relative to the gland (BPH)
    rect_r: float  # rectal radius
    rect_y: float  # rectal centre, posterior of the prostate centre
    body: Blob  # outline of the body


def _frame(u: _Draw) -> _Frame:
    pa, pb, pc = u(19, 27), u(14, 20), u(17, 24)
    rect_r = u(11, 17)
    body = Blob(
        x=u(-8, 8),
        y=u(-8, 12),
        z=0,
        a=u(150, 195),
        b=u(95, 130),
        c=400,
        power=2.4,
        ellipsoid=False,
    )
    return _Frame(pa, pb, pc, u(0.45, 0.78), rect_r, pb + rect_r + u(4, 9), body)


def _body(u: _Draw, f: _Frame) -> list[Layer]:
    skin = Tissue(0.35, fine=0.1)
    return [Layer("outside", f.body, AIR, invert=True), Layer("skin", f.body, None, 2.0, skin)]


def _vessels(u: _Draw, f: _Frame) -> list[Layer]:
    """Small meandering tubes in the fat, flow voids or slow bright veins, most around the
    gland (venous plexus, neurovascular bundles); oblique courses move them across the
    slice by up to about a millimetre per slice. Iliac vessels in the upper slices."""
    layers = []
    for _ in range(int(u.rng.integers(30, 46))):
        ang = u(0, 2 * math.pi)
        dist = u(f.pa + 4, f.pa + 35) if u.chance(0.6) else u(f.pa + 35, 110)
        r, c = u(0.6, 2.2), u(40, 70)
        signal = u(0.75, 0.95) if u.chance(0.5) else u(0.05, 0.15)
        tube = Blob(
            x=dist * math.cos(ang),
            y=dist * math.sin(ang) * 0.8,
            z=u(-10, 10),
            a=r,
            b=r * u(1.0, 1.8),
            c=c,
            angle=u(0, math.pi),
            dx1=c * u(-0.7, 0.7),
            dx2=c * u(-0.25, 0.25),
            dy1=c * u(-0.7, 0.7),
            dy2=c * u(-0.25, 0.25),
            ellipsoid=False,
        )
        layers.append(Layer("vessel", tube, Tissue(signal, fine=0.05)))
    for sx in (-1.0, 1.0):
        for dy, signal in ((u(-28, -18), u(0.05, 0.12)), (u(-12, -4), u(0.6, 0.85))):
            r = u(3.5, 6.0)
            tube = Blob(
                x=sx * u(f.pa + 38, f.pa + 48),
                y=dy,
                z=u(30, 45),
                a=r,
                b=r * u(1.0, 1.4),
                c=u(25, 35),
                dx1=sx * u(-6, 2),
                dy1=u(-4, 4),
                ellipsoid=False,
            )
            layers.append(Layer("iliac vessel", tube, Tissue(signal, fine=0.05), 0.8, WALL))
    return layers


def _wall_column(**shape: Any) -> Blob:
    """A muscle or bone of the pelvic wall: a cylinder 160 mm long, through every stack."""
    return Blob(c=80, ellipsoid=False, **shape)


def _muscles(u: _Draw, f: _Frame) -> list[Layer]:
    """Rectus abdominis (anterior, upper slices), gluteus maximus (posterolateral),
    obturator internus (pelvic sidewall), levator ani (a funnel around prostate and
    rectum, narrowing toward the apex)."""
    muscle = u.tissue(MUSCLE)
    front = f.body.y - f.body.b
    layers = []
    for sx in (-1.0, 1.0):
        rectus = Blob(
            x=sx * u(22, 32),
            y=front + u(14, 22),
            z=u(25, 45),
            a=u(24, 34),
            b=u(5, 8),
            c=u(30, 45),
            angle=sx * u(0.0, 0.25),
            ellipsoid=False,
            lobulation=0.106,
        )
        gluteus = _wall_column(
            x=sx * u(62, 80),
            y=u(70, 90),
            z=0,
            a=u(40, 55),
            b=u(30, 42),
            angle=sx * u(0.3, 0.7),
            lobulation=0.128,
            dy1=u(-10, 10),
        )
        obturator = _wall_column(
            x=sx * (f.pa + u(20, 26)),
            y=u(-8, 4),
            z=0,
            a=u(11, 16),
            b=u(30, 40),
            angle=sx * u(-0.15, 0.2),
            lobulation=0.128,
            dx1=sx * u(-4, 4),
            dx2=sx * u(-6, 0),
        )
        layers += [
            Layer("rectus abdominis", rectus, muscle),
            Layer("gluteus maximus", gluteus, muscle),
            Layer("obturator internus", obturator, muscle),
        ]
    top, back = f.pc * u(0.0, 0.4), f.rect_y + f.rect_r
    sling = Blob(
        x=0,
        y=(back - f.pb) / 2,
        z=top - 40,
        a=f.pa + u(6, 11),
        b=(back + f.pb) / 2 + u(4, 8),
        c=40,
        taper=u(0.25, 0.4),
        ellipsoid=False,
        lobulation=0.106,
        dy1=u(-3, 3),
    )
    layers.append(Layer("levator ani", sling, None, u(3, 5), muscle))
    return layers


def _bones(u: _Draw, f: _Frame) -> list[Layer]:
    """Sidewall (ischium / acetabulum), femoral heads, pubic bodies and the symphysis."""
    marrow = u.tissue(MARROW)
    layers = []
    for sx in (-1.0, 1.0):
        wall_x = sx * (f.pa + u(42, 50))
        ischium = _wall_column(
            x=wall_x,
            y=u(-5, 10),
            z=-10,
            a=u(10, 16),
            b=u(30, 42),
            angle=sx * u(-0.1, 0.2),
            lobulation=0.106,
            dx2=sx * u(-10, 0),
            dy1=u(-8, 8),
        )
        head_r = u(21, 26)
        head = Blob(
            x=wall_x + sx * (head_r + u(6, 14)),
            y=u(-15, 0),
            z=u(15, 30),
            a=head_r,
            b=head_r,
            c=head_r,
        )
        layers += [
            Layer("ischium", ischium, marrow, 1.6, CORTEX),
            Layer("femoral head", head, marrow, 1.8, CORTEX),
        ]
    pub_y, pub_z = -(f.pb + u(14, 24)), -f.pc * u(0.1, 0.5)
    for sx in (-1.0, 1.0):
        pubis = Blob(
            x=sx * u(13, 17),
            y=pub_y + u(-2, 2),
            z=pub_z,
            a=u(14, 19),
            b=u(7, 10),
            c=u(18, 26),
            angle=-sx * u(0.25, 0.6),
            lobulation=0.085,
            power=2.3,
            dx1=sx * u(0, 8),
            dy1=u(-4, 4),
        )
        layers.append(Layer("pubic bone", pubis, marrow, 1.8, CORTEX))
    joint = Blob(x=0, y=pub_y, z=pub_z, a=u(1.0, 2.0), b=u(6, 9), c=u(16, 22))
    layers.append(Layer("symphysis", joint, Tissue(0.22, fine=0.1)))
    return layers


def _bladder_vesicles(u: _Draw, f: _Frame) -> list[Layer]:
    """The bladder, an ellipsoid resting on the prostate base whose cross-section grows
    fast upward; the seminal vesicles, a lobulated bow-tie of fluid with convoluted walls."""
    bl_c = u(28, 45)
    bladder = Blob(
        x=u(-5, 5),
        y=-f.pb * u(0.1, 0.5) - u(2, 10),
        z=f.pc * 0.85 + bl_c - u(2, 6),
        a=u(35, 55),
        b=u(25, 40),
        c=bl_c,
        lobulation=0.064,
        power=2.2,
        dy1=u(-6, 2),
        dx1=u(-5, 5),
    )
    layers = [Layer("bladder", bladder, u.tissue(URINE, 0.03), u(2.0, 3.5), WALL)]
    for sx in (-1.0, 1.0):
        vesicle = Blob(
            x=sx * u(12, 18),
            y=f.pb * u(0.3, 0.6) + u(2, 6),
            z=f.pc * u(0.75, 0.95) + u(6, 10),
            a=u(15, 24),
            b=u(4.5, 7.5),
            c=u(9, 14),
            angle=sx * u(-0.5, -0.15),
            lobulation=0.255,
            dx1=sx * u(0, 5),
            dy1=u(-3, 3),
            power=2.2,
        )
        fluid = Tissue(
            u(0.75, 0.9), fine=0.05, medium=0.08, ridge=Ridge(0.75, level=u(-0.3, 0.3), width=0.35)
        )
        layers.append(Layer("seminal vesicle", vesicle, fluid, 0.8, WALL))
    return layers


def _rectum(u: _Draw, f: _Frame) -> list[Layer]:
    """A tube bending posteriorly upward: dark muscular wall, brighter mucosa, a lumen of
    faeces and gas."""
    rect = Blob(
        x=u(-6, 6),
        y=f.rect_y,
        z=0,
        a=f.rect_r * u(1.0, 1.35),
        b=f.rect_r,
        c=70,
        ellipsoid=False,
        dy1=u(2, 10),
        dy2=u(2, 10),
        dx1=u(-6, 6),
        lobulation=0.17,
        power=2.2,
    )
    mucosa = Tissue(0.38, fine=0.12, medium=0.15)
    content = Tissue(u(0.25, 0.45), fine=0.2, medium=0.25, coarse=0.1, void_level=u(0.0, 1.2))
    lumen = replace(rect, a=rect.a - 4.5, b=rect.b - 4.5)
    return [
        Layer("rectal wall", rect, mucosa, u(2, 3), u.tissue(MUSCLE)),
        Layer("rectal lumen", lumen, content),
    ]


def _prostate(u: _Draw, f: _Frame) -> list[Layer]:
    """Capsule, bright peripheral zone, dark central zone and anterior stroma, transition
    zone with nodules, urethra; an occasional dark lesion in the peripheral zone."""
    pa, pb, pc = f.pa, f.pb, f.pc
    capsule = Tissue(0.15, fine=0.1)
    gland = Blob(
        x=0,
        y=0,
        z=0,
        a=pa,
        b=pb,
        c=pc,
        taper=u(0.1, 0.3),
        power=u(2.0, 2.6),
        dy1=u(-4, 2),
        dy2=u(-3, 3),
        dx1=u(-2, 2),
        lobulation=0.106,
    )
    pz = Tissue(
        u(0.55, 0.7), fine=0.08, medium=0.15, coarse=0.08, ridge=Ridge(0.25, level=u(-1.2, -0.6))
    )
    layers = [Layer("peripheral zone", gland, pz, u(0.7, 1.1), capsule)]
    if u.chance(0.5):
        ang, r = u(0.25 * math.pi, 0.75 * math.pi), u(3, 7)
        lesion = Blob(
            x=pa * 0.55 * math.cos(ang) * (1 if u.chance(0.5) else -1),
            y=pb * 0.55 * math.sin(ang),
            z=u(-0.5, 0.3) * pc,
            a=r,
            b=r * u(0.6, 1.0),
            c=r * u(0.8, 1.4),
            lobulation=0.319,
            angle=u(0, math.pi),
        )
        layers.append(Layer("lesion", lesion, Tissue(u(0.22, 0.32), fine=0.08, medium=0.08)))
    central = Blob(x=0, y=pb * 0.25, z=pc * 0.55, a=pa * 0.4, b=pb * 0.35, c=pc * 0.45)
    stroma = Blob(x=0, y=-pb * 0.75, z=pc * 0.1, a=pa * 0.65, b=u(3, 5), c=pc * 0.85)
    layers += [
        Layer("central zone", central, Tissue(u(0.24, 0.32), fine=0.08, medium=0.12)),
        Layer("anterior stroma", stroma, Tissue(0.2, fine=0.08, medium=0.1)),
    ]
    tz = Blob(
        x=u(-2, 2),
        y=-pb * u(0.15, 0.3),
        z=pc * u(0.1, 0.25),
        a=pa * f.tz_frac,
        b=pb * f.tz_frac * 0.85,
        c=pc * u(0.6, 0.8),
        lobulation=0.17,
        dy2=u(-2, 2),
    )
    tz_tissue = Tissue(u(0.3, 0.4), fine=0.12, medium=0.3, coarse=0.1)
    layers.append(Layer("transition zone", tz, tz_tissue, 0.8, Tissue(0.2, fine=0.1)))
    for _ in range(int(u.rng.integers(3, 10))):
        r = u(2.0, 6.5) * f.tz_frac / 0.6
        nodule = Blob(
            x=tz.x + tz.a * u(-0.6, 0.6),
            y=tz.y + tz.b * u(-0.6, 0.6),
            z=tz.z + tz.c * u(-0.6, 0.6),
            a=r,
            b=r * u(0.7, 1.0),
            c=r * u(0.8, 1.3),
            angle=u(0, math.pi),
            lobulation=0.213,
        )
        inside = Tissue(u(0.2, 0.6), fine=0.1, medium=0.2)
        layers.append(Layer("nodule", nodule, inside, u(0.5, 0.9), Tissue(0.16, fine=0.1)))
    ur = u(1.6, 2.4)
    urethra = Blob(
        x=tz.x,
        y=tz.y + u(-2, 2),
        z=-pc * 0.1,
        a=ur,
        b=ur * u(0.8, 1.2),
        c=pc * 1.05,
        ellipsoid=False,
        dy1=u(-3, 1),
        dy2=u(-6, -2),
        dx1=u(-1.5, 1.5),
    )
    layers.append(Layer("urethra", urethra, Tissue(u(0.4, 0.6), fine=0.1), 1.0, capsule))
    return layers


# Regions in painting order; each draws from its own random stream, so changing one
# region's model leaves the others' draws unchanged.
_REGIONS = (_body, _vessels, _muscles, _bones, _bladder_vesicles, _rectum, _prostate)


def sample_subject(rng: np.random.Generator, fov_range: tuple[float, float]) -> Subject:
    """Draw one patient's anatomy and acquisition nuisances from ``rng``.

    ``fov_range``: (min, max) of the square field of view, mm.
    """
    seeds = rng.integers(0, 2**63 - 1, size=len(_REGIONS) + 2)
    streams = [_Draw(np.random.default_rng(int(seed))) for seed in seeds]
    frame = _frame(streams[0])
    layers = [layer for region, u in zip(_REGIONS, streams[1:]) for layer in region(u, frame)]
    u = streams[-1]
    return Subject(
        background=u.tissue(FAT),
        layers=tuple(layers),
        offset=(u(-8, 8), u(-10, 6)),
        rotation=u(-0.12, 0.12),
        z_centre=u(0, 8),
        noise=u(0.022, 0.031),
        bias=u(0.12, 0.25),
        motion_mm=u(0.15, 0.35) if u.chance(0.25) else 0.0,
        fov_mm=u(*fov_range),
    )


# --------------------------------------------------------------------------- imaging


@dataclass(frozen=True)
class Acquisition:
    """Sampling grid of one series: square matrix, slice spacing/thickness (mm)."""

    matrix: int  # pixels per side
    n_slices: int
    fov_mm: float  # side of the square field of view
    spacing_mm: float = 1.5
    thickness_mm: float = 1.5
    z_centre: float = 0.0  # centre of the stack along the anatomy's z
    profile_samples: int = 3  # points that integrate the slice profile

    @property
    def pixel_mm(self) -> float:
        return self.fov_mm / self.matrix

    def in_plane(self) -> np.ndarray:
        """Pixel-centre coordinates along one in-plane axis, (matrix,) mm, centred on 0."""
        return (np.arange(self.matrix) - (self.matrix - 1) / 2.0) * self.pixel_mm

    def slice_z(self) -> np.ndarray:
        """Slice-centre positions (n_slices,) mm, ascending."""
        return self.z_centre + (np.arange(self.n_slices) - (self.n_slices - 1) / 2.0) * (
            self.spacing_mm
        )

    def profile_offsets(self) -> np.ndarray:
        """Sample offsets (mm) that integrate a box slice profile of the slice thickness."""
        n = self.profile_samples
        return ((np.arange(n) + 0.5) / n - 0.5) * self.thickness_mm


def _ramp(d: np.ndarray, width: float) -> np.ndarray:
    """Soft occupancy in [0, 1] from a signed distance: 1 inside, 0 outside, linear edge."""
    return np.clip(F32(0.5) - d * F32(1.0 / width), 0.0, 1.0)


class _Fields:
    """The texture fields of one subject, sampled chunk by chunk along z."""

    def __init__(
        self,
        rng: np.random.Generator,
        xs: np.ndarray,
        ys: np.ndarray,
        z_range: tuple[float, float],
        psf_mm: float,
    ) -> None:
        self.fields = {
            name: LatticeField(rng, spec, xs, ys, z_range, psf_mm)
            for name, spec in FIELD_SPECS.items()
        }

    def sample(self, zs: np.ndarray) -> dict[str, np.ndarray]:
        return {name: f.sample(zs) for name, f in self.fields.items()}


def _tissue_value(
    tissue: Tissue, f: dict[str, np.ndarray], box: tuple[slice, slice, slice]
) -> np.ndarray | float:
    """Signal of ``tissue`` on the (Z', H', W') ``box`` of the chunk's fields."""
    if not (tissue.fine or tissue.medium or tissue.coarse or tissue.ridge or tissue.void_level):
        return tissue.mean
    rel = np.ones(f["fine"][box].shape, dtype=F32)
    if tissue.fine:
        rel += F32(tissue.fine) * f["fine"][box]
    if tissue.medium:
        rel += F32(tissue.medium) * f["medium"][box]
    if tissue.coarse:
        rel += F32(tissue.coarse) * f["coarse"][box]
    ridge = tissue.ridge
    if ridge is not None:
        q = (f["septa"][box] - F32(ridge.level)) * F32(1.0 / ridge.width)
        rel *= F32(1.0) - F32(ridge.depth) * np.exp(-q * q)
    value = rel * F32(tissue.mean)
    if tissue.void_level is not None:
        gas = np.clip((f["coarse"][box] - F32(tissue.void_level)) * F32(4.0), 0.0, 1.0)
        value += gas * (F32(tissue.void) - value)
    return value


def _box(
    blob: Blob, subject: Subject, xs: np.ndarray, ys: np.ndarray, zs: np.ndarray, margin: float
) -> tuple[slice, slice, slice] | None:
    """Index box of the chunk (z, y, x) that can contain ``blob``; None if empty."""
    inside = np.abs(zs - blob.z) <= blob.c + margin
    if not inside.any():
        return None
    iz = np.flatnonzero(inside)
    zb = np.linspace(max(zs[iz[0]], blob.z - blob.c), min(zs[iz[-1]], blob.z + blob.c), 9)
    cx, cy = blob.centre(zb)
    cos, sin = math.cos(subject.rotation), math.sin(subject.rotation)
    ix = subject.offset[0] + cos * cx - sin * cy
    iy = subject.offset[1] + sin * cx + cos * cy
    hx, hy = blob.half_extent(subject.rotation)
    x0, x1 = np.searchsorted(xs, [ix.min() - hx - margin, ix.max() + hx + margin])
    y0, y1 = np.searchsorted(ys, [iy.min() - hy - margin, iy.max() + hy + margin])
    if x0 >= x1 or y0 >= y1:
        return None
    return slice(int(iz[0]), int(iz[-1]) + 1), slice(int(y0), int(y1)), slice(int(x0), int(x1))


def _paint(img: np.ndarray, box: tuple[slice, ...], occ: np.ndarray, value: object) -> None:
    view = img[box]
    view += occ * (value - view)  # type: ignore[operator]


def render_chunk(
    subject: Subject,
    xs: np.ndarray,
    ys: np.ndarray,
    zs: np.ndarray,
    fields: dict[str, np.ndarray],
    edge_mm: float,
) -> np.ndarray:
    """Noise-free signal at the points ``zs`` x ``ys`` x ``xs``: (len(zs), H, W) float32."""
    cos, sin = math.cos(subject.rotation), math.sin(subject.rotation)
    gx = xs[None, :] - subject.offset[0]
    gy = ys[:, None] - subject.offset[1]
    ax = (cos * gx + sin * gy).astype(F32)  # anatomical frame
    ay = (cos * gy - sin * gx).astype(F32)
    full = (slice(0, len(zs)), slice(0, len(ys)), slice(0, len(xs)))
    img = np.empty((len(zs), len(ys), len(xs)), dtype=F32)
    img[...] = _tissue_value(subject.background, fields, full)
    # Layers sharing a blob and box (the body's outside and skin) share its distance.
    distances: dict[tuple[int, ...], np.ndarray] = {}
    for layer in subject.layers:
        blob = layer.blob
        box = full if layer.invert else _box(blob, subject, xs, ys, zs, 2 * edge_mm)
        if box is None:
            continue
        key = (id(blob), *(i for sl in box for i in (sl.start, sl.stop)))
        d = distances.get(key)
        if d is None:
            zb = zs[box[0]]
            if blob.z_invariant and bool(np.all(np.abs(zb - blob.z) < blob.c)):
                d = blob.distance(ax[box[1:]], ay[box[1:]], zb[:1], None)  # (1, H', W')
            else:
                d = blob.distance(ax[box[1:]], ay[box[1:]], zb, fields["outline"][box])
            distances[key] = d
        if layer.invert:
            _paint(
                img,
                box,
                np.clip(F32(0.5) + d * F32(1.0 / edge_mm), 0.0, 1.0),
                _tissue_value(layer.tissue or AIR, fields, box),
            )
            continue
        outer = _ramp(d, edge_mm)
        if layer.wall > 0 and layer.wall_tissue is not None:
            inner = _ramp(d + F32(layer.wall), edge_mm)
            wall_occ = outer if layer.tissue is not None else outer - inner
            _paint(img, box, wall_occ, _tissue_value(layer.wall_tissue, fields, box))
            if layer.tissue is not None:
                _paint(img, box, inner, _tissue_value(layer.tissue, fields, box))
        elif layer.tissue is not None:
            _paint(img, box, outer, _tissue_value(layer.tissue, fields, box))
    return img


def motion_shifts(rng: np.random.Generator, n_slices: int, motion_mm: float) -> np.ndarray:
    """In-plane shifts (n_slices, 2) mm (rows, columns): a random walk, zero mean."""
    if motion_mm <= 0:
        return np.zeros((n_slices, 2))
    walk = np.cumsum(rng.normal(0.0, motion_mm, size=(n_slices, 2)), axis=0)
    return walk - walk.mean(axis=0)


def acquire(
    subject: Subject,
    acq: Acquisition,
    rng: np.random.Generator,
    *,
    chunk_voxels: int = 2_500_000,
) -> np.ndarray:
    """Image ``subject`` with ``acq``: float32 (n_slices, matrix, matrix), values >= 0.

    Each slice is the mean of the anatomy over its slice profile; then motion
    (per-slice shifts), bias (smooth multiplicative field) and Rician noise are
    applied. ``rng`` drives textures, motion and noise (the anatomy is fixed).
    """
    xs = acq.in_plane()
    ys = acq.in_plane()
    zc = acq.slice_z()
    offsets = acq.profile_offsets()
    z_range = (float(zc[0] + offsets[0]), float(zc[-1] + offsets[-1]))
    psf = 0.5 * acq.pixel_mm
    fields = _Fields(rng, xs, ys, z_range, psf)
    edge = max(acq.pixel_mm, 0.4)
    out = np.empty((acq.n_slices, acq.matrix, acq.matrix), dtype=F32)
    weight = F32(1.0 / len(offsets))
    # Chunks of slices bound the memory of the temporaries; bigger chunks, fewer calls.
    chunk_slices = max(1, chunk_voxels // (acq.matrix * acq.matrix * len(offsets)))
    for start in range(0, acq.n_slices, chunk_slices):
        zs_c = zc[start : start + chunk_slices]
        fine_z = (zs_c[:, None] + offsets[None, :]).ravel()
        sampled = fields.sample(fine_z)
        img = render_chunk(subject, xs, ys, fine_z, sampled, edge)
        img = img.reshape(len(zs_c), len(offsets), acq.matrix, acq.matrix).sum(axis=1) * weight
        bias = sampled["bias"][:: len(offsets)]
        gy = (ys / (acq.fov_mm / 2))[None, :, None].astype(F32)
        # Surface coils: brighter toward the anterior and posterior body wall.
        img *= np.exp(F32(subject.bias) * (bias + F32(0.8) * gy * gy - F32(0.3)))
        out[start : start + len(zs_c)] = img
    shifts = motion_shifts(rng, acq.n_slices, subject.motion_mm) / acq.pixel_mm
    for s in np.flatnonzero(np.abs(shifts).sum(axis=1) > 1e-3):
        out[s] = ndimage.shift(out[s], shifts[s], order=3, mode="nearest")
    sigma = F32(subject.noise * FAT.mean)
    real = out + sigma * rng.standard_normal(out.shape, dtype=F32)
    imag = sigma * rng.standard_normal(out.shape, dtype=F32)
    return np.sqrt(real * real + imag * imag)


def subject_rngs(seed: int, index: int) -> tuple[np.random.Generator, ...]:
    """Independent generators of patient ``index`` under ``seed``: anatomy, imaging
    (textures, motion, noise), headers, extra series. Each stream is unaffected by
    how much the others draw, so e.g. the anatomy is the same at every matrix."""
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence([seed, index]).spawn(4))


__all__: Sequence[str] = (
    "Acquisition",
    "Blob",
    "FIELD_SPECS",
    "FieldSpec",
    "LatticeField",
    "Layer",
    "Ridge",
    "Subject",
    "Tissue",
    "acquire",
    "motion_shifts",
    "render_chunk",
    "sample_subject",
    "subject_rngs",
)
