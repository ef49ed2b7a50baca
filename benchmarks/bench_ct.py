"""Benchmark of the chest-CT pipeline: DICOM on disk -> every output.

Builds a 300-slice 512x512 series from ../shared/data/ct/lidc-idri-0001 (133
slices, resampled linearly along z and written as a temporary DICOM series), then
runs ``pulmo ct analyze`` in a fresh process per measurement and prints per-stage
times and the peak resident memory. Also measures a batch of studies with and
without loading overlapped with computing.

    python benchmarks/bench_ct.py [--slices 300] [--repeat 3] [--batch 3] [--keep DIR] [--series DIR]

Each measurement is repeated ``--repeat`` times (fresh process each); the table gives
the median per stage with the min-max range, because on a shared machine single runs vary
by +-30 %. Peak memory: the analysing process's max RSS (and the largest child process's,
if the analysis ever starts one; the lobe-tool plug-in does).

Targets (issue): <= 10 s and <= 2 GB peak for the 300-slice case on 2 CPU cores.
Nothing derived from the shared data is written inside the repository.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pydicom
from pydicom.uid import generate_uid

REPO = Path(__file__).resolve().parents[1]
LIDC = REPO.parent / "shared" / "data" / "ct" / "lidc-idri-0001"


def build_series(n_slices: int, dest: Path, thickness: float | None = None, pad_outside: bool = False) -> Path:
    """lidc-idri-0001 resampled linearly along z to ``n_slices`` slices (or, with ``thickness``,
    to that slice spacing in mm) and written as a DICOM series. ``pad_outside``: voxels outside
    the scanner's reconstruction circle are set to -3024 HU, as many scanners store them
    (signed pixels, intercept -1024)."""
    files = sorted(LIDC.glob("*.dcm"))
    dss = sorted((pydicom.dcmread(f) for f in files), key=lambda d: float(d.ImagePositionPatient[2]))
    z = np.array([float(d.ImagePositionPatient[2]) for d in dss])
    stack = np.stack([d.pixel_array for d in dss]).astype(np.float32)
    if thickness:
        n_slices = int(round((z[-1] - z[0]) / thickness)) + 1
    target = np.linspace(z[0], z[-1], n_slices)
    series_uid, dz = generate_uid(), (z[-1] - z[0]) / (n_slices - 1)
    slope, intercept = float(dss[0].RescaleSlope), float(dss[0].RescaleIntercept)
    ny, nx = stack.shape[1:]
    yy, xx = np.mgrid[:ny, :nx]
    outside = (yy - (ny - 1) / 2) ** 2 + (xx - (nx - 1) / 2) ** 2 > (min(ny, nx) / 2) ** 2
    dest.mkdir(parents=True, exist_ok=True)
    for k, t in enumerate(target):
        i = int(np.clip(np.searchsorted(z, t) - 1, 0, len(z) - 2))
        w = (t - z[i]) / (z[i + 1] - z[i])
        img = np.round(stack[i] * (1 - w) + stack[i + 1] * w)
        ds = dss[i].copy()
        if pad_outside:
            hu = img * slope + intercept
            hu[outside] = -3024.0
            img = np.round((hu + 1024.0)).astype(np.int16)
            ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
            ds.PixelRepresentation, ds.BitsStored, ds.HighBit = 1, 16, 15
        else:
            img = img.astype(dss[0].pixel_array.dtype)
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [float(v) for v in ds.ImagePositionPatient[:2]] + [float(t)]
        ds.SliceThickness = round(dz, 3)
        ds.PixelData = img.tobytes()
        ds.save_as(dest / f"s{k:04d}.dcm")
    return dest


CHILD = r"""
import json, resource, sys, time
t0 = time.perf_counter()
from pulmo.ct import analyze, analyze_batch, write_outputs
t_import = time.perf_counter() - t0
mode, src, out = sys.argv[1], sys.argv[2], sys.argv[3]
t1 = time.perf_counter()
if mode == "single":
    analysis = analyze(src)
    written = write_outputs(analysis, out)
    timings = {**analysis.timings, **written.timings}
