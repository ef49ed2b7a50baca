"""Train Pulmo's lung + lesion segmentation network and export it to ONNX.

    python -m pulmo.train.seg train  --out build/seg/run1 [--arch seg-2d-3] [--iters 5000] [--seed 0]
    python -m pulmo.train.seg export --out build/seg/run1 --int8 [--model pulmo/ct/models/seg_8bit.onnx]
    python -m pulmo.train.seg float-image-conv OLD.onnx NEW.onnx [--version V]
    python -m pulmo.train.seg pseudo-labels --model TEACHER.onnx --out PSEUDO.npz
    python -m pulmo.train.seg train  --out build/seg/ft --init-onnx pulmo/ct/models/seg_8bit.onnx ...
    python -m pulmo.train.seg_eval   --model pulmo/ct/models/seg_8bit.onnx

``train`` writes ``checkpoint.pt`` (model, optimiser, RNG state, iteration) every
``--ckpt-every`` iterations and resumes from it when run again with the same
``--out``; ``train.log`` records the losses. Seeded: the same command on the same
data and thread count gives the same weights. See ``docs/models.md`` for the recipe.

The same as Python functions, whose parameters are the flags (``-`` written ``_``); bad
parameters raise :class:`pulmo.errors.InputError`, unusable model files
:class:`pulmo.errors.ModelError`, naming the parameter in quotes (``'p_png'``)::

    result = train(TrainConfig(out="build/seg/run1", arch="seg-2d-3", iters=5000), log=print)
    export("build/seg/run1", int8=True, tta_sizes=(224, 256, 288))   # -> path of the ONNX file
    pseudo_labels("TEACHER.onnx", "PSEUDO.npz")                       # for TrainConfig(png_pseudo=...)
    set_minor_lesion_share("IN.onnx", "OUT.onnx", 0.02)
    float_image_conv("OLD.onnx", "NEW.onnx")

Needs the ``train`` extra (PyTorch, onnx); imported lazily so that the package
never needs PyTorch to predict.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from pulmo.ct.models.runtime import LOGITS_OUTPUT
from pulmo.errors import InputError, ModelError, PulmoError
from pulmo.train import seg_data as D

REPO = Path(__file__).resolve().parents[2]
DEFAULT_DATA = D.default_data_root()
DEFAULT_CACHE = REPO / "build" / "seg" / "cache.npz"
#: What ``tta_sizes`` (test-time augmentation input sizes, pixels) must be.
TTA_SIZES_RULE = "multiples of 16 of at least 64"


# ----------------------------------------------------------------------------- data

def build_cache(data: Path, cache: Path) -> dict:
    """Every training source as arrays (``png_im``, ``png_lu``, ``png_le``, ``ms_im``, ``ms_le``,
    ``hu``, ``hu_lu``): read from the ``cache`` .npz when it exists, else from the folder ``data``
    (the DICOM series takes ~20 s) and saved there."""
    data, cache = Path(data), Path(cache)
    if cache.is_file():
        with np.load(cache, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    missing = [d for d in ("seg2d/covid19-ct-seg-png/ct", "seg2d/medseg-train/images", "ct/lidc-idri-0001")
               if not (data / d).is_dir() or not any((data / d).iterdir())]
    if missing:
        raise InputError(f"'data' {data}: no training data at {', '.join(missing)} (and no cache at {cache}); "
                         "see docs/models.md")
    names, idx, im, lu, le = D.load_png_set(data)
    train = idx < D.PNG_TEST_START - D.PNG_GAP
    ms_train, _ = D.medseg_names(data)
    ms_im, ms_le = D.load_medseg(data, ms_train)
    hu, hu_lungs, _ = D.load_lidc(data)
    arrays = dict(png_im=im[train], png_lu=lu[train], png_le=le[train], ms_im=ms_im, ms_le=ms_le,
                  hu=hu.astype(np.float32), hu_lu=hu_lungs)
    cache.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **arrays)
    return arrays


def batch_mix(p_medseg: float, p_png: float) -> np.ndarray:
    """Probabilities ``[MedSeg, PNG, LIDC]`` of the source of each slice of a batch, from the
    shares of MedSeg and PNG slices (LIDC HU slices take the rest); impossible shares are refused."""
    if not (0 <= p_png <= 1):
        raise InputError(f"'p_png' must lie in 0..1, not {p_png:g}")
    if not (0 <= p_medseg and p_medseg + p_png <= 1 + 1e-9):
        raise InputError(f"'p_medseg' must lie in 0..{1 - p_png:g} (PNG slices take {p_png:g} of each batch, "
                         f"LIDC slices the rest), not {p_medseg:g}")
    return np.array([p_medseg, p_png, max(0.0, 1 - p_medseg - p_png)])


class Sampler:
    """Draws mixed batches: MedSeg (full 3-class lesions), PNG (binary lesions, L/R lungs;
    3-class pseudo labels instead when ``data`` holds ``png_le3``), LIDC HU slices with simulated
    lesions (or none) in a randomised lung window. ``p_ms``, ``p_png``: shares of MedSeg and PNG
    slices (:func:`batch_mix`)."""

    def __init__(self, data: dict, rng: np.random.Generator, p_ms=0.35, p_png=0.45):
        self.d, self.rng = data, rng
        self.p = batch_mix(p_ms, p_png)

    def one(self):
        d, rng = self.d, self.rng
        src = rng.choice(3, p=self.p)
        if src == 0:
            i = rng.integers(len(d["ms_im"]))
            lab = d["ms_le"][i]
            lungs = (lab > 0).astype(np.uint8)  # lesions lie in the lung: positive-only lung supervision
            return d["ms_im"][i] / 255.0, lungs, lab, D.LUNG_POSITIVE_ONLY, D.LES_FULL
        if src == 1:
            i = rng.integers(len(d["png_im"]))
            if "png_le3" in d:  # pseudo-labelled GGO/consolidation split inside the true infection mask
                return d["png_im"][i] / 255.0, d["png_lu"][i], d["png_le3"][i], D.LUNG_LR, D.LES_PSEUDO
            return d["png_im"][i] / 255.0, d["png_lu"][i], d["png_le"][i], D.LUNG_LR, D.LES_BINARY
        i = rng.integers(len(d["hu"]))
        hu, lungs = d["hu"][i], d["hu_lu"][i]
        lab = np.zeros_like(lungs)
        if rng.random() < 0.7:
            hu, lab = D.simulate_lesions(hu, lungs, rng)
        lo = D.HU_WINDOW[0] + rng.uniform(-150, 150)
        hi = D.HU_WINDOW[1] + rng.uniform(-150, 250)
        return D.window(hu, lo, hi), lungs, lab, D.LUNG_LR, D.LES_FULL

    def batch(self, n):
        """``n`` slices: images, lung labels, lesion labels, and their supervision modes."""
        items = [self.one() for _ in range(n)]
        x = np.stack([it[0] for it in items]).astype(np.float32)[:, None]
        lu = np.stack([it[1] for it in items]).astype(np.int64)
        le = np.stack([it[2] for it in items]).astype(np.int64)
        lm = np.array([it[3] for it in items])
        em = np.array([it[4] for it in items])
        return x, lu, le, lm, em


def augment(torch, F, x, lu, le, lm, gen, keep_intensity=None):
    """Geometric (affine, 90-degree rotations, flips) and strong intensity augmentation,
    on a batch of tensors. Lung L/R labels follow horizontal flips; after an odd
    90-degree rotation left/right is undefined, so only the lung union is supervised.

    ``keep_intensity`` (optional bool tensor ``(n,)``): slices that get the geometric
    augmentation only, keeping their source's grey levels."""
    n = x.shape[0]
    lu = lu.clone()
    lm = lm.clone()
    # rotations by k*90 degrees and flips (MedSeg slices are stored rotated by 90)
    for i in range(n):
        k = int(torch.randint(0, 4, (1,), generator=gen))
        hflip = bool(torch.rand(1, generator=gen) < 0.5)
        xi, ui, ei = x[i], lu[i], le[i]
        if k:
            xi, ui, ei = (torch.rot90(t, k, dims=(-2, -1)) for t in (xi, ui, ei))
        if hflip:
            xi, ui, ei = (torch.flip(t, dims=(-1,)) for t in (xi, ui, ei))
        if lm[i] == D.LUNG_LR:
            if k % 2 == 1:
                lm[i] = D.LUNG_BINARY
            elif (k == 2) != hflip:  # rot180 or hflip alone swap image-left and image-right
                ui = torch.where(ui == 1, 2, torch.where(ui == 2, 1, ui))
        x[i], lu[i], le[i] = xi, ui, ei
    # random affine: scale, rotation, anisotropic stretch, shift
    ang = (torch.rand(n, generator=gen) - 0.5) * 2 * math.radians(15)
    sc = 1 / (0.8 + 0.45 * torch.rand(n, generator=gen))
    st = 0.85 + 0.3 * torch.rand(n, generator=gen)
    tx, ty = ((torch.rand(n, generator=gen) - 0.5) * 0.2 for _ in range(2))
    cos, sin = torch.cos(ang) * sc, torch.sin(ang) * sc
    theta = torch.stack([torch.stack([cos * st, -sin, tx], 1), torch.stack([sin * st, cos / st, ty], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    lab = torch.stack([lu, le], 1).float()
    lab = F.grid_sample(lab, grid, mode="nearest", padding_mode="zeros", align_corners=False).long()
    lu, le = lab[:, 0], lab[:, 1]
    x_geo = x
    # intensity: gamma, contrast/brightness, local-contrast boost (CLAHE-like) or blur, noise
    g = torch.exp((torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 2 * math.log(1.8))
    x = x.clamp(0, 1) ** g
    if True:
        blur = F.interpolate(F.avg_pool2d(x, 16), size=x.shape[2:], mode="bilinear", align_corners=False)
        a = torch.rand(n, 1, 1, 1, generator=gen) * 1.5 * (torch.rand(n, 1, 1, 1, generator=gen) < 0.4)
        x = x + a * (x - blur)
        sm = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
        b = torch.rand(n, 1, 1, 1, generator=gen) * (torch.rand(n, 1, 1, 1, generator=gen) < 0.3)
        x = x * (1 - b) + sm * b
    c = 0.7 + 0.6 * torch.rand(n, 1, 1, 1, generator=gen)
    m = x.mean(dim=(2, 3), keepdim=True)
    x = (x - m) * c + m + (torch.rand(n, 1, 1, 1, generator=gen) - 0.5) * 0.3
    x = x + torch.randn(x.shape, generator=gen) * 0.04 * torch.rand(n, 1, 1, 1, generator=gen)
    if keep_intensity is not None:
        x = torch.where(keep_intensity.view(n, 1, 1, 1), x_geo, x)
    return x.clamp(0, 1), lu, le, lm


def soft_dice(torch, p, t, mask=None, eps=1.0):
    if mask is not None:
        p, t = p * mask, t * mask
    inter = (p * t).sum((1, 2))
    return 1 - (2 * inter + eps) / (p.sum((1, 2)) + t.sum((1, 2)) + eps)


def losses(torch, F, lung_logits, les_logits, lu, le, lm, em, les_weights=(1.0, 2.0, 2.0)):
    """Lung: 3-class CE (L/R known), marginal BCE on p1+p2 (L/R unknown) or on lesion
    pixels only (MedSeg). Lesion: 3-class CE + Dice (MedSeg, simulated), marginal
    lesion = GGO + consolidation BCE + Dice (binary COVID set)."""
    pl = torch.softmax(lung_logits, 1)
    pe = torch.softmax(les_logits, 1)
    total = lung_logits.new_zeros(())
    parts = {}
    sel = lm == D.LUNG_LR
    if sel.any():
        ce = F.cross_entropy(lung_logits[sel], lu[sel])
        dl = soft_dice(torch, 1 - pl[sel][:, 0], (lu[sel] > 0).float()).mean()
        parts["lung_ce"] = ce.item()
        total = total + ce + 0.5 * dl
    sel = lm == D.LUNG_BINARY
    if sel.any():
        p = (1 - pl[sel][:, 0]).clamp(1e-5, 1 - 1e-5)
        t = (lu[sel] > 0).float()
        total = total + F.binary_cross_entropy(p, t) + 0.5 * soft_dice(torch, p, t).mean()
    sel = lm == D.LUNG_POSITIVE_ONLY
    if sel.any():
        p = (1 - pl[sel][:, 0]).clamp(1e-5, 1 - 1e-5)
        t = (lu[sel] > 0).float()
        if t.sum() > 0:
            total = total + 0.5 * (-(torch.log(p) * t).sum() / t.sum())
    sel = (em == D.LES_FULL) | (em == D.LES_PSEUDO)
    if sel.any():
        w = torch.tensor([float(v) for v in les_weights])
        ce = F.cross_entropy(les_logits[sel], le[sel], weight=w)
        dl = sum(soft_dice(torch, pe[sel][:, c], (le[sel] == c).float()).mean() for c in (1, 2)) / 2
        du = soft_dice(torch, 1 - pe[sel][:, 0], (le[sel] > 0).float()).mean()
        parts["les_ce"] = ce.item()
        total = total + ce + 0.5 * dl + 0.5 * du
    sel = em == D.LES_BINARY
    if sel.any():
        p = (1 - pe[sel][:, 0]).clamp(1e-5, 1 - 1e-5)
        t = (le[sel] > 0).float()
        bce = F.binary_cross_entropy(p, t)
        parts["les_bin"] = bce.item()
        total = total + bce + 0.5 * soft_dice(torch, p, t).mean()
    return total, parts


# ----------------------------------------------------------------------------- training

def _reworded(exc: PulmoError, message: str) -> PulmoError:
    """``exc``'s class and ``code`` with another message (the parameter it concerns added)."""
    new = type(exc)(message)
    new.code = getattr(exc, "code", None)
    return new


def _whole(name: str, value, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise InputError(f"'{name}' must be a whole number of at least {low}, not {value!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Parameters of one training run (the flags of ``python -m pulmo.train.seg train``, same names).

    ``out``: run folder (``checkpoint.pt``, ``final.pt``, ``train.log``); a run whose folder holds
    a checkpoint resumes from it. ``data``: the shared data folder; ``cache``: the .npz of
    :func:`build_cache`. ``arch``: a key of :data:`pulmo.train.seg_net.ARCHS`. ``iters``: the
    iteration the run ends at (one cosine learning-rate cycle from the start, peak ``lr``);
    ``batch`` slices per iteration; ``threads`` torch threads; a checkpoint every ``ckpt_every``
    iterations. ``p_medseg``, ``p_png``: shares of MedSeg and PNG slices in a batch (LIDC the rest);
    ``p_clean``: share of 8-bit slices given geometric augmentation only, from iteration
    ``p_clean_from``. ``ggo_weight``, ``cons_weight``: cross-entropy class weights. ``png_pseudo``:
    an .npz of :func:`pseudo_labels` (3-class labels for the PNG slices). ``dropout``: on the
    head's input, training only. ``init_onnx``: start from an exported file of the same ``arch``
    (ignored when ``out`` holds a checkpoint). Bad values raise :class:`InputError` here.
    """

    out: Path
    data: Path = DEFAULT_DATA
    cache: Path = DEFAULT_CACHE
    arch: str = "seg-2d-3"
    iters: int = 4000
    batch: int = 12
    lr: float = 3e-3
    seed: int = 0
    threads: int = 1
    ckpt_every: int = 100
    p_medseg: float = 0.35
    p_png: float = 0.45
    p_clean: float = 0.0
    p_clean_from: int = 0
    ggo_weight: float = 2.0
    cons_weight: float = 2.0
    png_pseudo: Path | None = None
    dropout: float = 0.0
    init_onnx: Path | None = None

    def __post_init__(self):
        for name in ("out", "data", "cache", "png_pseudo", "init_onnx"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        for name, low in (("iters", 0), ("batch", 1), ("threads", 1), ("ckpt_every", 1), ("p_clean_from", 0),
                          ("seed", 0)):
            _whole(name, getattr(self, name), low)
        if not (0 <= self.dropout < 1):
            raise InputError(f"'dropout' must lie in 0..1 (exclusive), not {self.dropout:g}")
        if not (0 <= self.p_clean <= 1):
            raise InputError(f"'p_clean' must lie in 0..1, not {self.p_clean:g}")
        batch_mix(self.p_medseg, self.p_png)


@dataclass(frozen=True)
class TrainResult:
    """What :func:`train` did: ``final`` (``final.pt``: ``arch`` and ``model`` state dict) and
    ``checkpoint`` paths, the ``iterations`` done in all, the iteration this call ``started`` at
    (> 0: resumed from the checkpoint) and its training time in ``seconds``."""

    final: Path
    checkpoint: Path
    iterations: int
    started: int
    seconds: float


def train(config: TrainConfig, log: Callable[[str], None] | None = None) -> TrainResult:
    """Train (or resume) the network of ``config``; ``log`` receives progress lines ("resumed
    from ...", "initialised ...", and every 20 iterations the JSON loss line also written to
    ``train.log``). Sets torch's thread count to ``config.threads``."""
    import torch
    import torch.nn.functional as F

    from pulmo.train.seg_net import SegNet

    say = log or (lambda line: None)
    torch.set_num_threads(config.threads)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process (a second call from the same interpreter)
        pass
    out = config.out
    ck = out / "checkpoint.pt"
    torch.manual_seed(config.seed)
    net = SegNet.from_arch(config.arch, dropout=config.dropout)
    init = None
    if config.init_onnx is not None and not ck.is_file():  # checked before the data are read
        from pulmo.train.seg_init import calibration_images, init_from_onnx, matched_convolutions, onnx_conv_weights

        try:
            init = onnx_conv_weights(config.init_onnx)
            matched_convolutions(net, init, source=str(config.init_onnx), size=D.SIZE)
        except PulmoError as exc:
            raise _reworded(exc, f"'init_onnx' {exc}") from None
    data = build_cache(config.data, config.cache)
    if config.png_pseudo is not None:
        try:
            data["png_le3"] = load_png_pseudo(config.png_pseudo, data["png_le"])
        except PulmoError as exc:
            raise _reworded(exc, f"'png_pseudo' {exc}") from None
    opt = torch.optim.AdamW(net.parameters(), lr=config.lr, weight_decay=1e-4)
    rng = np.random.default_rng(config.seed)
    gen = torch.Generator().manual_seed(config.seed)
    start = 0
    if ck.is_file():
        state = torch.load(ck, weights_only=False)
        if state.get("arch", "seg-2d-1") != config.arch:
            raise InputError(f"{ck} holds a {state.get('arch', 'seg-2d-1')} network, not {config.arch}: "
                             "use another 'out' or the same 'arch'")
        net.load_state_dict(state["model"])
        opt.load_state_dict(state["opt"])
        rng.bit_generator.state = state["np_rng"]
        gen.set_state(state["torch_gen"])
        start = state["iter"]
        say(f"resumed from {ck} at iteration {start}")
    elif init is not None:
        n = init_from_onnx(net, init, calibration_images(data), source=str(config.init_onnx))
        say(f"initialised {n} convolutions from {config.init_onnx}")
    sampler = Sampler(data, rng, p_ms=config.p_medseg, p_png=config.p_png)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    net.train()
    with open(out / "train.log", "a") as train_log:
        for it in range(start, config.iters):
            lr = config.lr * (min(1.0, (it + 1) / 100) * 0.5 * (1 + math.cos(math.pi * it / config.iters)))
            for g in opt.param_groups:
                g["lr"] = lr
            x, lu, le, lm, em = sampler.batch(config.batch)
            keep = None
            if config.p_clean > 0 and it >= config.p_clean_from:
                # 8-bit slices (MedSeg, PNG; not the windowed HU ones) keep their grey levels
                eight_bit = torch.from_numpy((lm == D.LUNG_POSITIVE_ONLY) | (em == D.LES_BINARY) | (em == D.LES_PSEUDO))
                keep = eight_bit & (torch.rand(len(lm), generator=gen) < config.p_clean)
            x, lu, le, lm = augment(torch, F, torch.from_numpy(x), torch.from_numpy(lu), torch.from_numpy(le),
                                    torch.from_numpy(lm), gen, keep_intensity=keep)
            lung_logits, les_logits = net(x)
            loss, parts = losses(torch, F, lung_logits, les_logits, lu, le, lm, torch.from_numpy(em),
                                 les_weights=(1.0, config.ggo_weight, config.cons_weight))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if (it + 1) % 20 == 0:
                msg = json.dumps({"iter": it + 1, "loss": round(loss.item(), 4), "lr": round(lr, 6),
                                  "s": round(time.time() - t0, 1), **{k: round(v, 4) for k, v in parts.items()}})
                say(msg)
                train_log.write(msg + "\n")
                train_log.flush()
            if (it + 1) % config.ckpt_every == 0 or it + 1 == config.iters:
                tmp = out / "checkpoint.tmp"
                torch.save({"model": net.state_dict(), "opt": opt.state_dict(), "np_rng": rng.bit_generator.state,
                            "torch_gen": gen.get_state(), "iter": it + 1, "arch": config.arch}, tmp)
                tmp.replace(ck)
    final = out / "final.pt"
    torch.save({"arch": config.arch, "model": net.state_dict()}, final)
    return TrainResult(final=final, checkpoint=ck, iterations=config.iters, started=start,
                       seconds=time.time() - t0)


# ----------------------------------------------------------------------------- pseudo labels

def load_png_pseudo(path: Path, png_le: np.ndarray) -> np.ndarray:
    """The ``le3`` array of the .npz ``path`` (from :func:`pseudo_labels`), checked against the
    cache's PNG infection masks ``png_le``."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: no such file (make it with the pseudo-labels step first)")
    try:
        with np.load(path, allow_pickle=False) as z:
            le3 = z["le3"]
    except Exception as exc:  # noqa: BLE001 -- any unreadable file gets the same message
        raise InputError(f"{path}: not a pseudo-labels .npz ({type(exc).__name__}: {exc})") from None
    if le3.shape != png_le.shape or le3.dtype != np.uint8:
        raise InputError(f"{path}: labels of shape {le3.shape} ({le3.dtype}) do not fit the cache's "
                         f"PNG slices {png_le.shape} (uint8): made from another cache?")
    if le3.max(initial=0) > 2 or not np.array_equal(le3 > 0, png_le > 0):
        raise InputError(f"{path}: its lesion extent differs from the cache's infection masks "
                         "(labels must be 0 outside them and 1/2 inside)")
    return le3


@dataclass(frozen=True)
class PseudoLabels:
    """What :func:`pseudo_labels` wrote: the .npz ``path``, its number of slices, the share of
    infection pixels labelled consolidation, the teacher's version and the labelling time (s)."""

    path: Path
    n_slices: int
    consolidation_share: float
    teacher: str
    seconds: float


def pseudo_labels(model, out, *, data=DEFAULT_DATA, cache=DEFAULT_CACHE, threads: int = 2) -> PseudoLabels:
    """Split the true infection masks of the cache's PNG training slices into GGO and
    consolidation with the teacher network ``model`` (an exported ONNX file with ``tta_sizes``;
    :func:`pulmo.train.seg_pseudo.split_infection`) and write them to the .npz ``out`` (``le3``,
    ``teacher``), for ``TrainConfig(png_pseudo=out)``. The teacher is checked before the data
    are read; ``out`` is written whole or not at all."""
    from pulmo.ct.models import Segmenter
    from pulmo.train.seg_pseudo import split_infection

    try:
        teacher = Segmenter(model, threads=threads)
    except ModelError as exc:
        raise _reworded(exc, f"'model': {exc}") from None
    if not teacher.info.tta_sizes:
        raise ModelError(f"'model' {model}: no tta_sizes in its metadata (export the teacher with 'tta_sizes')")
    arrays = build_cache(data, cache)
    t0 = time.time()
    le3 = split_infection(teacher, arrays["png_im"], arrays["png_le"])
    out = Path(out)
    tmp = out.with_name(out.name + ".tmp.npz")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(tmp, le3=le3, teacher=np.array(teacher.version))
        tmp.replace(out)
    except OSError as exc:
        if tmp.is_file():
            tmp.unlink()
        raise InputError(f"'out' {out}: cannot write ({exc.strerror or exc})") from None
    share = (le3 == 2).sum() / max(1, (le3 > 0).sum())
    return PseudoLabels(out, len(le3), float(share), teacher.version, time.time() - t0)


# ----------------------------------------------------------------------------- export

def _tta_sizes(sizes: Sequence[int]) -> list[int]:
    sizes = list(sizes)
    if not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v >= 64 and v % 16 == 0
               for v in sizes):
        raise InputError(f"'tta_sizes' must be {TTA_SIZES_RULE}, not {','.join(str(v) for v in sizes)}")
    return [int(v) for v in sizes]


def export(out, model=None, *, cache=DEFAULT_CACHE, version: str | None = None, int8: bool = False,
           tta_sizes: Sequence[int] = (), minor_lesion_share: float = 0.0) -> Path:
    """Export the network of the run folder ``out`` (its ``final.pt``, else ``checkpoint.pt``) to
    the ONNX file ``model`` (default: the shipped file of its variant, ``pulmo/ct/models/seg.onnx``
    for ``seg-2d-1``, ``seg_8bit.onnx`` otherwise) with Pulmo's metadata; returns its path.

    ``version``: ``pulmo.version`` (default ``<arch>.0``). ``int8``: static int8 QDQ quantisation
    calibrated on slices of ``cache`` (:func:`quantize`). ``tta_sizes``: square input sizes
    (pixels, :data:`TTA_SIZES_RULE`) that test-time augmentation averages over; adds the float
    head output ``logits``. ``minor_lesion_share`` in [0, 0.5): on 2D images a lesion class under
    this share of an image's lesion pixels becomes the other class (needs ``tta_sizes``; 0: off).
    Also writes ``seg_fp32.onnx`` (and the int8 intermediates) into ``out``."""
    tta_sizes = _tta_sizes(tta_sizes)
    minor_share = _share(minor_lesion_share) if minor_lesion_share else None
    if minor_share is not None and not tta_sizes:
        raise InputError("'minor_lesion_share' applies to the averaged probabilities: give 'tta_sizes' too")
    out = Path(out)
    weights = out / "final.pt" if (out / "final.pt").is_file() else out / "checkpoint.pt"
    if not weights.is_file():
        raise InputError(f"'out' {out}: no final.pt or checkpoint.pt to export (train there first)")
    import warnings

    import onnx
    import torch

    from pulmo.train.seg_net import ExportWrapper, SegNet

    state = torch.load(weights, weights_only=False)
    if "model" not in state:  # a seg-2d-1 final.pt: the bare state dict
        state = {"arch": "seg-2d-1", "model": state}
    arch = state.get("arch", "seg-2d-1")
    net = SegNet.from_arch(arch)
    net.load_state_dict(state["model"])
    net.eval()
    fp32 = out / "seg_fp32.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        outputs = ["lungs", "lesions"] + ([LOGITS_OUTPUT] if tta_sizes else [])
        axes = {"image": {0: "n", 2: "h", 3: "w"}, "lungs": {0: "n", 1: "h", 2: "w"}, "lesions": {0: "n", 1: "h", 2: "w"},
                LOGITS_OUTPUT: {0: "n", 2: "h2", 3: "w2"}}
        torch.onnx.export(ExportWrapper(net, logits=bool(tta_sizes)), torch.rand(2, 1, D.SIZE, D.SIZE), str(fp32),
                          input_names=["image"], output_names=outputs, opset_version=17, dynamo=False,
                          dynamic_axes=axes)
    target = Path(model) if model else REPO / "pulmo" / "ct" / "models" / (
        "seg.onnx" if arch == "seg-2d-1" else "seg_8bit.onnx")
    src = fp32
    if int8:
        src = quantize(fp32, out, Path(cache))
    onnx_model = onnx.load(str(src))
    meta = {
        "pulmo.task": "lungs+lesions",
        "pulmo.version": version or f"{arch}.0",
        "pulmo.input": "axial2d",
        "pulmo.input_size": f"{D.SIZE},{D.SIZE}",
        "pulmo.intensity": "unit",
        "pulmo.hu_window": f"{D.HU_WINDOW[0]:g},{D.HU_WINDOW[1]:g}",
        "pulmo.outputs": json.dumps({"lungs": {"0": "background", "1": "image-left lung (patient right)",
                                                "2": "image-right lung (patient left)"},
                                      "lesions": {"0": "background", "1": "ground-glass opacity",
                                                  "2": "consolidation"}}),
        "pulmo.quantization": "int8-qdq" if int8 else "fp32",
        "pulmo.licence": "weights for non-commercial research use only (trained on COVID-19-CT-Seg and MedSeg)",
    }
    if tta_sizes:
        meta["pulmo.tta_sizes"] = ",".join(str(v) for v in tta_sizes)
    if minor_share is not None:
        meta["pulmo.minor_lesion_share"] = minor_share
    del onnx_model.metadata_props[:]
    for k, v in meta.items():
        p = onnx_model.metadata_props.add()
        p.key, p.value = k, v
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(onnx_model, str(target))
    return target


def _share(v: float) -> str:
    """``v`` as written into ``pulmo.minor_lesion_share``; refused outside [0, 0.5)."""
    if not 0.0 <= v < 0.5:
        raise InputError(f"the minor-lesion share must be in [0, 0.5), not {v}")
    return f"{v:g}"


def set_minor_lesion_share(src: Path, dst: Path, share: float, version: str | None = None) -> str:
    """Write ``src`` to ``dst`` with ``pulmo.minor_lesion_share`` (and optionally ``pulmo.version``)
    set in its metadata; the graph and weights are copied unchanged (how seg-2d-3.3 was made from
    seg-2d-3.2). The rule needs averaged probabilities, so ``src`` must have ``pulmo.tta_sizes``.
    Returns the share as written."""
    import onnx

    value = _share(share)
    try:
        model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - missing, truncated or not ONNX
        raise ModelError(f"{src}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    props = {p.key: p for p in model.metadata_props}
    if "pulmo.tta_sizes" not in props:
        raise ModelError(f"{src}: no pulmo.tta_sizes in its metadata (export it with 'tta_sizes')")
    for key, v in (("pulmo.minor_lesion_share", value), ("pulmo.version", version)):
        if v is None:
            continue
        if key not in props:
            props[key] = model.metadata_props.add()
            props[key].key = key
        props[key].value = v
    tmp = Path(dst).with_name(Path(dst).name + ".tmp")
    try:
        onnx.save(model, str(tmp))
        tmp.replace(dst)  # never a half-written model
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise InputError(f"{dst}: cannot write ({exc.strerror or exc})") from None
    return value


def quantize(fp32: Path, out: Path, cache: Path, fp32_nodes=None) -> Path:
    """Static int8 (QDQ) quantisation, calibrated on 64 training slices.

    ``fp32_nodes`` (node names) stay in float; by default the first convolution (on the
    image) and the 1x1 head, whose logits feed the arg-max (see :func:`float_nodes`)."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with np.load(cache) as z:
        calib = np.concatenate([z["png_im"][::40][:32] / 255.0, z["ms_im"][:16] / 255.0,
                                D.window(z["hu"][::4][:16])])[:, None].astype(np.float32)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.it = iter({"image": calib[i:i + 8]} for i in range(0, len(calib), 8))

        def get_next(self):
            return next(self.it, None)

    pre = out / "seg_pre.onnx"
    quant_pre_process(str(fp32), str(pre))
    if fp32_nodes is None:
        fp32_nodes = float_nodes(pre)
    q = out / "seg_int8.onnx"
    quantize_static(str(pre), str(q), Reader(), quant_format=QuantFormat.QDQ,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                    nodes_to_exclude=list(fp32_nodes))
    argmax_on_quantized(q)
    return q


def float_nodes(path: Path) -> list[str]:
    """The convolutions kept in float by :func:`quantize`: the first (on the image) and the last
    (the logits; also the ``logits`` output of a graph exported with ``--tta-sizes``).

    Measured on the seg-2d-2 network: with the image convolution in int8 the lung labels of a
    MedSeg slice agreed with the float model on only 66 % of pixels (held-out lung Dice 0.963 ->
    0.952, MedSeg lesion 0.733 -> 0.661); with it in float, int8 changes Dice by < 0.005. It is
    1 -> 16 channels, so float costs little."""
    import onnx

    convs = [n for n in onnx.load(str(path)).graph.node if n.op_type == "Conv"]
    return [convs[0].name, convs[-1].name] if convs else []


def float_image_conv(src: Path, dst: Path, version: str | None = None) -> str:
    """Return the first convolution of an int8 QDQ graph (the one on the image) to float, in place
    of re-quantising: its input Quantize/Dequantize pair is removed, so onnxruntime runs it as a
    float convolution with the dequantised weights; everything after it stays int8.

    Why: the image input spans the whole uint8 range, and on x86 CPUs without VNNI onnxruntime's
    u8 x s8 kernels (VPMADDUBSW) saturate 16-bit pair sums (2 x 255 x 127 > 32767), so the int8
    image convolution gives machine-dependent, wrong features. Measured on an AVX2-only AMD EPYC:
    seg-2d-1.0 kept 12,256 lung pixels instead of more than 21,000 on covid-ny-sbu A046441, and a
    seg-2d-2 export agreed with its float model on 66 % of the lung pixels of a MedSeg slice.
    Returns the name of the convolution changed."""
    import onnx

    try:
        model = onnx.load(str(src))
    except Exception as exc:  # noqa: BLE001 - missing, truncated or not ONNX
        raise ModelError(f"{src}: not a readable ONNX model ({type(exc).__name__}: {exc})") from None
    g = model.graph
    image = g.input[0].name
    q = next((n for n in g.node if n.op_type == "QuantizeLinear" and n.input[0] == image), None)
    dq = None if q is None else next(
        (n for n in g.node if n.op_type == "DequantizeLinear" and n.input[0] == q.output[0]), None)
    if dq is None:
        raise ModelError(f"{src}: its image input is not quantised (not an int8 QDQ graph)")
    users = [n for n in g.node if dq.output[0] in n.input]
    if len(users) != 1 or users[0].op_type != "Conv":
        raise ModelError(f"{src}: the image feeds {[n.op_type for n in users]}, not one convolution")
    conv = users[0]
    conv.input[0] = image
    g.node.remove(dq)
    if not any(q.output[0] in n.input for n in g.node):
        g.node.remove(q)
    used = {i for n in g.node for i in n.input}
    for init in [i for i in g.initializer if i.name not in used]:
        g.initializer.remove(init)
    if version is not None:
        for p in model.metadata_props:
            if p.key == "pulmo.version":
                p.value = version
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))
    return conv.name


def argmax_on_quantized(path: Path) -> int:
    """Feed ArgMax the uint8 logits directly instead of their dequantised copy.

    Activation quantisation is per tensor with a positive scale, hence monotonic, so the
    arg-max is unchanged (up to ties between classes that quantise to the same level);
    this removes the largest DequantizeLinear of the graph (24 channels at 128x128)."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(path))
    g = model.graph
    producers = {o: n for n in g.node for o in n.output}
    inits = {i.name: numpy_helper.to_array(i) for i in g.initializer}
    consumers = {}
    for n in g.node:
        for i in n.input:
            consumers.setdefault(i, []).append(n)
    changed = 0
    for n in list(g.node):
        if n.op_type != "ArgMax":
            continue
        dq = producers.get(n.input[0])
        if dq is None or dq.op_type != "DequantizeLinear":
            continue
        scale = inits.get(dq.input[1])
        if scale is None or scale.size != 1 or float(scale.ravel()[0]) <= 0:
            continue
        n.input[0] = dq.input[0]
        if all(c is n for c in consumers.get(dq.output[0], [])):
            g.node.remove(dq)
        changed += 1
    onnx.save(model, str(path))
    return changed


# ----------------------------------------------------------------------------- command line

def _parser():
    import argparse

    ap = argparse.ArgumentParser(prog="python -m pulmo.train.seg", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--out", default=str(REPO / "build" / "seg" / "run1"))
    t.add_argument("--data", default=str(DEFAULT_DATA))
    t.add_argument("--cache", default=str(DEFAULT_CACHE))
    t.add_argument("--arch", default="seg-2d-3",
                   help="network variant, a key of pulmo.train.seg_net.ARCHS (seg-2d-3: seg_8bit.onnx; "
                        "seg-2d-1: seg.onnx)")
    t.add_argument("--iters", type=int, default=4000)
    t.add_argument("--batch", type=int, default=12)
    t.add_argument("--lr", type=float, default=3e-3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=1,
                   help="torch threads (1 is fastest on a shared 2-core machine)")
    t.add_argument("--ckpt-every", type=int, default=100)
    t.add_argument("--p-medseg", type=float, default=0.35, help="share of MedSeg slices in a batch")
    t.add_argument("--p-png", type=float, default=0.45,
                   help="share of COVID-19-CT-Seg PNG slices in a batch (LIDC HU slices take the rest)")
    t.add_argument("--p-clean", type=float, default=0.0,
                   help="share of 8-bit slices (MedSeg, PNG) given geometric augmentation only")
    t.add_argument("--p-clean-from", type=int, default=0,
                   help="iteration from which --p-clean applies (earlier iterations: full augmentation)")
    t.add_argument("--ggo-weight", type=float, default=2.0, help="cross-entropy weight of ground glass")
    t.add_argument("--cons-weight", type=float, default=2.0, help="cross-entropy weight of consolidation")
    t.add_argument("--png-pseudo", default=None,
                   help="an .npz from the pseudo-labels command: supervise the PNG slices with its 3-class "
                        "labels (true infection extent, a teacher's GGO/consolidation split)")
    t.add_argument("--dropout", type=float, default=0.0,
                   help="dropout probability on the 1x1 head's input features, in training only (the "
                        "exported graph has none); 0: off")
    t.add_argument("--init-onnx", default=None,
                   help="start from the weights of an exported ONNX file of the same --arch (fp32 or int8, "
                        "e.g. pulmo/ct/models/seg_8bit.onnx) instead of a random network: fine-tuning; "
                        "ignored when --out already holds a checkpoint (the run resumes)")
    t.set_defaults(func=_train_command)
    pl = sub.add_parser("pseudo-labels", help="split the PNG training slices' true infection masks into "
                                               "GGO/consolidation with a teacher network (for train --png-pseudo)")
    pl.add_argument("--model", required=True, help="teacher: an exported ONNX file with tta_sizes")
    pl.add_argument("--cache", default=str(DEFAULT_CACHE))
    pl.add_argument("--data", default=str(DEFAULT_DATA))
    pl.add_argument("--out", required=True, help=".npz file to write")
    pl.add_argument("--threads", type=int, default=2)
    pl.set_defaults(func=_pseudo_labels_command)
    e = sub.add_parser("export")
    e.add_argument("--out", default=str(REPO / "build" / "seg" / "run1"))
    e.add_argument("--cache", default=str(DEFAULT_CACHE))
    e.add_argument("--model", default=None, help="ONNX file to write (default: the shipped file of the "
                   "checkpoint's variant: pulmo/ct/models/seg.onnx for seg-2d-1, seg_8bit.onnx otherwise)")
    e.add_argument("--version", default=None, help="model version in the ONNX metadata (default: <arch>.0)")
    e.add_argument("--int8", action="store_true")
    e.add_argument("--tta-sizes", default=None,
                   help="comma-separated square network input sizes (multiples of 16) that test-time "
                        "augmentation averages over, e.g. 224,256,288: adds the float head output "
                        "'logits' to the graph and records the sizes in its metadata")
    e.add_argument("--minor-lesion-share", type=float, default=0.0,
                   help="on 2D images, relabel a lesion class covering less than this share of an image's "
                        "lesion pixels as the other class (seg-2d-3.3 and 3.4: 0.02; needs --tta-sizes)")
    e.set_defaults(func=_export_command)
    f = sub.add_parser("float-image-conv", help="return the image convolution of an int8 model to float "
                                                "(how seg-2d-1.1 was made from seg-2d-1.0)")
    f.add_argument("src")
    f.add_argument("dst")
    f.add_argument("--version", default=None, help="new pulmo.version metadata")
    f.set_defaults(func=lambda a: print(f"{a.dst}: {float_image_conv(Path(a.src), Path(a.dst), a.version)} now float"))
    m = sub.add_parser("set-minor-lesion-share", help="set pulmo.minor_lesion_share in an exported model's "
                                                       "metadata, weights unchanged (how seg-2d-3.3 was made)")
    m.add_argument("src")
    m.add_argument("dst")
    m.add_argument("--share", type=float, required=True)
    m.add_argument("--version", default=None, help="new pulmo.version metadata")
    m.set_defaults(func=_set_minor_lesion_share_command)
    return ap


def _print(line: str) -> None:
    print(line, flush=True)


def _train_command(args) -> None:
    config = TrainConfig(**{f.name: getattr(args, f.name) for f in fields(TrainConfig)})
    result = train(config, log=_print)
    print(f"done: {result.iterations} iterations, {result.seconds:.0f} s this session", flush=True)


def _pseudo_labels_command(args) -> None:
    r = pseudo_labels(args.model, args.out, data=args.data, cache=args.cache, threads=args.threads)
    print(f"wrote {r.path}: {r.n_slices} slices, consolidation {r.consolidation_share:.1%} of the infection "
          f"pixels, teacher {r.teacher}, {r.seconds:.0f} s")


def _export_command(args) -> None:
    try:
        sizes = [int(v) for v in args.tta_sizes.split(",")] if args.tta_sizes else []
    except ValueError:
        raise InputError(f"'tta_sizes' must be {TTA_SIZES_RULE}, not {args.tta_sizes}") from None
    target = export(args.out, args.model, cache=args.cache, version=args.version, int8=args.int8,
                    tta_sizes=sizes, minor_lesion_share=args.minor_lesion_share)
    print(f"wrote {target} ({target.stat().st_size / 1e6:.2f} MB)")


def _set_minor_lesion_share_command(args) -> None:
    value = set_minor_lesion_share(Path(args.src), Path(args.dst), args.share, args.version)
    print(f"wrote {args.dst} (pulmo.minor_lesion_share {value}{', version ' + args.version if args.version else ''})")


def main(argv=None) -> int:
    """``python -m pulmo.train.seg``: exit status 0; a library error is printed (flags named as
    on the command line) with status 1, as ``SystemExit`` does; usage errors 2 (argparse)."""
    from pulmo.train._cli import exit_for

    ap = _parser()
    args = ap.parse_args(argv)
    try:
        args.func(args)
    except PulmoError as exc:
        raise exit_for(exc, ap) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
