"""Partial volume at the top and bottom surfaces of the lungs, which a lesion model reads as lesion.

**Domes of the diaphragm.**
On an axial slice just above the diaphragm, the top of the liver (right) or of the spleen and
stomach (left) shows as a round, dense island surrounded by lung; on the slice above it the
same dome is blurred into the lung by partial volume (about -450 HU). Density thresholds fill
the island into the lung mask and a lesion model paints the blur as ground glass and
consolidation: on lidc-idri-0001 (no pneumonia) 6.6 mL of "lesion" at slices 53-55 and 64-65.

A dense piece is a dome when (all of):

* it rests on the abdomen: under at least ``min_support`` of its columns (y, x) the voxel just
  below its lowest voxel is tissue (> ``tissue_hu``) that is not lung (column by column, so a
  scan tilted against the body reads the same);
* it is an island in the lung: on at least one of its slices above its lowest, at most
  ``max_wall_contact`` of the ring around it (``ring_mm`` wide) is outside the lung
  (consolidation at the base lies against the chest wall or the posterior costophrenic recess
  on every slice);
* it is small: at most ``dome_max_ml`` (25 mL; the domes of lidc-idri-0001 are 3 to 8 mL).

Such pieces leave the lung mask (tissue denser than ``tissue_hu``) and the lesion mask (the
partial-volume blur above them). A true consolidation island lying on the dome, away from the
chest wall and at most ``dome_max_ml``, would be removed too: a partial-volume dome and
such a lesion cannot be told apart by density; the method says how much was removed.

**Thin surface pieces.** Where a lung's surface runs obliquely to the slices (the apex, the
sloping diaphragm) a 2.5 mm slice averages lung with the tissue above or below it into the
ground-glass range (lidc-idri-0001: 1.2 mL at the right apex, 0.6 mL at the left base). A lesion
piece of at most ``surface_max_ml`` and ``surface_max_height_mm`` that has non-lung tissue just
above its top, or just below its bottom, in at least ``min_support`` of its columns is such a
blur and leaves the lesion mask (not the lung mask).

**The apices.** A lesion piece of at most ``surface_max_ml`` lying wholly in the top
``apex_mm`` of its lung leaves the lesion mask too: the dome of the lung runs obliquely to the
slices over its whole height there, and thin reconstructions smear the chest wall above it into
a ground-glass rim several slices deep (lidc-idri-0001 resampled to 1.25 mm: 1.3 mL at the right
apex). A small apical lesion is missed in exchange; apical pneumonia is rare.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pulmo.ct.segment._morph import crop_box

FACES = ndi.generate_binary_structure(3, 1)


def _support(piece: np.ndarray, tissue: np.ndarray, below: bool) -> float:
    """The fraction of the piece's columns (y, x) whose voxel just below (``below``) or just
    above its lowest or highest voxel is ``tissue``; both arrays cover the same box, one slice
    more than the piece on each side in z."""
    cols = piece.any(axis=0)
    if not cols.any():
        return 0.0
    nz = piece.shape[0]
    if below:
        edge = np.argmax(piece, axis=0) - 1
    else:
        edge = nz - np.argmax(piece[::-1], axis=0)
    ok = cols & (edge >= 0) & (edge < nz)
    yy, xx = np.nonzero(ok)
    return float(tissue[edge[yy, xx], yy, xx].sum()) / float(cols.sum())


def _pieces(mask: np.ndarray, spacing, min_ml: float, max_ml: float):
    """``(component map, [(label, box with one slice of margin in z)])`` of the face-connected
    pieces of ``mask`` between ``min_ml`` and ``max_ml``."""
    comp, k = ndi.label(mask, structure=FACES)
    if k == 0:
        return comp, []
    sizes = np.bincount(comp.ravel(), minlength=k + 1)
    vox = 1000.0 / float(np.prod(spacing))
    out = []
    for i, box in enumerate(ndi.find_objects(comp), start=1):
        if min_ml * vox <= sizes[i] <= max_ml * vox:
            out.append((i, (slice(max(0, box[0].start - 1), box[0].stop + 1),) + box[1:]))
    return comp, out


def _dome_pieces(pieces: np.ndarray, lungs: np.ndarray, hu: np.ndarray, spacing, tissue_hu: float,
                 min_support: float, max_wall_contact: float, ring_mm: float, max_ml: float,
                 inside: np.ndarray | None = None, min_ml: float = 0.02) -> np.ndarray:
    """The pieces of the boolean ``pieces`` that are domes (see the module docstring); ``inside``:
    voxels that count as lung in the island test (a dome cap already taken out of the lung);
    pieces under ``min_ml`` are left alone (specks, which no score counts)."""
    out = np.zeros(pieces.shape, bool)
    comp, found = _pieces(pieces, spacing, min_ml, max_ml)
    if not found:
        return out
    ring_px = max(1, int(round(ring_mm / min(spacing[1], spacing[2]))))
    tissue = (lungs == 0) & (hu > tissue_hu)
    for i, box in found:
        c = comp[box] == i
        if _support(c, tissue[box], below=True) < min_support:
            continue
        grow = tuple(slice(max(0, s.start - ring_px - 1), s.stop + ring_px + 1) for s in box[1:])
        slices = [zl for zl in range(c.shape[0]) if c[zl].any()]
        wall_share = []
        for zl in slices[1:] if len(slices) > 1 else slices:  # above its lowest slice, where it meets the abdomen
            z = box[0].start + zl
            piece = np.zeros(lungs.shape[1:], bool)
            piece[box[1:]] = c[zl]
            sub = piece[grow]
            ring = ndi.binary_dilation(sub, iterations=ring_px) & ~sub
            wall = (lungs[z][grow] == 0) & ring
            if inside is not None:
                wall &= ~inside[z][grow]
            wall_share.append(wall.sum() / max(int(ring.sum()), 1))
        if min(wall_share) > max_wall_contact:
            continue
        out[box] |= c
    return out


def _surface_pieces(lesions: np.ndarray, lungs: np.ndarray, hu: np.ndarray, spacing, tissue_hu: float,
                    min_support: float, max_ml: float, max_height_mm: float) -> np.ndarray:
    """The lesion pieces that are partial volume with the tissue above or below the lung."""
    out = np.zeros(lesions.shape, bool)
    comp, found = _pieces(lesions > 0, spacing, 0.0, max_ml)
    tissue = (lungs == 0) & (hu > tissue_hu)
    for i, box in found:
        c = comp[box] == i
        height = int(c.any(axis=(1, 2)).sum()) * spacing[0]
        if height > max_height_mm:
            continue
        t = tissue[box]
        if max(_support(c, t, below=True), _support(c, t, below=False)) >= min_support:
            out[box] |= c
    return out


def _apical_pieces(lesions: np.ndarray, lungs: np.ndarray, spacing, apex_mm: float, max_ml: float) -> np.ndarray:
    """The lesion pieces of at most ``max_ml`` lying wholly in the top ``apex_mm`` of their lung
    (each lung's own apex: the two often end at different heights)."""
    out = np.zeros(lesions.shape, bool)
    tops = {}
    for side in (1, 2):
        zs = np.flatnonzero((lungs == side).any(axis=(1, 2)))
        if zs.size and (zs[-1] - zs[0] + 1) * spacing[0] >= 5 * apex_mm:  # a lung in full, not a slab
            tops[side] = zs[-1] - int(round(apex_mm / spacing[0]))
    comp, found = _pieces(lesions > 0, spacing, 0.0, max_ml)
    for i, box in found:
        c = comp[box] == i
        side = int(np.argmax(np.bincount(lungs[box][c], minlength=3)[1:])) + 1
        if side in tops and box[0].start + 1 > tops[side]:  # (box has one slice of margin below)
            out[box] |= c
    return out


def remove_partial_volume(lungs: np.ndarray, lesions: np.ndarray | None, hu: np.ndarray, spacing,
                          tissue_hu: float = -200.0, min_support: float = 0.7, max_wall_contact: float = 0.2,
                          ring_mm: float = 3.0, dome_max_ml: float = 25.0, surface_max_ml: float = 3.0,
                          surface_max_height_mm: float = 10.0, apex_mm: float = 20.0) -> dict:
    """Take the diaphragm domes out of ``lungs`` and ``lesions``, and the thin surface pieces out
    of ``lesions`` (uint8 (z, y, x), changed in place; ``hu`` in Hounsfield units, ``spacing``
    (z, y, x) mm). Returns the voxels removed: ``{"lung_voxels", "lesion_voxels"}``."""
    removed = {"lung_voxels": 0, "lesion_voxels": 0}
    if lungs.shape[0] < 3 or not lungs.any():
        return removed
    args = (tissue_hu, min_support, max_wall_contact, ring_mm, dome_max_ml)
    box = crop_box(lungs > 0, (1, 2, 2))
    z0, z1 = box[0].start, box[0].stop
    box = (slice(z0, z0 + max(3, (z1 - z0) // 2)),) + box[1:]   # the domes lie in the lower half of the lungs
    lu, h = lungs[box], hu[box]
    caps = _dome_pieces((lu > 0) & (h > tissue_hu), lu, h, spacing, *args)
    if caps.any():
        removed["lung_voxels"] = int(caps.sum())
        lu[caps] = 0
        if lesions is not None:
            lesions[box][caps] = 0
    if lesions is not None:
        le = lesions[box]
        blur = _dome_pieces(le > 0, lu, h, spacing, *args, inside=caps)
        if blur.any():
            removed["lesion_voxels"] += int(blur.sum())
            le[blur] = 0
        whole = crop_box(lungs > 0, (1, 1, 1))
        surface = _surface_pieces(lesions[whole], lungs[whole], hu[whole], spacing, tissue_hu, min_support,
                                  surface_max_ml, surface_max_height_mm)
        if surface.any():
            removed["lesion_voxels"] += int(surface.sum())
            lesions[whole][surface] = 0
        apex = _apical_pieces(lesions[whole], lungs[whole], spacing, apex_mm, surface_max_ml)
        if apex.any():
            removed["lesion_voxels"] += int(apex.sum())
            lesions[whole][apex] = 0
    return removed
