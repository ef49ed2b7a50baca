"""Training data for the segmentation network: loading, splits, label conventions,
simulated lesions on real HU slices. numpy / scipy / Pillow / pydicom only.

Sources (under the ``data`` folder, ``--data`` on the command line, default ``../shared/data``):

* ``seg2d/covid19-ct-seg-png``: 1614 slices, 256x256, binary lung and infection masks.
  Consecutive files are neighbouring slices of one patient, so the held-out set is a
  contiguous block at the end (files ``PNG_TEST_START``..1613) with a gap of
  ``PNG_GAP`` slices before it that is used for nothing.
* ``seg2d/medseg-train``: 50 slices with 0/1/2 labels (GGO, consolidation). The 10
  with the highest numeric names are held out (``MEDSEG_TEST``).
* ``ct/lidc-idri-0001``: one healthy chest CT in HU. Only its inferior half (z below
  the median slice position) is used for training (lung masks by thresholding,
  simulated lesions inserted on the fly); the superior half is held out.

Label conventions (shared with :mod:`pulmo.ct.models`): lungs 0 background,
1 the lung on the image's left (the patient's right in radiological display),
2 the other lung; lesions 0 background, 1 ground-glass opacity, 2 consolidation.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage as ndi

SIZE = 256
HU_WINDOW = (-1000.0, 150.0)
PNG_TEST_START = 1400
PNG_GAP = 20
MEDSEG_N_TEST = 10

# lung-label supervision modes
LUNG_NONE, LUNG_LR, LUNG_BINARY, LUNG_POSITIVE_ONLY = 0, 1, 2, 3
# lesion-label supervision modes: full 3-class labels (MedSeg, simulated), binary infection masks
# (COVID-19-CT-Seg PNG), and PNG slices whose true infection mask is split into GGO/consolidation
# by a teacher network (``train --png-pseudo``): 3-class loss, but an 8-bit source for ``--p-clean``
LES_FULL, LES_BINARY, LES_PSEUDO = 0, 1, 2


def default_data_root() -> Path:
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resize_image(img: np.ndarray, size=(SIZE, SIZE)) -> np.ndarray:
    """Resize a 2D float image the way the runtime does (see ``pulmo.ct.models.runtime``)."""
    h, w = img.shape
    if (h, w) == tuple(size):
        return img.astype(np.float32)
    if h % size[0] == 0 and w % size[1] == 0:
        fy, fx = h // size[0], w // size[1]
        return img.reshape(size[0], fy, size[1], fx).mean(axis=(1, 3), dtype=np.float32)
    return np.asarray(Image.fromarray(img.astype(np.float32), mode="F").resize((size[1], size[0]), Image.BILINEAR))


def resize_labels(lab: np.ndarray, size=(SIZE, SIZE)) -> np.ndarray:
    return np.asarray(Image.fromarray(lab.astype(np.uint8)).resize((size[1], size[0]), Image.NEAREST))


def split_lungs(mask: np.ndarray) -> np.ndarray:
    """Binary lung mask -> 0/1/2 with 1 = lung whose centroid is on the image's left."""
    mask = mask.astype(bool)
    out = np.zeros(mask.shape, np.uint8)
    if not mask.any():
        return out
    lab, n = ndi.label(mask)
    sizes = ndi.sum(mask, lab, range(1, n + 1))
    order = np.argsort(sizes)[::-1]
    cols = np.arange(mask.shape[1])
    if n >= 2 and sizes[order[1]] > 0.15 * sizes[order[0]]:
        a, b = order[0] + 1, order[1] + 1
        ca = (lab == a).sum(0) @ cols / sizes[a - 1]
        cb = (lab == b).sum(0) @ cols / sizes[b - 1]
        left, right = (a, b) if ca < cb else (b, a)
        cl, cr = min(ca, cb), max(ca, cb)
        out[lab == left] = 1
        out[lab == right] = 2
        # small pieces: to the nearer big lung by centroid column
        for k in order[2:]:
            ck = (lab == k + 1).sum(0) @ cols / sizes[k]
            out[lab == k + 1] = 1 if abs(ck - cl) <= abs(ck - cr) else 2
        return out
    # one merged component: split at the thinnest column near the middle of the mask
    xs = np.nonzero(mask.any(0))[0]
    x0, x1 = xs[0], xs[-1]
    prof = mask.sum(0).astype(float)
    lo, hi = int(x0 + 0.35 * (x1 - x0)), int(x0 + 0.65 * (x1 - x0)) + 1
    cut = lo + int(np.argmin(prof[lo:hi])) if hi > lo else (x0 + x1) // 2
    out[:, :cut][mask[:, :cut]] = 1
    out[:, cut:][mask[:, cut:]] = 2
    return out


def load_png_set(root: Path):
    base = root / "seg2d" / "covid19-ct-seg-png"
    names = sorted(p.name for p in (base / "ct").glob("*.png"))
    imgs, lungs, les = [], [], []
    for n in names:
        imgs.append(np.asarray(Image.open(base / "ct" / n).convert("L")))
        lung = np.asarray(Image.open(base / "lungs" / n).convert("L")) > 127
        cov = np.asarray(Image.open(base / "covid" / n).convert("L")) > 127
        lungs.append(split_lungs(lung))
        les.append(cov.astype(np.uint8))
    idx = np.array([int(Path(n).stem) for n in names])
    return names, idx, np.stack(imgs), np.stack(lungs), np.stack(les)


