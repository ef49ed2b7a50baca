"""DICOM outputs with highdicom: SEG (three instances in one series: lungs, regions,
lesions), a Comprehensive 3D SR following TID 1500 (measurements per lung and
region, each group referencing its SEG segment) and Secondary Capture images with
the overlay burned in (for viewers that cannot show SEG).

SEG frames are aligned with the source slices: every source image's plane is
resampled (nearest neighbour) from the canonical label maps, so this also works
after gap filling / tilt correction.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import threading
import time
from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import SegmentationStorage

from pulmo import __version__
from pulmo.ct import LESION_LABELS, LOBE_LABELS, LUNG_LABELS, ZONE_LABELS

MANUFACTURER = "Pulmo (research software)"
ANATOMY = CodedConcept("123037004", "SCT", "Anatomical Structure")
ABNORMAL = CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
RIGHT_LUNG = CodedConcept("3341006", "SCT", "Right lung")
LEFT_LUNG = CodedConcept("44029006", "SCT", "Left lung")
LESION = CodedConcept("52988006", "SCT", "Lesion")
VOLUME = CodedConcept("118565006", "SCT", "Volume")
ML = CodedConcept("ml", "UCUM", "milliliter")
PERCENT = CodedConcept("%", "UCUM", "percent")
HU = CodedConcept("[hnsf'U]", "UCUM", "Hounsfield unit")
NO_UNITS = CodedConcept("1", "UCUM", "no units")
ATTENUATION = CodedConcept("112031", "DCM", "Attenuation Coefficient")
MEAN = CodedConcept("373098007", "SCT", "Mean")
# Concepts without a standard code use a private coding scheme.
LESION_VOLUME = CodedConcept("PULMO001", "99PULMO", "Lesion volume")
GGO_VOLUME = CodedConcept("PULMO002", "99PULMO", "Ground-glass opacity volume")
CONS_VOLUME = CodedConcept("PULMO003", "99PULMO", "Consolidation volume")
PCT_INVOLVED = CodedConcept("PULMO004", "99PULMO", "Percent of region involved by lesion")
SEVERITY = CodedConcept("PULMO005", "99PULMO", "CT severity score")
REGION_SCORE = CodedConcept("PULMO006", "99PULMO", "Region severity score 0-5")


def labels_on_source(vol, labels: np.ndarray) -> np.ndarray:
    """Label map resampled onto the source slices: (n_images, rows, cols), sorted headers' order."""
    ser = vol.dicom
    n = len(ser.headers)
    rows, cols = int(ser.headers[0].Rows), int(ser.headers[0].Columns)
    if (not vol.meta.get("resampled") and vol.native_exact and labels.shape == (n, rows, cols)
            and np.allclose(ser.row_dir, (1, 0, 0)) and np.allclose(ser.col_dir, (0, 1, 0))
            and np.allclose(ser.normal, (0, 0, 1))):
        return labels
    img = vol.canonical_image(labels)
    out = np.zeros((n, rows, cols), np.uint8)
    direction = np.column_stack([ser.row_dir, ser.col_dir, ser.normal]).ravel().tolist()
    for i, h in enumerate(ser.headers):
        ref = sitk.Image([cols, rows, 1], sitk.sitkUInt8)
        ref.SetSpacing([ser.pixel_spacing[1], ser.pixel_spacing[0], 1.0])
        ref.SetOrigin([float(v) for v in h.ImagePositionPatient])
        ref.SetDirection(direction)
        out[i] = sitk.GetArrayFromImage(sitk.Resample(img, ref, sitk.Transform(), sitk.sitkNearestNeighbor, 0))[0]
    return out


def _algorithm(method: str) -> hd.AlgorithmIdentificationSequence:
    family = codes.cid7162.ArtificialIntelligence if "model" in method else codes.cid7162.MorphologicalOperations
    return hd.AlgorithmIdentificationSequence(name=f"Pulmo {method}"[:64], version=__version__, family=family)


def _segment(number, label, category, prop_type, method):
    return hd.seg.SegmentDescription(
        segment_number=number, segment_label=label[:64], segmented_property_category=category,
        segmented_property_type=prop_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=_algorithm(method), tracking_uid=hd.UID(), tracking_id=label[:64])


SEG_NAMES = ("lungs", "regions", "lesions")  # instance numbers 1, 2, 3 of the SEG series


