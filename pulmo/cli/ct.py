"""``pulmo ct ...``: chest-CT analysis commands (analyze, segment, series)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from pulmo.cli import add_group
from pulmo.cli.types import number

MAX_FILE_MB = number(0, 1048576, lo_open=True)
RESCALE_INTERCEPT = number(-100000, 100000)
RESCALE_SLOPE = number(0, 100000, lo_open=True)
HU = number(-1024, 3071)
PERCENT = number(0, 100)
MAX_ONNX_THREADS = 1024


OUTPUT_HELP = ("output folder, replaced as a whole when complete; an existing folder only when it holds nothing but "
               "Pulmo's unchanged files (its .pulmo-manifest.json lists them)")


def _add_common(p, segment_only: bool, study: bool = True) -> None:
    if study:
        p.add_argument("input", help="DICOM folder or zip, NIfTI/NRRD/MHA file, PNG/JPG image or folder of PNG/JPG "
                                     "slices (needs lung and lesion models); with --batch a folder of studies")
        p.add_argument("-o", "--output", required=True, help=OUTPUT_HELP)
        p.add_argument("--batch", action="store_true", help="INPUT is a folder of studies (sub-folders, zips, files); "
                       "writes OUTPUT/<study>/ and OUTPUT/summary.csv")
    p.add_argument("--series", help="SeriesInstanceUID to analyse when a folder holds several (see 'pulmo ct series')")
    p.add_argument("--no-hu", action="store_true", help="treat the input as 8-bit images, not Hounsfield units")
    p.add_argument("--max-file-mb", type=MAX_FILE_MB, default=1024.0,
                   help=f"refuse any file larger than this (default 1024; {MAX_FILE_MB.range_text})")
    p.add_argument("--rescale-intercept", type=RESCALE_INTERCEPT,
                   help=f"intercept for DICOM images that lack rescale tags ({RESCALE_INTERCEPT.range_text})")
    p.add_argument("--rescale-slope", type=RESCALE_SLOPE,
                   help=f"slope for DICOM images that lack rescale tags ({RESCALE_SLOPE.range_text})")
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
    if not segment_only and study:
        p.add_argument("--json", action="store_true", help="print results.json to standard output")
        p.add_argument("--no-dicom", action="store_true", help="skip DICOM SEG/SR/SC outputs")
        p.add_argument("--ggo-hu", type=HU, nargs=2, metavar=("LO", "HI"), default=(-750.0, -300.0),
                       help="ground-glass band in HU (default -750 -300; each -1024 to 3071, LO < HI)")
        p.add_argument("--consolidation-hu", type=HU, nargs=2, metavar=("LO", "HI"), default=(-300.0, 100.0),
                       help="consolidation band in HU (default -300 100; each -1024 to 3071, LO < HI)")
        from pulmo.ct.quantify import ScoreParams

        p.add_argument("--pneumonia-threshold", type=PERCENT, default=None,
                       help="percent of lung involved at which the pneumonia flag is set (default "
                            f"{ScoreParams.pneumonia_threshold_pct:g}, the analysis default; 0 to 100)")


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
    p = sub.add_parser(
        "compare", help="follow-up comparison of two or more scans of one patient",
        description="Compare chest CTs of one patient over time: lesion volume, percent involved, ground glass and "
        "consolidation per lung and region at each time point and their change, a voxel change map after "
        "registration (rigid, then affine), a verdict per region and overall (progression, regression, stable: "
        "a change of at least max(5 mL, 25 %% of the prior lesion)). Writes comparison.json, change_map.nii.gz, "
        "compare.html and, from DICOM, sr_change.dcm. See docs/ct.md, 'Follow-up comparison'.")
    p.add_argument("scans", nargs="+", metavar="SCAN", help="PRIOR CURRENT [MORE ...]: DICOM folders or zips, NIfTI, "
                   "NRRD or MHA (put in study-date order when every scan is DICOM with a date)")
    p.add_argument("-o", "--output", required=True, help=OUTPUT_HELP)
    p.add_argument("--allow-different-patients", action="store_true",
                   help="compare scans whose PatientID/PatientName differ (said in the outputs)")
    p.add_argument("--min-lung-dice", type=number(0, 1, lo_open=True), default=0.7,
                   help="refuse the comparison when the registered lungs overlap less than this (default 0.7)")
    p.add_argument("--json", action="store_true", help="print comparison.json to standard output")
    _add_common(p, segment_only=False, study=False)
    p.set_defaults(func=_compare)
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
    if not (math.isfinite(args.max_file_mb) and args.max_file_mb > 0):  # the type refuses it on the command line
        raise InputError(f"--max-file-mb must be {MAX_FILE_MB.range_text}")
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
        threads=_env_threads(threads_env),
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
            raise InputError("--ggo-hu and --consolidation-hu: give each band as LO HI with LO < HI")
        opts.lesions.ggo_hu, opts.lesions.consolidation_hu = (lo, hi), (clo, chi)
        if args.pneumonia_threshold is not None:
            opts.score.pneumonia_threshold_pct = args.pneumonia_threshold
        opts.write_dicom = not args.no_dicom
    return opts


def _env_threads(text: str) -> int | None:
    """PULMO_ONNX_THREADS as a number of threads (1 to 1024), or None (onnxruntime's choice) for
    anything else."""
    if text.isascii() and text.isdigit() and len(text) <= 6 and 0 < int(text) <= MAX_ONNX_THREADS:
        return int(text)
    return None


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


def _compare(args) -> int:
    import warnings

    warnings.filterwarnings("ignore", category=UserWarning, module=r"(pydicom|highdicom)\b.*")
    from pulmo.ct.compare import CompareOptions, compare
    from pulmo.ct.outputs import check_output_location
    from pulmo.ct.report.compare_out import write_comparison
    from pulmo.errors import InputError

    if len(args.scans) < 2:
        raise InputError("give at least two scans: PRIOR CURRENT [MORE ...]")
    for scan in args.scans:
        check_output_location(scan, args.output)
    opts = CompareOptions(analysis=analysis_options(args), allow_different_patients=args.allow_different_patients,
                          min_lung_dice=args.min_lung_dice)
    bar = _StageBar(len(args.scans) + 1, "pulmo ct compare", "stage", args.no_progress)
    try:
        c = compare(args.scans, opts, progress=bar)
        files = write_comparison(c, args.output)
    finally:
        bar.close()
    d = c.to_dict()
    if args.json:
        print(json.dumps(d, indent=2))
        return 0
    print(f"outputs written to {args.output}: {', '.join(files)}")
    for w in d["warnings"]:
        print(f"warning [{w['code']}]: {w['message']}")
    t = d["change"]["lungs"]["total"]
    print(f"{d['change']['from']} -> {d['change']['to']}: lesion {t['lesion_ml']:+.1f} mL, involved "
          f"{t['percent_involved']:+.2f} points (GGO {t['ggo_ml']:+.1f} mL, consolidation {t['consolidation_ml']:+.1f} mL); "
          f"overall: {d['verdict']['overall']}")
    for name, v in d["verdict"]["regions"].items():
        if v != "stable":
            print(f"  {name}: {v} ({d['change']['regions'][name]['lesion_ml']:+.1f} mL)")
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
