"""DICOM outputs with highdicom: SEG (three instances in one series: lungs, regions,
lesions), a Comprehensive 3D SR following TID 1500 (measurements per lung and
region, each group referencing its SEG segment) and Secondary Capture images with
the overlay burned in (for viewers that cannot show SEG).

SEG frames are aligned with the source slices: every source image's plane is
resampled (nearest neighbour) from the canonical label maps, so this also works
after gap filling / tilt correction.
"""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import SimpleITK as sitk
from highdicom.sr import CodedConcept
from pydicom.sr.codedict import codes

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


def write_seg(vol, lungs, regions, region_kind, lesions, methods: dict, outdir: Path) -> list[Path]:
    """Three SEG instances (one series); returns their paths."""
    sources = vol.dicom.headers
    series_uid = hd.UID()
    paths = []
    region_names = LOBE_LABELS if region_kind == "lobes" else ZONE_LABELS
    specs = [
        ("lungs", lungs, [(k, v, ANATOMY, RIGHT_LUNG if k == 1 else LEFT_LUNG) for k, v in LUNG_LABELS.items()],
         methods["lungs"]),
        ("regions", regions, [(k, v, ANATOMY, RIGHT_LUNG if v.startswith("right") else LEFT_LUNG)
                              for k, v in region_names.items()], methods["regions"]),
        ("lesions", lesions, [(k, v, ABNORMAL, LESION) for k, v in LESION_LABELS.items()], methods["lesions"]),
    ]
    segs = {}
    for inst, (name, arr, seg_specs, method) in enumerate(specs, start=1):
        on_src = labels_on_source(vol, arr)
        present = [s for s in seg_specs if (on_src == s[0]).any()]
        if not present:
            continue
        # renumber present segments 1..n (SEG segment numbers must start at 1 and be contiguous)
        lut = np.zeros(256, np.uint8)
        descs = []
        for i, (k, label, cat, typ) in enumerate(present, start=1):
            lut[k] = i
            descs.append(_segment(i, label, cat, typ, method))
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=lut[on_src], segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descs, series_instance_uid=series_uid, series_number=9001,
            sop_instance_uid=hd.UID(), instance_number=inst, manufacturer=MANUFACTURER,
            manufacturer_model_name="Pulmo chest CT", software_versions=__version__, device_serial_number="0",
            content_description=f"Pulmo {name}"[:64], content_label=name.upper()[:16], series_description="Pulmo segmentation")
        path = outdir / f"seg_{name}.dcm"
        seg.save_as(path)
        paths.append(path)
        segs[name] = (seg, {label: i for i, (_, label, _, _) in enumerate(present, start=1)})
    return paths, segs


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
            referenced_segment=hd.sr.ReferencedSegment.from_segmentation(lung_seg, lung_nums[label]),
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
                referenced_segment=hd.sr.ReferencedSegment.from_segmentation(reg_seg, reg_nums[r["name"]]),
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