def _seg_specs(name: str, region_kind: str) -> list:
    if name == "lungs":
        return [(k, v, ANATOMY, RIGHT_LUNG if k == 1 else LEFT_LUNG) for k, v in LUNG_LABELS.items()]
    if name == "regions":
        names = LOBE_LABELS if region_kind == "lobes" else ZONE_LABELS
        return [(k, v, ANATOMY, RIGHT_LUNG if v.startswith("right") else LEFT_LUNG) for k, v in names.items()]
    return [(k, v, ABNORMAL, LESION) for k, v in LESION_LABELS.items()]


def write_one_seg(vol, name: str, arr: np.ndarray, region_kind: str, method: str, series_uid: str,
                  sop_uid: str, outdir: Path) -> dict | None:
    """Write ``seg_<name>.dcm`` (BINARY, empty frames omitted); returns {segment label: number}
    or None when the map is empty (no file)."""
    on_src = labels_on_source(vol, arr)
    counts = np.zeros(256, np.int64)
    for z0 in range(0, on_src.shape[0], 16):  # in chunks: bincount converts to int64 (8x the uint8 map)
        counts += np.bincount(on_src[z0:z0 + 16].ravel(), minlength=256)
    present = [s for s in _seg_specs(name, region_kind) if counts[s[0]] > 0]
    if not present:
        return None
    # renumber present segments 1..n (SEG segment numbers must start at 1 and be contiguous)
    lut = np.zeros(256, np.uint8)
    descs = []
    for i, (k, label, cat, typ) in enumerate(present, start=1):
        lut[k] = i
        descs.append(_segment(i, label, cat, typ, method))
    seg = hd.seg.Segmentation(
        source_images=vol.dicom.headers, pixel_array=lut[on_src],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, omit_empty_frames=True,
        segment_descriptions=descs, series_instance_uid=series_uid, series_number=9001,
        sop_instance_uid=sop_uid, instance_number=SEG_NAMES.index(name) + 1, manufacturer=MANUFACTURER,
        manufacturer_model_name="Pulmo chest CT", software_versions=__version__, device_serial_number="0",
        content_description=f"Pulmo {name}"[:64], content_label=name.upper()[:16],
        series_description="Pulmo segmentation")
    seg.save_as(Path(outdir) / f"seg_{name}.dcm")
    return {label: i for i, (_, label, _, _) in enumerate(present, start=1)}


def _seg_stub(vol, series_uid: str, sop_uid: str) -> Dataset:
    """The identifying attributes of a written SEG (what the SR references and lists as evidence)."""
    ds = Dataset()
    ds.SOPClassUID = SegmentationStorage
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = vol.dicom.headers[0].StudyInstanceUID
    ds.SeriesInstanceUID = series_uid
    return ds


def _run_in_child(conn, fn, args) -> None:  # pragma: no cover - runs in the forked child
    t0 = time.perf_counter()
    try:
        conn.send(("ok", fn(*args), time.perf_counter() - t0))
    except BaseException as exc:  # noqa: BLE001 - reported to the parent
        conn.send(("error", f"{type(exc).__name__}: {exc}", time.perf_counter() - t0))
    finally:
        conn.close()
        os._exit(0)


def _cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


