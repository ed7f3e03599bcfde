"""Template anatomy of the simulated cohort: tissue maps, regions and atrophy bases.

Everything here is computed once per resolution from nilearn's MNI152 2009 template (no download)
and shared by all subjects: the tissue probability maps, the region label map, one displacement
field per atrophy process (per unit amplitude), its calibration from amplitude to volume loss, the
partial-volume conversion weights, the white-matter hyperintensity (WMH) prior and the bias-field
basis. :mod:`brainage.data.simulate` turns them into subjects; see its docstring for the model.

Regions are defined from template coordinates (nilearn ships no subcortical atlas offline):
MNI-mm ellipsoids intersected with the template's tissue maps, see :data:`REGION_SPECS`.

References
----------
.. [1] Fonov V. et al. (2011). Unbiased average age-appropriate atlases for pediatric studies.
   NeuroImage 54(1), 313-327 (MNI152 2009 template).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass, field

import numpy as np
from nilearn import datasets, image
from scipy import ndimage as ndi

logger = logging.getLogger(__name__)

#: Seed of the fixed WMH texture basis (part of the template anatomy, not of a cohort).
_TEXTURE_SEED = 20240531
#: Largest flow amplitude (mm travelled by the fastest voxel) tabulated per kind of basis.
_T_MAX_MM = {"contract": 8.0, "expand": 12.0}
#: Largest amplitude of the ventricles' reverse flow (smaller ventricles than the template's).
_T_SHRINK_MM = 4.0
#: Number of tabulated amplitudes per basis (including 0).
_N_LEVELS = 9


@dataclass(frozen=True)
class RegionSpec:
    """An anatomical region defined by an MNI ellipsoid intersected with a tissue map.

    Parameters
    ----------
    name : str
        Region name; bilateral regions get ``_left``/``_right`` label names.
    centre_mm : tuple of float
        Ellipsoid centre (x, y, z) in MNI mm; for bilateral regions the right one (x > 0).
    radii_mm : tuple of float
        Semi-axes (x, y, z) in mm.
    tissue : str
        ``"gm"``, ``"csf"`` or ``"cortex"`` (cortical grey matter): the map intersected.
    effects : tuple of str
        Processes acting here, primary first (``"ageing"``, ``"AD"``, ``"PD"``).
    bilateral : bool, default=True
        Mirror the ellipsoid to x < 0.
    pitch_deg : float, default=0
        Rotation of the ellipsoid about the x axis (positive: anterior end lower).
    """

    name: str
    centre_mm: tuple[float, float, float]
    radii_mm: tuple[float, float, float]
    tissue: str
    effects: tuple[str, ...]
    bilateral: bool = True
    pitch_deg: float = 0.0


#: Region definitions (MNI152NLin2009cSym mm); checked on slices of the 1 and 2 mm templates.
REGION_SPECS: tuple[RegionSpec, ...] = (
    RegionSpec("lateral_ventricles", (13.0, -14.0, 12.0), (11.0, 36.0, 18.0), "csf", ("ageing",)),
    RegionSpec("thalamus", (11.0, -18.0, 7.0), (7.0, 11.0, 7.0), "gm", ("ageing",)),
    RegionSpec("hippocampus", (27.0, -23.0, -13.0), (6.0, 17.0, 6.0), "gm", ("AD", "ageing"),
               pitch_deg=28.0),
    RegionSpec("entorhinal", (24.0, -6.0, -31.0), (7.0, 9.0, 6.0), "gm", ("AD", "ageing")),
    RegionSpec("temporoparietal", (50.0, -55.0, 22.0), (20.0, 24.0, 22.0), "cortex",
               ("AD", "ageing")),
    RegionSpec("putamen", (25.0, 2.0, 1.0), (6.0, 14.0, 9.0), "gm", ("PD", "ageing")),
    RegionSpec("caudate", (13.0, 12.0, 10.0), (5.0, 9.0, 9.0), "gm", ("PD", "ageing")),
    RegionSpec("midbrain", (0.0, -25.0, -12.0), (9.0, 9.0, 7.0), "gm", ("PD",), bilateral=False),
)


@dataclass
class Basis:
    """Flow of a stationary velocity field, tabulated at increasing amplitudes.

    ``idx`` indexes the flattened working box (the voxels the flow moves); ``levels`` (K, 3, n)
    holds the displacement phi_t(x) - x in voxels at amplitudes ``amplitudes`` (mm travelled at
    the fastest point); ``response`` the calibrated volume effect at each level: fractional loss
    of the tissue in the region (``kind="contract"``) or volume ratio of CSF (``"expand"``).
    An ``"expand"`` basis is two-sided: negative amplitudes run the flow backwards (ratios
    below 1: a subject's ventricles smaller than the template's).
    """

    name: str
    idx: np.ndarray
    levels: np.ndarray
    amplitudes: np.ndarray
    response: np.ndarray
    kind: str
    pos: np.ndarray | None = None  # index of each voxel among the support points

    def amplitude_for(self, target: float) -> float:
        """Amplitude (mm) realising ``target`` loss/ratio (clipped to the calibrated range)."""
        return float(np.interp(target, self.response, self.amplitudes))

    def displacement(self, amplitude: float) -> np.ndarray:
        """Displacement (3, n) in voxels at ``amplitude``, linear between tabulated levels."""
        pos = float(np.interp(amplitude, self.amplitudes, np.arange(len(self.amplitudes))))
        k = min(int(pos), len(self.amplitudes) - 2)
        w = np.float32(pos - k)
        return (1 - w) * self.levels[k] + w * self.levels[k + 1]


@dataclass
class TemplateAnatomy:
    """Template-space maps shared by all subjects at one resolution (see module docstring)."""

    resolution_mm: float
    affine: np.ndarray
    shape: tuple[int, int, int]
    box: tuple[slice, slice, slice]
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    mask: np.ndarray
    texture: np.ndarray
    tissue_coef: np.ndarray
    labels: np.ndarray
    regions: list[dict]
    support: np.ndarray
    points: np.ndarray
    bases: dict[str, Basis] = field(default_factory=dict)
    conversions: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    wmh_prior: np.ndarray | None = None
    wmh_patches: np.ndarray | None = None
    bias_basis: np.ndarray | None = None
    support_flat: np.ndarray | None = None
    centre: np.ndarray | None = None
    outside_mm: np.ndarray | None = None

    @property
    def box_shape(self) -> tuple[int, int, int]:
        return self.gm.shape

    @functools.cached_property
    def bias_basis_rms(self) -> float:
        """RMS over the support of a field with unit-normal coefficients on ``bias_basis`` (the
        scale of a subject's mask-margin field); computed once per anatomy."""
        return float(np.sqrt((self.bias_basis.astype(np.float64) ** 2).sum(axis=0).mean()))


def grid_for(resolution_mm: float) -> tuple[np.ndarray, tuple[int, int, int]]:
    """Affine and shape of the template grid at ``resolution_mm`` (nilearn's own at 1 and 2 mm).

    Other resolutions use the brain-cropped model grid of that spacing
    (``brainage.imaging.registration.template_grid(resolution_mm, crop_to_brain=True)``: the
    template brain's bounding box widened by 8 mm), so that preprocessing a scan simulated at the
    model's grid copies its voxels instead of interpolating them, and ``brainage predict``
    recognises such scans as template space (tests/data/test_simulate.py checks the grids).
    """
    if resolution_mm == 1:
        return _nilearn_grid(1)
    if resolution_mm == 2:
        return _nilearn_grid(2)
    return _brain_grid(float(resolution_mm))


def _brain_grid(resolution_mm: float,
                margin_mm: float = 8.0) -> tuple[np.ndarray, tuple[int, int, int]]:
    """The brain-cropped model grid: the bounding box of nilearn's 2 mm brain mask widened by
    ``margin_mm``, its voxels centred in it (as the preprocessing's grid)."""
    mask = datasets.load_mni152_brain_mask(resolution=2)
    ijk = np.argwhere(np.asarray(mask.dataobj) > 0)
    xyz = ijk @ mask.affine[:3, :3].T + mask.affine[:3, 3]
    low, high = xyz.min(axis=0) - margin_mm, xyz.max(axis=0) + margin_mm
    shape = np.floor((high - low) / resolution_mm + 1e-6).astype(int) + 1
    affine = np.diag([resolution_mm] * 3 + [1.0])
    affine[:3, 3] = (low + high) / 2 - (shape - 1) / 2 * resolution_mm
    return affine, (int(shape[0]), int(shape[1]), int(shape[2]))


def _nilearn_grid(res: int) -> tuple[np.ndarray, tuple[int, int, int]]:
    img = datasets.load_mni152_template(resolution=res)
    return img.affine.copy(), tuple(img.shape)  # type: ignore[return-value]


def load_template_maps(resolution_mm: float) -> dict[str, np.ndarray]:
    """T1, GM, WM, brain mask and CSF (mask minus GM and WM) on the grid, float32, full size."""
    if resolution_mm in (1, 2):
        res = int(resolution_mm)
        imgs = {"t1": datasets.load_mni152_template(resolution=res),
                "gm": datasets.load_mni152_gm_template(resolution=res),
                "wm": datasets.load_mni152_wm_template(resolution=res),
                "mask": datasets.load_mni152_brain_mask(resolution=res)}
    else:
        # Other grids: smooth the 1 mm maps as the preprocessing's anti-aliasing smooths a 1 mm
        # scan (FWHM sqrt(res^2 - 1) mm), then resample linearly: partial volume at the grid.
        affine, shape = grid_for(resolution_mm)
        fwhm = float(np.sqrt(max(resolution_mm**2 - 1.0, 0.0))) or None
        imgs = {}
        for key, loader in (("t1", datasets.load_mni152_template),
                            ("gm", datasets.load_mni152_gm_template),
                            ("wm", datasets.load_mni152_wm_template),
                            ("mask", datasets.load_mni152_brain_mask)):
            src = loader(resolution=1)
            src = image.smooth_img(src, fwhm) if fwhm else src
            imgs[key] = image.resample_img(src, target_affine=affine, target_shape=shape,
                                           interpolation="linear", force_resample=True,
                                           copy_header=True)
    maps = {k: np.asarray(v.get_fdata(dtype=np.float32)) for k, v in imgs.items()}
    maps["mask"] = (maps["mask"] > 0.5).astype(np.float32)
    maps["gm"] = np.clip(maps["gm"], 0, 1) * maps["mask"]
    maps["wm"] = np.clip(maps["wm"], 0, 1) * maps["mask"]
    total = maps["gm"] + maps["wm"]
    scale = np.where(total > 1, 1 / np.maximum(total, 1e-6), 1).astype(np.float32)
    maps["gm"] *= scale
    maps["wm"] *= scale
    maps["csf"] = np.clip(maps["mask"] - maps["gm"] - maps["wm"], 0, 1)
    maps["t1"] = maps["t1"] / max(float(maps["t1"].max()), 1e-6)
    return maps


def mm_coordinates(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """World (mm) coordinates of every voxel, shape (3, *shape), float32."""
    ijk = np.indices(shape, dtype=np.float32)  # (3, X, Y, Z)
    return (np.tensordot(affine[:3, :3].astype(np.float32), ijk, axes=1)
            + affine[:3, 3].astype(np.float32)[:, None, None, None])


def _ellipsoid(xyz: np.ndarray, spec: RegionSpec, sign: float) -> np.ndarray:
    """Boolean ellipsoid of ``spec`` (mirrored to x < 0 when ``sign`` is -1)."""
    c = np.array(spec.centre_mm, dtype=np.float32) * np.array([sign, 1, 1], dtype=np.float32)
    d = xyz - c[:, None, None, None]
    t = np.deg2rad(spec.pitch_deg)
    # Rotate about x: the ellipsoid's y axis points anterior-inferior by pitch_deg.
    dy = d[1] * np.cos(t) - d[2] * np.sin(t)
    dz = d[1] * np.sin(t) + d[2] * np.cos(t)
    r = spec.radii_mm
    return (d[0] / r[0]) ** 2 + (dy / r[1]) ** 2 + (dz / r[2]) ** 2 <= 1.0


def build_labels(maps: dict[str, np.ndarray], affine: np.ndarray,
                 res: float) -> tuple[np.ndarray, list[dict]]:
    """Integer region labels (full grid, int16) and the region table (see REGION_SPECS)."""
    xyz = mm_coordinates(affine, maps["gm"].shape)
    brain = maps["mask"] > 0
    depth = ndi.distance_transform_edt(brain) * res
    # Cortical GM: GM within 20 mm of the brain surface, without cerebellum and brainstem.
    cerebellum = (xyz[1] < -40) & (xyz[2] < -10)
    brainstem = (np.abs(xyz[0]) < 16) & (xyz[1] > -48) & (xyz[1] < -4) & (xyz[2] < -4)
    cortex = (maps["gm"] > 0.4) & (depth <= 20) & ~cerebellum & ~brainstem
    tissue = {"gm": maps["gm"] > 0.35, "csf": maps["csf"] > 0.35, "cortex": cortex}
    labels = np.zeros(maps["gm"].shape, dtype=np.int16)
    rows: list[dict] = []
    for spec in REGION_SPECS:
        sides = (("left", -1.0), ("right", 1.0)) if spec.bilateral else (("", 1.0),)
        if spec.name == "lateral_ventricles":
            sides = (("", 0.0),)
        for side, sign in sides:
            if spec.name == "lateral_ventricles":
                region = _ellipsoid(xyz, spec, 1.0) | _ellipsoid(xyz, spec, -1.0)
                region &= np.abs(xyz[0]) >= 1.0
            else:
                region = _ellipsoid(xyz, spec, sign)
            region &= tissue[spec.tissue] & (labels == 0)
            rows.append(_add_label(labels, region, spec, side, res, xyz))
    # Cortex and periventricular WM take what the specific regions left.
    extra = (
        ("cortex", cortex & (labels == 0), ("ageing",)),
        ("periventricular_wm", (maps["wm"] > 0.5) & (labels == 0)
         & (ndi.distance_transform_edt(labels != 1) * res <= 10), ("ageing",)),
    )
    for name, region, effects in extra:
        spec = RegionSpec(name, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), "gm", effects, False)
        rows.append(_add_label(labels, region, spec, "", res, xyz))
    return labels, rows


def _add_label(labels: np.ndarray, region: np.ndarray, spec: RegionSpec, side: str,
               res: float, xyz: np.ndarray) -> dict:
    index = int(labels.max()) + 1
    labels[region] = index
    centre = xyz[:, region].mean(axis=1) if region.any() else np.full(3, np.nan)
    return {"index": index, "name": f"{spec.name}_{side}" if side else spec.name,
            "effect": spec.effects[0], "effects": ",".join(spec.effects),
            "group": spec.name, "x_mm": round(float(centre[0]), 1),
            "y_mm": round(float(centre[1]), 1), "z_mm": round(float(centre[2]), 1),
            "volume_ml": round(float(region.sum()) * res**3 / 1000.0, 2)}


def _box(mask: np.ndarray, margin_vox: int) -> tuple[slice, slice, slice]:
    """Bounding box of ``mask`` grown by ``margin_vox`` voxels (clipped to the grid)."""
    nz = np.argwhere(mask > 0)
    lo = np.maximum(nz.min(axis=0) - margin_vox, 0)
    hi = np.minimum(nz.max(axis=0) + 1 + margin_vox, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))  # type: ignore[return-value]