elif mode == "compare":
    from pulmo.ct.compare import compare
    from pulmo.ct.report.compare_out import write_comparison
    c = compare([src, src])
    write_comparison(c, out)
    timings = dict(c.timings)
else:
    rows = analyze_batch(src, out, prefetch=(mode == "batch-overlap"))
    timings = {"cases": len(rows), "failed": sum(r["status"] != "ok" for r in rows)}
wall = time.perf_counter() - t1
print(json.dumps({"wall_s": round(wall, 2), "import_s": round(t_import, 2), "timings": timings,
                  "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
                  "child_peak_rss_mb": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024, 1)}))
"""


def _stat(values) -> str:
    v = sorted(values)
    return f"{v[len(v) // 2]:6.2f} ({v[0]:.2f}-{v[-1]:.2f})"


def run_child(mode: str, src: Path, out: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    res = subprocess.run([sys.executable, "-c", CHILD, mode, str(src), str(out)], capture_output=True, text=True,
                         env=env, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeat", type=int, default=3, help="runs per case (median and range are reported)")
    ap.add_argument("--batch", type=int, default=3, help="studies in the batch measurement (0: skip)")
    ap.add_argument("--series", help="use this already built series folder instead of building one")
    ap.add_argument("--thin", action="store_true", help="also build and measure a 1.25 mm series padded with "
                    "-3024 HU outside the scan circle, and a follow-up comparison of two such scans")
    ap.add_argument("--keep", help="build the series here (outside the repository) and keep it")
    args = ap.parse_args()
    if not LIDC.is_dir():
        print(f"shared data not available: {LIDC}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="pulmo-bench-") as tmp:
        tmp = Path(args.keep) if args.keep else Path(tmp)
        t = time.perf_counter()
        series = Path(args.series) if args.series else build_series(args.slices, tmp / "study")
        print(f"built {args.slices}-slice series in {time.perf_counter() - t:.1f} s ({series})")
        cases = [("lidc-idri-0001 (133 slices)", LIDC), (f"{args.slices}-slice series", series)]
        if args.thin:
            thin = build_series(0, tmp / "thin", thickness=1.25, pad_outside=True)
            cases.append((f"thin-slice series ({len(list(thin.iterdir()))} x 1.25 mm, -3024 padding)", thin))
        for label, src in cases:
            runs = [run_child("single", src, tmp / "out") for _ in range(args.repeat)]
            walls = [r["wall_s"] for r in runs]
            print(f"\n== {label}: {_stat(walls)} s from DICOM on disk to every output "
                  f"(+{runs[0]['import_s']:.2f} s imports), {args.repeat} runs; peak RSS "
                  f"{max(r['peak_rss_mb'] for r in runs):.0f} MB"
                  + (f" (background child {max(r['child_peak_rss_mb'] for r in runs):.0f} MB)"
                     if any(r["child_peak_rss_mb"] for r in runs) else ""))
            print(f"   {'total':<22s} {_stat(walls)}")
            for stage in runs[0]["timings"]:
                print(f"   {stage:<22s} {_stat([r['timings'].get(stage, 0.0) for r in runs])}")
        if args.thin:
            runs = [run_child("compare", thin, tmp / "cmp") for _ in range(args.repeat)]
            print(f"\n== compare of two thin-slice scans: {_stat([r['wall_s'] for r in runs])} s, peak RSS "
                  f"{max(r['peak_rss_mb'] for r in runs):.0f} MB")
            for stage in runs[0]["timings"]:
                print(f"   {stage:<22s} {_stat([r['timings'].get(stage, 0.0) for r in runs])}")
        if args.batch:
            root = tmp / "batch"
            root.mkdir(exist_ok=True)
            for i in range(args.batch):
                (root / f"case{i}").symlink_to(series, target_is_directory=True)
            for mode in ("batch-sequential", "batch-overlap"):
                r = run_child(mode, root, tmp / mode)
                print(f"\n== {mode}: {args.batch} studies in {r['wall_s']:.2f} s "
                      f"({r['wall_s'] / args.batch:.2f} s/study), peak RSS {r['peak_rss_mb']:.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