class SegWriter:
    """Writes the three SEG instances of one series, in background processes when possible.

    Building and saving a SEG with highdicom is pure-Python pydicom work (per-frame
    functional groups) that holds the GIL, so threads do not help; each label map is
    instead written by a *forked* child process as soon as it is final (``submit``),
    overlapping with the rest of the pipeline. The child sees the parent's arrays
    (copy-on-write, nothing is pickled) and reports back only the segment numbering.
    At most one child runs at a time. ``parallel=None`` (default) uses children only with
    at least 4 CPUs: on the 2-core development machine, busy with other jobs, the children
    made the whole run 1.5-2.5 s *slower* (competition for the cores, copy-on-write and
    per-process start-up), so there the SEGs are written in-process by ``finish``. Also
    in-process where ``fork`` is unavailable or other threads are running (forking a
    multi-threaded process is unsafe). ``finish`` waits and raises
    ``RuntimeError`` (an internal error, not bad input) if a child failed; ``cancel`` stops
    the children.
    """

    def __init__(self, vol, outdir: Path, region_kind: str = "zones", parallel: bool | None = None):
        self.vol, self.outdir, self.region_kind = vol, Path(outdir), region_kind
        self.series_uid = hd.UID()
        if parallel is None:  # $PULMO_CT_SEG_BACKGROUND=1/0 forces; auto: only with CPUs to spare
            env = os.environ.get("PULMO_CT_SEG_BACKGROUND", "auto").strip().lower()
            parallel = env in ("1", "yes", "true", "on") if env != "auto" else _cpus() >= 4
        self.parallel = (parallel and "fork" in mp.get_all_start_methods()
                         and threading.active_count() == 1)
        self.jobs: dict = {}
        self.pending: list = []
        self.child_seconds = 0.0

    def submit(self, name: str, arr: np.ndarray, method: str, region_kind: str | None = None) -> None:
        if region_kind is not None:
            self.region_kind = region_kind
        sop_uid = hd.UID()
        args = (self.vol, name, arr, self.region_kind, method, self.series_uid, sop_uid, self.outdir)
        self.pending.append((name, args, sop_uid))
        self.pump()

    def pump(self) -> None:
        """Start the next pending SEG when no child is running (one at a time: on two busy cores,
        more processes only compete with each other)."""
        if not self.parallel or not self.pending:
            return
        if any(p is not None and p.is_alive() for p, _, _ in self.jobs.values()):
            return
        name, args, sop_uid = self.pending.pop(0)
        ctx = mp.get_context("fork")
        recv, send = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_run_in_child, args=(send, write_one_seg, args), daemon=True)
        proc.start()
        send.close()
        self.jobs[name] = (proc, recv, sop_uid)

    def finish(self, timeout_s: float = 900.0) -> tuple[list[Path], dict]:
        """Wait for every submitted SEG; returns (paths, {name: (stub dataset, {label: number})})."""
        paths, segs = [], {}
        try:
            if not self.parallel:  # in-process, now
                for name, args, sop_uid in self.pending:
                    t0 = time.perf_counter()
                    self.jobs[name] = (None, write_one_seg(*args), sop_uid)
                    self.child_seconds += time.perf_counter() - t0
                self.pending = []
            for name in SEG_NAMES:
                while name not in self.jobs and any(n == name for n, _, _ in self.pending):
                    running = [(n, j) for n, j in self.jobs.items() if j[0] is not None and j[0].is_alive()]
                    for _, (p, _, _) in running:
                        p.join()
                    self.pump()
                if name not in self.jobs:
                    continue
                proc, res, sop_uid = self.jobs[name]
                if proc is not None:
                    status, res, secs = self._receive(name, proc, res, timeout_s)
                    self.child_seconds += secs
                    if status != "ok":
                        raise RuntimeError(f"writing seg_{name}.dcm failed in the background process: {res}")
                if res is None:
                    continue
                paths.append(self.outdir / f"seg_{name}.dcm")
                segs[name] = (_seg_stub(self.vol, self.series_uid, sop_uid), res)
        finally:
            self.cancel()
        return paths, segs

    @staticmethod
    def _receive(name, proc, conn, timeout_s):
        try:
            if not conn.poll(timeout_s):
                raise RuntimeError(f"writing seg_{name}.dcm timed out after {timeout_s:.0f} s")
            return conn.recv()
        except (EOFError, OSError):
            return "error", f"the writer process died (exit code {proc.exitcode})", 0.0
        finally:
            conn.close()
            proc.join(5)

    def cancel(self) -> None:
        self.pending = []
        for name, (proc, conn, _) in list(self.jobs.items()):
            if proc is not None:
                if proc.is_alive():
                    proc.terminate()
                proc.join(5)
                try:
                    conn.close()
                except (OSError, AttributeError):
                    pass
        self.jobs = {k: v for k, v in self.jobs.items() if v[0] is None}


def write_seg(vol, lungs, regions, region_kind, lesions, methods: dict, outdir: Path):
    """The three SEG instances (one series), written in-process; returns (paths, segs) as
    :meth:`SegWriter.finish`."""
    w = SegWriter(vol, outdir, region_kind, parallel=False)
    for name, arr in (("lungs", lungs), ("regions", regions), ("lesions", lesions)):
        w.submit(name, arr, methods[name])
    return w.finish()


