"""DICOM outputs with highdicom: one SEG (lungs, regions, lesions; see
:mod:`pulmo.ct.report.dicom_seg`), a Comprehensive 3D SR following TID 1500
(measurements per lung and region, each group referencing its SEG segment) and
Secondary Capture images with the overlay burned in (for viewers that cannot show SEG).
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

from pulmo.ct import LESION_LABELS, LOBE_LABELS, LUNG_LABELS, ZONE_LABELS
from pulmo.ct.report.dicom_seg import MANUFACTURER, LabelGroup, SegmentSpec, write_segmentation

ANATOMY = CodedConcept("123037004", "SCT", "Anatomical Structure")
ABNORMAL = CodedConcept("49755003", "SCT", "Morphologically Altered Structure")
RIGHT_LUNG = CodedConcept("3341006", "SCT", "Right lung")
LEFT_LUNG = CodedConcept("44029006", "SCT", "Left lung")
LESION = CodedConcept("52988006", "SCT", "Lesion")
NODULE = CodedConcept("27925004", "SCT", "Nodule")
NODULE_LABEL = "nodule / focal opacity"
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


#: Display colours of the segments (sRGB), as Pulmo's own viewer and key images draw them.
LUNG_RGB = {1: (40, 120, 255), 2: (40, 200, 120)}                  # right blue, left green
LESION_RGB = {"ground-glass": (255, 210, 0), "consolidation": (230, 40, 40)}
NODULE_RGB = (230, 0, 230)
REGION_RGB = ((66, 133, 244), (171, 71, 188), (0, 172, 193), (124, 179, 66), (255, 167, 38), (141, 110, 99))


def _seg_specs(name: str, region_kind: str) -> list[SegmentSpec]:
    if name == "lungs":
        return [SegmentSpec(k, v, ANATOMY, RIGHT_LUNG if k == 1 else LEFT_LUNG, LUNG_RGB.get(k))
                for k, v in LUNG_LABELS.items()]
    if name == "nodules":
        return [SegmentSpec(1, NODULE_LABEL, ABNORMAL, NODULE, NODULE_RGB)]
    if name == "regions":
        names = LOBE_LABELS if region_kind == "lobes" else ZONE_LABELS
        return [SegmentSpec(k, v, ANATOMY, RIGHT_LUNG if v.startswith("right") else LEFT_LUNG,
                            REGION_RGB[i % len(REGION_RGB)]) for i, (k, v) in enumerate(names.items())]
    return [SegmentSpec(k, v, ABNORMAL, LESION, next((c for n, c in LESION_RGB.items() if n in v.lower()), None))
            for k, v in LESION_LABELS.items()]


SEG_FILE = "seg.dcm"


def write_seg(vol, lungs, regions, region_kind, lesions, methods: dict, outdir: Path, nodules=None):
    """The DICOM SEG (one instance: lungs, regions, lesions and, when any, one "nodule / focal
    opacity" segment for every nodule together); returns ``(paths, segs)`` with
    ``segs`` = {map name: (SEG stub, {segment label: segment number})} for the SR."""
    nodule_map = (nodules > 0).astype(np.uint8) if nodules is not None and nodules.any() else None
    groups = [LabelGroup(name, arr, _seg_specs(name, region_kind), methods.get(name, ""))
              for name, arr in (("lungs", lungs), ("regions", regions), ("lesions", lesions),
                                ("nodules", nodule_map)) if arr is not None]
    path = Path(outdir) / SEG_FILE
    written = write_segmentation(vol, groups, path)
    if written is None:
        return [], {}
    stub, numbers = written
    return [path], {name: (stub, nums) for name, nums in numbers.items() if nums}


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
    seg_stubs = {s.SOPInstanceUID: s for s, _ in segs.values()}
    evidence = list(vol.dicom.headers) + list(seg_stubs.values())
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
