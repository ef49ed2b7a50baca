"""Benchmark of the shipped lung + lesion segmentation networks (pulmo/ct/models/seg.onnx by
default; ``--model pulmo/ct/models/seg_8bit.onnx`` for the 8-bit one).

Times ``Segmenter.segment_slices(volume, kind="hu")`` on a 300-slice 512x512 HU
volume: windowing, 512 -> 256 resizing, the network (both heads, one graph),
512 <- 256 label upsampling. The volume is ../shared/data/ct/lidc-idri-0001
resampled to 300 slices when available, else a synthetic chest phantom (the cost
does not depend on the content). Each repeat is timed; the median and the best are
printed, with the onnxruntime thread count.

    python benchmarks/bench_seg_models.py [--slices 300] [--repeats 3] [--threads N] [--model PATH]
    python benchmarks/bench_seg_models.py --model pulmo/ct/models/seg_8bit.onnx --images 50

Target (issue): <= 5 s for the 300-slice volume on 2 CPU cores.

``--images N`` times instead what ``pulmo ct segment DIR`` does per 2D image: test-time
augmentation (``tta=True``) on N 8-bit 256x256 slices (the volume's slices in the lung window,
downsampled), one call per image as the 2D image path (``pulmo.ct.analyze``) makes them; it prints seconds per image.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
LIDC = REPO.parent / "shared" / "data" / "ct" / "lidc-idri-0001"


def phantom(n: int, size: int = 512) -> np.ndarray:
    yy, xx = np.mgrid[:size, :size] / size - 0.5
    body = (xx / 0.42) ** 2 + (yy / 0.32) ** 2 < 1
    lung_r = ((xx + 0.17) / 0.13) ** 2 + (yy / 0.22) ** 2 < 1
    lung_l = ((xx - 0.17) / 0.13) ** 2 + (yy / 0.22) ** 2 < 1
    sl = np.full((size, size), -1000, np.float32)
    sl[body] = 40
    sl[lung_r | lung_l] = -850
    rng = np.random.default_rng(0)
    return (sl[None] + rng.normal(0, 20, (n, size, size))).astype(np.float32)


def lidc_volume(n: int) -> np.ndarray | None:
    if not LIDC.is_dir():
        return None
    import pydicom

    dss = sorted((pydicom.dcmread(f) for f in LIDC.glob("*.dcm")), key=lambda d: float(d.ImagePositionPatient[2]))
    vol = np.stack([d.pixel_array.astype(np.float32) * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in dss])
    idx = np.linspace(0, len(vol) - 1, n)
    lo = np.floor(idx).astype(int)
    hi = np.minimum(lo + 1, len(vol) - 1)
    w = (idx - lo)[:, None, None].astype(np.float32)
    return vol[lo] * (1 - w) + vol[hi] * w


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="onnxruntime intra-op threads (default: all cores)")
    ap.add_argument("--model", default=None, help="ONNX file (default: the shipped model)")
    ap.add_argument("--synthetic", action="store_true", help="use the synthetic phantom even if LIDC is available")
    ap.add_argument("--images", type=int, default=0,
                    help="time test-time augmentation on this many 8-bit 256x256 images instead")
    args = ap.parse_args()

    from pulmo.ct.models import load_segmenter
    from pulmo.ct.models.runtime import default_threads

    vol = None if args.synthetic else lidc_volume(args.slices)
    source = "lidc-idri-0001 resampled" if vol is not None else "synthetic phantom"
    if vol is None:
        vol = phantom(args.slices)
    t = time.perf_counter()
    seg = load_segmenter(args.model, threads=args.threads)
    t_load = time.perf_counter() - t
    if args.images:
        return time_images(seg, vol, args, source, t_load)
    seg.segment_slices(vol[:8], kind="hu")  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        lungs, lesions = seg.segment_slices(vol, kind="hu")
        times.append(time.perf_counter() - t)
    res = {
        "model": seg.metadata["path"], "version": seg.version, "quantization": seg.metadata["quantization"],
        "model_mb": round(os.path.getsize(seg.metadata["path"]) / 1e6, 2),
        "volume": f"{args.slices}x{vol.shape[1]}x{vol.shape[2]} ({source})",
        "threads": args.threads or default_threads(), "load_s": round(t_load, 3),
        "seconds": [round(x, 3) for x in times], "median_s": round(float(np.median(times)), 3),
        "best_s": round(min(times), 3), "ms_per_slice": round(1000 * float(np.median(times)) / args.slices, 2),
        "target_s": 5.0, "lung_voxels": int((lungs > 0).sum()), "lesion_voxels": int((lesions > 0).sum()),
        "load_average_1min": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(res, indent=1))
    return 0


def time_images(seg, vol, args, source: str, t_load: float) -> int:
    """Seconds per 8-bit 256x256 image with test-time augmentation (the 2D-image path)."""
    from pulmo.ct.models.runtime import default_threads

    idx = np.linspace(0, len(vol) - 1, args.images).astype(int)
    win = np.clip((vol[idx, ::2, ::2] + 1000.0) / 1150.0 * 255.0, 0, 255).astype(np.uint8)
    seg.segment_slices(win[0], kind="8bit", tta=True)  # warm-up
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        for img in win:
            seg.segment_slices(img, kind="8bit", tta=True)
        times.append(time.perf_counter() - t)
    med = float(np.median(times))
    print(json.dumps({
        "model": seg.metadata["path"], "version": seg.version, "tta_sizes": seg.metadata["tta_sizes"],
        "images": f"{args.images} x 256x256 8-bit ({source}, lung window)",
        "threads": args.threads or default_threads(), "load_s": round(t_load, 3),
        "seconds": [round(x, 3) for x in times], "s_per_image": round(med / args.images, 4),
        "load_average_1min": round(os.getloadavg()[0], 2)}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