def _measurements(st: dict, score: int | None = None) -> list:
    ms = [hd.sr.Measurement(name=VOLUME, value=st["volume_ml"], unit=ML),
          hd.sr.Measurement(name=LESION_VOLUME, value=st["lesion_ml"], unit=ML),
          hd.sr.Measurement(name=GGO_VOLUME, value=st["ggo_ml"], unit=ML),
          hd.sr.Measurement(name=CONS_VOLUME, value=st["consolidation_ml"], unit=ML)]
    if st.get("percent_involved") is not None:
        ms.append(hd.sr.Measurement(name=PCT_INVOLVED, value=st["percent_involved"], unit=PERCENT))
    if st.get("mean_lesion_hu") is not None:
        ms.append(hd.sr.Measurement(name=ATTENUATION, value=st["mean_lesion_hu"], unit=HU, derivation=MEAN))
    if score is not None:
        ms.append(hd.sr.Measurement(name=REGION_SCORE, value=score, unit=NO_UNITS))
    return ms


def _ref_segment(vol, seg, number: int) -> hd.sr.ReferencedSegment:
    """A reference to one SEG segment and, as its source, the CT series (by UID).

    ``ReferencedSegment.from_segmentation`` would list every source image of the segment in
    every measurement group (hundreds of items each); the series reference is equivalent
    (TID 1411 allows either) and the images are listed once, as evidence.
    """
    return hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
        source_series=hd.sr.SourceSeriesForSegmentation(vol.dicom.headers[0].SeriesInstanceUID))


def write_sr(vol, segs: dict, quant: dict, outdir: Path) -> Path | None:
    if "lungs" not in segs:
        return None
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), manufacturer_name=MANUFACTURER, model_name="Pulmo chest CT"))
    groups = []
    lung_seg, lung_nums = segs["lungs"]
    for side, label, site in (("right", LUNG_LABELS[1], RIGHT_LUNG), ("left", LUNG_LABELS[2], LEFT_LUNG)):
        if label not in lung_nums:
            continue
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
            referenced_segment=_ref_segment(vol, lung_seg, lung_nums[label]),
            finding_type=codes.SCT.Lung, finding_sites=[hd.sr.FindingSite(site)],
            measurements=_measurements(quant["lungs"][side])))
    if "regions" in segs:
        reg_seg, reg_nums = segs["regions"]
        for r in quant["regions"]:
            if r["name"] not in reg_nums:
                continue
            site = RIGHT_LUNG if r["name"].startswith("right") else LEFT_LUNG
            groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=r["name"]),
                referenced_segment=_ref_segment(vol, reg_seg, reg_nums[r["name"]]),
                finding_type=codes.SCT.Lung, finding_sites=[hd.sr.FindingSite(site)],
                measurements=_measurements(r, r.get("score"))))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_person_context=None, observer_device_context=observer),
        procedure_reported=CodedConcept("25045-6", "LN", "CT unspecified body region"),
        imaging_measurements=groups, title=codes.cid7021.ImagingMeasurementReport)
    evidence = list(vol.dicom.headers) + [s for s, _ in segs.values()]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report, series_instance_uid=hd.UID(), series_number=9002,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer=MANUFACTURER,
        series_description="Pulmo measurements", is_complete=True, is_final=False, is_verified=False)
    path = outdir / "sr_measurements.dcm"
    sr.save_as(path)
    return path


def write_sc(vol, images: list[tuple[str, np.ndarray, int, tuple[str, str]]], outdir: Path) -> list[Path]:
    """Secondary Capture images: (name, rgb, reference header index, patient orientation)."""
    series_uid = hd.UID()
    paths = []
    for i, (name, rgb, ref_idx, orient) in enumerate(images, start=1):
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=vol.dicom.headers[ref_idx], pixel_array=np.ascontiguousarray(rgb),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB, bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT, series_instance_uid=series_uid, series_number=9003,
            sop_instance_uid=hd.UID(), instance_number=i, manufacturer=MANUFACTURER, patient_orientation=orient,
            series_description="Pulmo key images (overlay burned in)")
        sc.Laterality = ""  # Type 2C (General Series): both lungs shown, so empty
        path = outdir / f"sc_{name}.dcm"
        sc.save_as(path)
        paths.append(path)
    return paths
