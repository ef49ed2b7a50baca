"""``pulmo ct ...``: chest-CT analysis commands (analyze, segment, series)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pulmo.cli import add_group


def _add_common(p, segment_only: bool) -> None:
    p.add_argument("input", help="DICOM folder or zip, NIfTI/NRRD/MHA file, PNG/JPG image or folder of PNG/JPG "
                                 "slices (needs lung and lesion models); with --batch a folder of studies")
    p.add_argument("-o", "--output", required=True, help="output folder (replaced atomically when complete)")
    p.add_argument("--batch", action="store_true", help="INPUT is a folder of studies (sub-folders, zips, files); "
                   "writes OUTPUT/<study>/ and OUTPUT/summary.csv")
    p.add_argument("--series", help="SeriesInstanceUID to analyse when a folder holds several (see 'pulmo ct series')")
    p.add_argument("--no-hu", action="store_true", help="treat the input as 8-bit images, not Hounsfield units")
    p.add_argument("--max-file-mb", type=float, default=1024.0, help="refuse any file larger than this (default 1024)")
    p.add_argument("--rescale-intercept", type=float, help="intercept for DICOM images that lack rescale tags")
    p.add_argument("--rescale-slope", type=float, help="slope for DICOM images that lack rescale tags")
    p.add_argument("--seg-model", help="Pulmo lung + lesion network (default: the shipped pulmo/ct/models/seg.onnx for CT "
                   "in HU, seg_8bit.onnx for 8-bit images; "
                   "'none' for the classical density analysis). If it cannot load, CT volumes fall back to "
                   "density analysis with a warning in results.json")
    p.add_argument("--lung-model", help="plug-in ONNX lung model (default: $PULMO_CT_MODELS/lungs.onnx if present; "
                   "overrides the shipped model for lungs)")
    p.add_argument("--lobe-model", help="plug-in ONNX lobe model (default: $PULMO_CT_MODELS/lobes.onnx if present)")
    p.add_argument("--lobe-tool", metavar="CMD", help="installed external lobe program, run as CMD with {input} and "
                   "{output} replaced by NIfTI paths, e.g. 'lungmask {input} {output} --modelname LTRCLobes' "
                   "(default: $PULMO_CT_LOBE_TOOL). If it fails, zones are used and results.json says why")
    p.add_argument("--lobe-labels", metavar="SCHEME", help="the tool's lobe numbering: lungmask (default), "
                   "totalsegmentator, pulmo, or pairs 'tool=pulmo,...' with Pulmo lobes 1 RUL 2 RML 3 RLL 4 LUL 5 LLL")
    p.add_argument("--lesion-model", help="plug-in ONNX lesion model (default: $PULMO_CT_MODELS/lesions.onnx if "
                   "present; overrides the shipped model for lesions)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    if not segment_only:
        p.add_argument("--json", action="store_true", help="print results.json to standard output")
        p.add_argument("--no-dicom", action="store_true", help="skip DICOM SEG/SR/SC outputs")
        p.add_argument("--ggo-hu", type=float, nargs=2, metavar=("LO", "HI"), default=(-750.0, -300.0),
                       help="ground-glass band in HU (default -750 -300)")
        p.add_argument("--consolidation-hu", type=float, nargs=2, metavar=("LO", "HI"), default=(-300.0, 100.0),
                       help="consolidation band in HU (default -300 100)")
        p.add_argument("--pneumonia-threshold", type=float, default=10.0,
                       help="percent of lung involved at which the pneumonia flag is set (default 10)")


def register(subparsers) -> None:
    sub = add_group(subparsers, "ct", "Chest-CT analysis: lungs, lesions (ground glass, consolidation), "
                    "per-region quantification, severity score, report and DICOM results.")
    p = sub.add_parser("analyze", help="full analysis: masks, results.json, report.html, DICOM SEG/SR/SC",
                       description="Analyse a chest CT. Writes results.json, lungs/lesions/regions.nii.gz "
                       "(input geometry), report.html and, from DICOM, SEG + TID 1500 SR + Secondary Capture.")
    _add_common(p, segment_only=False)
    p.set_defaults(func=_run)
    p = sub.add_parser("segment", help="fast path: only lungs/lesions/regions masks",
                       description="Write only lungs.nii.gz, lesions.nii.gz and regions.nii.gz (and results.json). "
                       "For a folder of 8-bit PNG/JPG slices: <stem>_lungs.png and <stem>_lesions.png per image "
                       "(the image's size; values 0/1/2), results.json and summary.csv (percent involved per image). "
                       "An image that cannot be segmented (colour, 16-bit, blank, unreadable, no lung) is listed in "
                       "summary.csv with its reason and the others are still written (exit status 1).")
    _add_common(p, segment_only=True)
    p.set_defaults(func=_run)
    p = sub.add_parser("series", help="list the series in a DICOM folder or zip")
    p.add_argument("input")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_series)
    try:  # `pulmo ct evaluate`: Dice of predicted 2D masks against ground truth
        from pulmo.cli.ct_evaluate import add_command
    except ImportError:
        pass
    else:
        add_command(sub)


def analysis_options(args, environ=None):
    """The :class:`pulmo.ct.AnalysisOptions` of a ``pulmo ct`` command: its flags, then the
    environment variables ``PULMO_CT_MODELS`` (a folder of plug-in models, or ``none`` for the
    classical density method only), ``PULMO_CT_LOBE_TOOL`` / ``PULMO_CT_LOBE_LABELS`` (an
    external lobe program) and ``PULMO_ONNX_THREADS`` (onnxruntime threads)."""
    import math
    import os

    from pulmo.ct.io import LoadOptions
    from pulmo.ct.options import AnalysisOptions
    from pulmo.errors import InputError

    env = os.environ if environ is None else environ
    if not (math.isfinite(args.max_file_mb) and args.max_file_mb > 0):
        raise InputError("--max-file-mb must be a positive number")
    models_env = env.get("PULMO_CT_MODELS", "").strip()
    models_off = models_env.lower() == "none"
    seg_off = models_off or (args.seg_model or "").strip().lower() == "none"
    threads_env = env.get("PULMO_ONNX_THREADS", "").strip()
    lobe_tool = args.lobe_tool or env.get("PULMO_CT_LOBE_TOOL", "").strip() or None
    lobe_labels = args.lobe_labels or env.get("PULMO_CT_LOBE_LABELS", "").strip() or "lungmask"
    opts = AnalysisOptions(
        load=LoadOptions(max_file_bytes=int(args.max_file_mb * 2**20), series_uid=args.series, no_hu=args.no_hu,
                         rescale_slope=args.rescale_slope, rescale_intercept=args.rescale_intercept),
        shipped_network=not seg_off, seg_model=None if seg_off else args.seg_model,
        plugin_models=not models_off, models_dir=None if models_off or not models_env else models_env,
        lung_model=args.lung_model, lobe_model=args.lobe_model, lesion_model=args.lesion_model,
        lobe_tool=lobe_tool, lobe_tool_labels=lobe_labels,
        threads=int(threads_env) if threads_env.isdigit() and int(threads_env) > 0 else None,
        segment_only=args.command == "segment")
    if args.lobe_tool or args.lobe_labels:  # check the command and scheme before any work
        from pulmo.ct.segment.lobe_tool import ExternalLobeTool, parse_scheme

        if args.lobe_tool:
            ExternalLobeTool(args.lobe_tool, lobe_labels)
        else:
            parse_scheme(args.lobe_labels)
    if hasattr(args, "ggo_hu"):
        lo, hi = args.ggo_hu
        clo, chi = args.consolidation_hu
        if not (lo < hi and clo < chi):
            raise InputError("HU bands must be given as LO HI with LO < HI")
        opts.lesions.ggo_hu, opts.lesions.consolidation_hu = (lo, hi), (clo, chi)
        opts.score.pneumonia_threshold_pct = args.pneumonia_threshold
        opts.write_dicom = not args.no_dicom
    return opts


class _StageBar:
    """A progress callback (``progress(stage, done)``) drawing a tqdm bar on standard error."""

    def __init__(self, total: int, desc: str, unit: str, disable: bool):
        from tqdm import tqdm

        self.bar = tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=True if disable else None,
                        leave=False)

    def __call__(self, stage: str, done: bool) -> None:
        if done:
            self.bar.update(1)
        else:
            self.bar.set_description(stage)

    def close(self) -> None:
        self.bar.close()


def _run(args) -> int:
    import warnings

    # pydicom/highdicom warn about harmless quirks of real-world headers; results.json carries ours.
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(pydicom|highdicom)\b.*")

    from pulmo.ct import analyze, analyze_batch, write_outputs
    from pulmo.ct.batch import batch_items
    from pulmo.ct.outputs import check_output_location

    opts = analysis_options(args)
    if args.batch:
        bar = _StageBar(len(batch_items(Path(args.input))), "studies", "study", args.no_progress)
        try:
            rows = analyze_batch(args.input, args.output, opts, progress=bar)
        finally:
            bar.close()
        failed = [r for r in rows if r["status"] != "ok"]
        print(f"{len(rows) - len(failed)} of {len(rows)} studies analysed; summary: {Path(args.output) / 'summary.csv'}",
              file=sys.stderr)
        for r in failed:
            print(f"  {r['case']}: {r['error']}", file=sys.stderr)
        return 1 if failed else 0
    check_output_location(args.input, args.output)
    bar = _StageBar(5 if opts.segment_only else 10, "pulmo ct", "stage", args.no_progress)
    try:
        analysis = analyze(args.input, opts, progress=bar)
        write_outputs(analysis, args.output, progress=bar, source=args.input)
    finally:
        bar.close()
    results = analysis.to_dict()
    if getattr(args, "json", False):
        print(json.dumps(results, indent=2, default=str))
    else:
        _print_summary(results, args.output)
    failed = [i for i in results.get("images", []) if i.get("status") == "error"]
    if failed:  # a folder of 2D images: the others were written
        print(f"{len(failed)} of {len(results['images'])} images could not be segmented (no masks written for them):",
              file=sys.stderr)
        for i in failed:
            print(f"  {i['name']}: {i['error']}", file=sys.stderr)
        return 1
    return 0


def _flag_text(flag) -> str:
    return "POSITIVE" if flag is True else ("INDETERMINATE" if flag == "indeterminate" else "negative")


def _print_summary(results: dict, outdir) -> None:
    print(f"outputs written to {outdir}: {', '.join(results.get('outputs', []))}")
    for w in results.get("warnings", []):
        print(f"warning [{w['code']}]: {w['message']}")
    q = results.get("quantification")
    if q:
        t = q["lungs"]["total"]
        print(f"lungs: right {q['lungs']['right']['volume_ml']:.0f} mL, left {q['lungs']['left']['volume_ml']:.0f} mL; "
              f"involved {t['percent_involved']:.1f} % (GGO {t['ggo_ml']:.0f} mL, consolidation {t['consolidation_ml']:.0f} mL)")
        if results.get("assessable"):
            print(f"{q['severity']['name']}: {q['severity']['value']}/{q['severity']['max']}; pneumonia flag: "
                  f"{_flag_text(q['pneumonia']['flag'])} "
                  f"(score {q['pneumonia']['score']:.1f} %, threshold {q['pneumonia']['threshold']:.1f} %)")
            if q["pneumonia"].get("reason"):
                print(f"  why indeterminate: {q['pneumonia']['reason']}")
        else:
            print("not assessable: no severity score or pneumonia flag (see warnings)")




def _series(args) -> int:
    from pulmo.ct.io import list_series

    rows = list_series(args.input)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        flag = "eligible" if r["eligible"] else f"not eligible: {r['reason']}"
        print(f"{r['series_uid'] or '(no SeriesInstanceUID)'}  {r['modality']}  {r['images']} images  "
              f"{r['orientation']}  {r['matrix']}  thickness {r['slice_thickness_mm']}  "
              f"'{r['description']}'  [{flag}]")
    return 0