def medseg_names(root: Path):
    base = root / "seg2d" / "medseg-train"
    names = sorted((p.stem for p in (base / "images").glob("*.jpg")), key=int)
    return names[:-MEDSEG_N_TEST], names[-MEDSEG_N_TEST:]


def load_medseg(root: Path, names):
    base = root / "seg2d" / "medseg-train"
    imgs, labs = [], []
    for n in names:
        img = np.asarray(Image.open(base / "images" / f"{n}.jpg").convert("L"), dtype=np.float32)
        lab = np.asarray(Image.open(base / "labels" / f"{n}.png"))
        imgs.append(np.clip(np.rint(resize_image(img)), 0, 255).astype(np.uint8))
        labs.append(resize_labels(lab))
    return np.stack(imgs), np.stack(labs)


def read_dicom_hu(path) -> tuple[np.ndarray, float]:
    import pydicom

    d = pydicom.dcmread(str(path))
    hu = d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1)) + float(getattr(d, "RescaleIntercept", 0))
    z = float(d.ImagePositionPatient[2]) if "ImagePositionPatient" in d else 0.0
    return hu, z


def load_lidc(root: Path):
    """(hu_train (n,256,256) float32, lung labels) for the inferior half; paths of the held-out half."""
    files = sorted((root / "ct" / "lidc-idri-0001").glob("*.dcm"))
    items = [(read_dicom_hu(f), f) for f in files]
    items.sort(key=lambda t: t[0][1])
    zs = np.array([t[0][1] for t in items])
    zmed = np.median(zs)
    train = [t for t in items if t[0][1] < zmed]
    held = [t[1] for t in items if t[0][1] >= zmed]
    hu = np.stack([resize_image(t[0][0]) for t in train])
    lungs = np.stack([split_lungs(threshold_lungs(s)) for s in hu])
    return hu, lungs, held


def threshold_lungs(hu: np.ndarray) -> np.ndarray:
    """Lungs of a healthy HU slice: air-like inside the body, not touching the border, holes filled."""
    air = hu < -400
    lab, n = ndi.label(air)
    border = set(np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]])))
    keep = np.zeros_like(air)
    if n:
        sizes = ndi.sum(air, lab, range(1, n + 1))
        for k in range(1, n + 1):
            if k not in border and sizes[k - 1] > 150:
                keep |= lab == k
    keep = ndi.binary_closing(keep, iterations=2)
    for _ in range(1):
        keep = ndi.binary_fill_holes(keep)
    # drop the trachea/main bronchi: small very dark components
    lab, n = ndi.label(keep)
    if n:
        for k in range(1, n + 1):
            comp = lab == k
            if comp.sum() < 600 and np.median(hu[comp]) < -950:
                keep[comp] = False
    return keep


def simulate_lesions(hu: np.ndarray, lungs: np.ndarray, rng: np.random.Generator):
    """Insert random ground-glass and consolidation blobs into a healthy HU slice.

    Returns (new hu, lesion labels 0/1/2). Blobs are smooth random fields thresholded
    inside the lung, biased towards the periphery (where COVID-19 lesions sit); GGO
    raises the parenchyma by 250-500 HU keeping vessels visible, consolidation sets it
    to soft tissue (-100..+60 HU) with noise.
    """
    lung = lungs > 0
    lab = np.zeros(hu.shape, np.uint8)
    if lung.sum() < 500:
        return hu, lab
    out = hu.copy()
    dist = ndi.distance_transform_edt(lung)
    n_blobs = rng.integers(1, 5)
    for _ in range(n_blobs):
        ys, xs = np.nonzero(lung & (dist < rng.uniform(6, 40)))
        if len(ys) == 0:
            continue
        i = rng.integers(len(ys))
        cy, cx = ys[i], xs[i]
        r = rng.uniform(6, 40)
        yy, xx = np.ogrid[: hu.shape[0], : hu.shape[1]]
        ell = ((yy - cy) / (r * rng.uniform(0.6, 1.4))) ** 2 + ((xx - cx) / (r * rng.uniform(0.6, 1.4))) ** 2
        field = ndi.gaussian_filter(rng.standard_normal(hu.shape).astype(np.float32), rng.uniform(2, 6))
        field = field / (field.std() + 1e-6)
        blob = (np.exp(-ell) + 0.25 * field) > 0.5
        blob &= lung
        if blob.sum() < 20:
            continue
        soft = ndi.gaussian_filter(blob.astype(np.float32), 1.2)
        if rng.random() < 0.6:  # ground glass
            delta = rng.uniform(250, 500)
            new = np.minimum(hu + delta, -250 + 80 * field)
            out = np.where(soft > 0, np.maximum(out, out * (1 - soft) + new * soft), out)
            lab[blob & (lab == 0)] = 1
        else:  # consolidation, sometimes with a GGO halo
            if rng.random() < 0.5:
                halo = ndi.binary_dilation(blob, iterations=int(rng.integers(2, 6))) & lung & ~blob
                hsoft = ndi.gaussian_filter(halo.astype(np.float32), 1.0)
                out = out * (1 - hsoft) + np.minimum(out + 300, -300) * hsoft
                lab[halo & (lab == 0)] = 1
            val = rng.uniform(-100, 60) + 25 * field
            out = out * (1 - soft) + val * soft
            lab[blob] = 2
    return out.astype(np.float32), lab


def window(hu: np.ndarray, lo: float = HU_WINDOW[0], hi: float = HU_WINDOW[1]) -> np.ndarray:
    return np.clip((hu - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)