def _texture(maps: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares tissue intensities of the template T1 and its residual texture (/ WM)."""
    inside = maps["mask"] > 0
    design = np.stack([maps[k][inside] for k in ("gm", "wm", "csf")], axis=1)  # (n, 3)
    coef, *_ = np.linalg.lstsq(design, maps["t1"][inside], rcond=None)
    residual = np.zeros_like(maps["t1"])
    residual[inside] = maps["t1"][inside] - design @ coef
    return coef.astype(np.float32), (residual / coef[1]).astype(np.float32)


def _unit_field(region: np.ndarray, sigma_mm: float, sign: float, res: float,
                weight: np.ndarray | None = None) -> np.ndarray:
    """Signed gradient of the smoothed ``region`` in voxels, 1 mm long at its largest.

    ``sign=+1`` points into the region (sampling from inside: the region expands), ``-1`` out
    of it (the region contracts).
    """
    smooth = ndi.gaussian_filter(region.astype(np.float32), sigma_mm / res)
    vec = sign * np.stack(np.gradient(smooth))  # (3, X, Y, Z)
    if weight is not None:
        vec *= weight
    vec /= max(float(np.sqrt((vec**2).sum(axis=0)).max()), 1e-12) * res
    return vec.astype(np.float32)


def _flow_levels(vec: np.ndarray, points: np.ndarray, res: float, t_max_mm: float,
                 n_levels: int) -> np.ndarray:
    """Displacements (K, 3, n) of ``points`` along the flow of ``vec`` at K amplitudes.

    Forward Euler with 0.5 mm steps; the flow of a smooth field is a diffeomorphism, so large
    volume changes do not fold the image (a single scaled field would, beyond small strains).
    """
    n_steps = int(np.ceil(t_max_mm / 0.5))
    step = t_max_mm / n_steps
    save_every = n_steps // (n_levels - 1)
    pos = points.copy()
    levels = [np.zeros_like(points)]
    for i in range(1, n_steps + 1):
        vel = np.stack([ndi.map_coordinates(vec[c], pos, order=1, mode="nearest")
                        for c in range(3)])  # (3, n), voxels per mm
        pos += step * vel * res
        if i % save_every == 0:
            levels.append(pos - points)
    return np.stack(levels).astype(np.float32)


def _response(levels: np.ndarray, points: np.ndarray, tissue: np.ndarray,
              kind: str) -> np.ndarray:
    """Volume response of ``tissue`` sampled at the warped ``points`` for each level."""
    volume0 = float(ndi.map_coordinates(tissue, points, order=1).sum())
    out = []
    for disp in levels:
        vol = float(ndi.map_coordinates(tissue, points + disp, order=1, mode="nearest").sum())
        out.append(1 - vol / volume0 if kind == "contract" else vol / volume0)
    return np.maximum.accumulate(np.asarray(out))


def _region_masks(labels_box: np.ndarray, regions: list[dict]) -> dict[str, np.ndarray]:
    """Boolean mask per region group (left and right together), on the box."""
    groups: dict[str, np.ndarray] = {}
    for row in regions:
        m = labels_box == row["index"]
        groups[row["group"]] = groups.get(row["group"], np.zeros_like(m)) | m
    return groups


def _build_bases(anat: TemplateAnatomy, groups: dict[str, np.ndarray]) -> None:
    """Displacement bases (one per atrophy process) with their calibration tables."""
    res = anat.resolution_mm
    brain = anat.mask > 0
    cortex = groups["cortex"] | groups["temporoparietal"]
    tp_weight = ndi.gaussian_filter(groups["temporoparietal"].astype(np.float32), 8.0 / res)
    tp_weight /= max(float(tp_weight.max()), 1e-12)
    # name: (moving region, sigma mm, sign, weight, tissue measured, ROI, kind)
    specs = {
        "ventricles": (groups["lateral_ventricles"], 4.0, 1.0, None, anat.csf,
                       groups["lateral_ventricles"], "expand"),
        "cortex": (brain, 3.0, -1.0, None, anat.gm, cortex, "contract"),
        "temporoparietal": (brain, 3.0, -1.0, tp_weight, anat.gm, groups["temporoparietal"],
                            "contract"),
    }
    for name in ("thalamus", "hippocampus", "entorhinal", "putamen", "caudate", "midbrain"):
        specs[name] = (groups[name], 3.0, -1.0, None, anat.gm, groups[name], "contract")
    grow_vent = int(np.ceil(10.0 / res))
    for name, (region, sigma, sign, weight, tissue, roi, kind) in specs.items():
        vec = _unit_field(region, sigma, sign, res, weight)
        acting = (np.sqrt((vec**2).sum(axis=0)) * res > 1e-3) & anat.support
        roi = ndi.binary_dilation(roi, iterations=1 if kind == "contract" else grow_vent)
        union = acting | roi
        points = np.stack(np.nonzero(union)).astype(np.float32)  # (3, n) voxel coordinates
        levels = _flow_levels(vec, points, res, _T_MAX_MM[kind], _N_LEVELS)
        amplitudes = np.linspace(0, _T_MAX_MM[kind], _N_LEVELS)
        if kind == "expand":  # the reverse flow: amplitudes -T_SHRINK .. 0 .. T_MAX
            back = _flow_levels(-vec, points, res, _T_SHRINK_MM, _N_LEVELS)
            levels = np.concatenate([back[:0:-1], levels])
            amplitudes = np.concatenate([-np.linspace(0, _T_SHRINK_MM, _N_LEVELS)[:0:-1],
                                         amplitudes])
        in_roi = roi[union]
        response = _response(levels[:, :, in_roi], points[:, in_roi], tissue, kind)
        keep = acting[union]
        anat.bases[name] = Basis(name, np.flatnonzero(acting),
                                 np.ascontiguousarray(levels[:, :, keep]), amplitudes,
                                 response, kind)
        logger.debug("basis %s: %d voxels, response %.3f at %.1f mm", name, keep.sum(),
                     response[-1], _T_MAX_MM[kind])


def _build_conversions(anat: TemplateAnatomy, groups: dict[str, np.ndarray]) -> None:
    """Partial-volume GM-to-CSF weights per process (sparse: flat box index, weight)."""
    for name in ("cortex", "temporoparietal", "thalamus", "hippocampus", "entorhinal",
                 "putamen", "caudate", "midbrain"):
        region = groups[name] | (groups["temporoparietal"] if name == "cortex" else False)
        w = np.clip(ndi.gaussian_filter(region.astype(np.float32), 1.0), 0, 1).ravel()
        idx = np.flatnonzero(w > 0.01)
        anat.conversions[name] = (idx, w[idx].astype(np.float32))


def _build_wmh(anat: TemplateAnatomy, groups: dict[str, np.ndarray]) -> None:
    """Periventricular WMH prior and a fixed basis of smooth patch textures."""
    res = anat.resolution_mm
    dist = ndi.distance_transform_edt(~groups["lateral_ventricles"]) * res
    prior = anat.wm * np.exp(-dist / 8.0) * (anat.wm > 0.3)
    anat.wmh_prior = prior.astype(np.float32)
    rng = np.random.default_rng(_TEXTURE_SEED)
    patches = []
    for _ in range(4):
        p = ndi.gaussian_filter(rng.standard_normal(anat.box_shape).astype(np.float32),
                                3.0 / res)
        patches.append((p - p.mean()) / max(float(p.std()), 1e-12))
    anat.wmh_patches = np.stack(patches).astype(np.float32)  # (4, X, Y, Z)


def _bias_basis(points: np.ndarray, box_shape: tuple[int, int, int]) -> np.ndarray:
    """Second-order polynomial basis (9, n) on normalised box coordinates in [-1, 1]."""
    u = 2 * points / (np.asarray(box_shape, dtype=np.float32)[:, None] - 1) - 1  # (3, n)
    x, y, z = u
    return np.stack([x, y, z, x * x - 1 / 3, y * y - 1 / 3, z * z - 1 / 3, x * y, x * z,
                     y * z]).astype(np.float32)


@functools.lru_cache(maxsize=4)
def build_anatomy(resolution_mm: float, margin_mm: float = 12.0) -> TemplateAnatomy:
    """Template anatomy at ``resolution_mm`` (cached per process).

    Parameters
    ----------
    resolution_mm : float
        Voxel size of the template grid (1 and 2: nilearn's grids; others resampled).
    margin_mm : float, default=12
        Margin around the template brain where subjects' brains may lie.
    """
    res = float(resolution_mm)
    affine, shape = grid_for(res)
    maps = load_template_maps(res)
    labels, regions = build_labels(maps, affine, res)
    margin = int(np.ceil(margin_mm / res))
    box = _box(maps["mask"], margin)
    coef, texture = _texture(maps)
    mask_box = maps["mask"][box]
    support = ndi.distance_transform_edt(mask_box == 0) * res <= margin_mm
    anat = TemplateAnatomy(
        resolution_mm=res, affine=affine, shape=shape, box=box,
        gm=maps["gm"][box].copy(), wm=maps["wm"][box].copy(), csf=maps["csf"][box].copy(),
        mask=mask_box.copy(), texture=texture[box].copy(), tissue_coef=coef, labels=labels,
        regions=regions, support=support,
        points=np.stack(np.nonzero(support)).astype(np.float32))
    groups = _region_masks(labels[box], regions)
    _build_bases(anat, groups)
    _build_conversions(anat, groups)
    _build_wmh(anat, groups)
    anat.bias_basis = _bias_basis(anat.points, anat.box_shape)
    anat.support_flat = np.flatnonzero(support)
    # Signed distance (mm) to the template brain mask's surface, positive outside: a subject's
    # brain mask is the template's at y(x), widened by a margin (a brain extraction's CSF rim).
    anat.outside_mm = (ndi.distance_transform_edt(mask_box == 0)
                       - ndi.distance_transform_edt(mask_box > 0)).astype(np.float32) * res
    anat.centre = np.argwhere(mask_box > 0).mean(axis=0).astype(np.float32)
    lookup = np.full(support.size, -1, dtype=np.int64)
    lookup[np.flatnonzero(support)] = np.arange(anat.points.shape[1])
    for basis in anat.bases.values():
        basis.pos = lookup[basis.idx]
    logger.info("template anatomy at %g mm: grid %s, box %s, %d support voxels", res, shape,
                anat.box_shape, anat.points.shape[1])
    return anat


def effect_strength(anat: TemplateAnatomy, amplitudes: dict[str, float],
                    conversions: dict[str, float], wmh: float = 0.0,
                    shrink: float = 0.0) -> np.ndarray:
    """Map of where and how strongly a process acts, on the full template grid.

    The value is |log det J| of the process's displacement (local volume change) plus the
    fraction of grey matter converted to CSF plus the WMH intensity loss; ``shrink`` is the
    linear factor - 1 of the whole brain's contraction (``3 log(1 + shrink)`` everywhere in the
    brain).
    """
    box_shape = anat.box_shape
    disp = np.zeros((3, int(np.prod(box_shape))), dtype=np.float32)
    for name, amp in amplitudes.items():
        basis = anat.bases[name]
        disp[:, basis.idx] += basis.displacement(amp)
    disp = disp.reshape(3, *box_shape)  # (3, X, Y, Z), voxels
    jac = np.empty((3, 3, *box_shape), dtype=np.float32)
    for i in range(3):
        for j, g in enumerate(np.gradient(disp[i])):
            jac[i, j] = g + (i == j)
    det = np.linalg.det(np.moveaxis(jac, (0, 1), (-2, -1)))
    strength = np.abs(np.log(np.clip(det, 1e-3, None)) + 3 * np.log1p(shrink))
    flat = strength.reshape(-1)
    for name, frac in conversions.items():
        idx, w = anat.conversions[name]
        flat[idx] += frac * w * anat.gm.reshape(-1)[idx]
    if wmh:
        strength += wmh * anat.wmh_prior
    strength *= anat.mask
    out = np.zeros(anat.shape, dtype=np.float32)
    out[anat.box] = strength
    return out
