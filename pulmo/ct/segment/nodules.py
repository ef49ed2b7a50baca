"""Round solid focal lesions (nodules and masses): their own finding, not pneumonia.

A lesion model trained on pneumonia paints a lung nodule as ground glass plus consolidation
(lidc-idri-0001: its 25 mm spiculated nodule in the left lower lobe, 7.7 mL, was counted as
pneumonia). Pneumonia is patchy, mostly ground glass, subpleural and multifocal; a nodule is
one compact, mostly solid opacity surrounded by lung. A connected lesion piece is reported as a
nodule / focal opacity when (all of):

* it is solid: at least ``min_solid`` of its voxels are denser than ``solid_hu`` (-300 HU,
  above the ground-glass band);
* it has the size of a nodule or mass: equivalent spherical diameter ``min_diameter_mm`` to
  ``max_diameter_mm``;
* it is compact in 3D: the square root of the ratio of its largest to its smallest principal
  variance is at most ``max_elongation`` (a band of consolidation along the pleura is long or
  flat; the lidc-idri-0001 nodule has 1.5), and its height is comparable to its width;
* it lies in the lung: at most ``max_wall_contact`` of its boundary is outside the lung mask
  (juxtapleural nodules touch the pleura on one side; subpleural consolidation lies along it).

It needs a volume (at least ``min_slices`` slices): on a single slice a round opacity cannot be
told from a cross-section of a patch. Nodules of 30 mm and more are called masses (Fleischner
glossary, Hansell et al. Radiology 2008;246:697-722).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage as ndi

from pulmo.ct.segment._morph import crop_box

FACES = ndi.generate_binary_structure(3, 1)
MASS_MM = 30.0


@dataclass(frozen=True)
class Nodule:
    """One nodule / focal opacity. Positions: LPS mm of its centroid, and (z, y, x) voxel index."""

    number: int
    kind: str                   # "nodule" (< 30 mm) or "mass"
    diameter_mm: float          # equivalent spherical diameter
    long_axis_mm: float         # longest in-plane extent on its largest slice
    volume_ml: float
    mean_hu: float
    solid_fraction: float
    centre_lps_mm: tuple[float, float, float]
    centre_index_zyx: tuple[int, int, int]
    lung: str                   # "right" or "left"
    region: str | None = None   # lobe or zone name, filled in by the caller

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class NoduleParams:
    solid_hu: float = -300.0
    min_solid: float = 0.5
    min_diameter_mm: float = 5.0
    max_diameter_mm: float = 80.0
    max_elongation: float = 2.0
    max_wall_contact: float = 0.35
    min_slices: int = 5


def find_nodules(lungs: np.ndarray, lesions: np.ndarray, hu: np.ndarray, spacing, origin,
                 params: NoduleParams | None = None) -> tuple[list[Nodule], np.ndarray]:
    """The nodules among the lesion pieces, and a uint8 mask numbering them (1, 2, ... in the
    order of the list, largest first). ``lesions`` is not changed: the caller takes the nodules
    out of it. ``spacing`` (z, y, x) mm; ``origin`` LPS (x, y, z) mm of voxel (0, 0, 0)."""
    p = params or NoduleParams()
    mask = np.zeros(lesions.shape, np.uint8)
    if lesions.shape[0] < p.min_slices or not lesions.any():
        return [], mask
    sp = np.asarray(spacing, float)
    vox_ml = float(sp.prod()) / 1000.0
    crop = crop_box(lesions > 0, (1, 1, 1))
    offset = np.array([s.start for s in crop])
    lungs, lesions, hu = lungs[crop], lesions[crop], hu[crop]
    comp, k = ndi.label(lesions > 0, structure=FACES)
    sizes = np.bincount(comp.ravel(), minlength=k + 1)
    min_vox = np.pi / 6 * p.min_diameter_mm ** 3 / float(sp.prod())
    found = []
    for i, box in enumerate(ndi.find_objects(comp), start=1):
        if sizes[i] < min_vox:
            continue
        c = comp[box] == i
        h = hu[box][c]
        solid = float((h > p.solid_hu).mean())
        d = (6.0 * sizes[i] * float(sp.prod()) / np.pi) ** (1 / 3)
        if solid < p.min_solid or not p.min_diameter_mm <= d <= p.max_diameter_mm:
            continue
        pts = np.argwhere(c) * sp
        ev = np.sort(np.linalg.eigvalsh(np.cov(pts.T)))[::-1]
        height = (box[0].stop - box[0].start) * sp[0]
        if np.sqrt(ev[0] / max(ev[2], 1e-9)) > p.max_elongation or not 0.4 * d <= height <= 2.5 * d:
            continue
        grown = tuple(slice(max(0, s.start - 1), s.stop + 1) for s in box)
        cc = comp[grown] == i
        shell = ndi.binary_dilation(cc, structure=FACES) & ~cc
        if (shell & (lungs[grown] == 0)).sum() > p.max_wall_contact * shell.sum():
            continue
        zl = int(np.argmax(c.sum(axis=(1, 2))))
        yy, xx = np.nonzero(c[zl])
        long_axis = _longest_extent(np.stack([yy * sp[1], xx * sp[2]], 1))
        centre = pts.mean(axis=0) / sp + np.array([s.start for s in box]) + offset
        side = np.bincount(lungs[box][c], minlength=3)[1:]
        found.append((int(sizes[i]), i, float(d), long_axis, float(h.mean()), solid, centre,
                      "right" if side[0] >= side[1] else "left", box))
    nodules = []
    sub = mask[crop]
    for n, (size, i, d, long_axis, mean_hu, solid, centre, lung, box) in enumerate(
            sorted(found, key=lambda f: -f[0]), start=1):
        sub[box][comp[box] == i] = n
        zc, yc, xc = centre
        lps = (origin[0] + xc * sp[2], origin[1] + yc * sp[1], origin[2] + zc * sp[0])
        nodules.append(Nodule(n, "mass" if d >= MASS_MM else "nodule", round(d, 1), round(long_axis, 1),
                              round(size * vox_ml, 2), round(mean_hu, 1), round(solid, 2),
                              tuple(round(float(v), 1) for v in lps), (int(round(zc)), int(round(yc)), int(round(xc))),
                              lung))
    return nodules, mask


def _longest_extent(points: np.ndarray) -> float:
    """Largest distance between two of ``points`` (n, 2) mm, on their convex hull."""
    if len(points) < 2:
        return 0.0
    try:
        from scipy.spatial import ConvexHull

        hull = points[ConvexHull(points).vertices]
    except Exception:  # noqa: BLE001 - collinear points: every point is on the "hull"
        hull = points
    diff = hull[:, None, :] - hull[None, :, :]
    return float(np.sqrt((diff ** 2).sum(-1)).max())
