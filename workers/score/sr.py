"""An exam's score as DICOM: a Comprehensive SR, TID 1500 (Measurement Report), with highdicom.

So that a viewer or a research PACS shows the triage score beside the images, each scored exam
gets one SR in the same (pseudonymous) study:

- an observer *device* context and Contributing Equipment (purpose: Processing Equipment) that
  name the model, its version and its **Device UID** (IHE AI Results: the UID changes whenever the
  model does), and whose description carries "synthetic demo model, not for clinical use" for the
  demo model;
- one measurement group for the exam: the score (a number without units) and the category
  (a qualitative evaluation), with the algorithm's name and version; one group per scored view
  with its score and the image it was computed from;
- VerificationFlag UNVERIFIED: no person has checked it, and nothing here pretends otherwise.

UIDs are derived from the exam and the model's sha256, so writing the SR again (a redelivered
task) produces the same instance rather than a second one. Codes of our own use the private
scheme ``99DEIDGATE`` (DICOM PS3.16 8.2: a "99" prefix for local coding schemes).
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import highdicom as hd
from highdicom.sr import CodedConcept
from pydicom.dataset import Dataset

from workers.score.card import DEMO_NOTICE

SCHEME = "99DEIDGATE"
SCORE_CODE = CodedConcept("TRIAGE-SCORE", SCHEME, "Triage score")
VIEW_SCORE_CODE = CodedConcept("VIEW-SCORE", SCHEME, "Triage score of one view")
CATEGORY_CODE = CodedConcept("TRIAGE-CATEGORY", SCHEME, "Triage category")
CATEGORY_VALUES = {
    "likely-normal": CodedConcept("LIKELY-NORMAL", SCHEME, "Likely normal"),
    "standard": CodedConcept("STANDARD", SCHEME, "Standard"),
    "priority": CodedConcept("PRIORITY", SCHEME, "Priority"),
}
NO_UNITS = CodedConcept("1", "UCUM", "no units")
SCREENING_MAMMOGRAPHY = CodedConcept("24623002", "SCT", "Screening mammography")
PROCESSING_EQUIPMENT = CodedConcept("109102", "DCM", "Processing Equipment")
DEVICE_OBSERVER = CodedConcept("121007", "DCM", "Device")


@dataclass(frozen=True)
class SrModel:
    """The model identity the SR records."""

    name: str
    version: str
    device_uid: str
    sha256: str
    demo: bool


@dataclass(frozen=True)
class SrView:
    sop_instance_uid: str
    score: float


def _uid(*parts: str) -> str:
    digest = hashlib.sha256("\0".join(parts).encode()).digest()
    return f"2.25.{int.from_bytes(digest[:16], 'big')}"


def sr_uids(exam: str, model_sha256: str) -> tuple[str, str]:
    """(series UID, SOP instance UID) of the SR of this exam by this model: stable."""
    return _uid("sr-series", exam, model_sha256), _uid("sr-instance", exam, model_sha256)


# Type 2 attributes highdicom copies from the first image; de-identification removes some of
# them (birth date, sex...), and an empty value is what the standard says "unknown" is.
_TYPE2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate",
          "StudyTime", "ReferringPhysicianName", "AccessionNumber", "StudyID")


def _with_type2(ds: Dataset) -> Dataset:
    out = copy.copy(ds)
    for kw in _TYPE2:
        if kw not in out:
            setattr(out, kw, "")
    return out


def build_sr(evidence: Sequence[Dataset], *, exam_score: float, category: str,
             views: Sequence[SrView], model: SrModel, note: str | None = None) -> Dataset:
    """The SR dataset; ``evidence`` are the scored de-identified images (headers suffice)."""
    if not evidence:
        raise ValueError("an SR needs the images it reports on")
    evidence = [_with_type2(ds) for ds in evidence]
    exam = str(evidence[0].StudyInstanceUID)
    series_uid, sop_uid = sr_uids(exam, model.sha256)
    label = f"{model.name} {model.version}" + (f" ({DEMO_NOTICE})" if model.demo else "")
    algorithm = hd.sr.AlgorithmIdentification(name=model.name[:64], version=model.version)
    device = hd.sr.ObserverContext(
        observer_type=DEVICE_OBSERVER,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=model.device_uid, name=model.name[:64], manufacturer_name="deidgate",
            model_name=model.name[:64]))
    by_sop = {str(ds.SOPInstanceUID): ds for ds in evidence}
    groups = [hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=_uid("exam-group", exam, model.sha256),
                                                     identifier="exam triage score"),
        algorithm_id=algorithm,
        measurements=[hd.sr.Measurement(name=SCORE_CODE, value=float(exam_score), unit=NO_UNITS,
                                        algorithm_id=algorithm)],
        qualitative_evaluations=[hd.sr.QualitativeEvaluation(CATEGORY_CODE,
                                                             CATEGORY_VALUES[category])],
    )]
    for v in views:
        ds = by_sop.get(v.sop_instance_uid)
        if ds is None:
            continue
        groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=_uid("view-group", v.sop_instance_uid, model.sha256),
                identifier="view triage score"),
            algorithm_id=algorithm,
            measurements=[hd.sr.Measurement(
                name=VIEW_SCORE_CODE, value=float(v.score), unit=NO_UNITS,
                algorithm_id=algorithm,
                referenced_images=[hd.sr.SourceImageForMeasurement(
                    str(ds.SOPClassUID), str(ds.SOPInstanceUID))])],
        ))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=SCREENING_MAMMOGRAPHY,
        imaging_measurements=groups,
    )
    equipment = hd.ContributingEquipment(
        manufacturer="deidgate", purpose_of_reference=PROCESSING_EQUIPMENT,
        manufacturer_model_name=model.name[:64], software_versions=model.version,
        contribution_description=(f"triage score by {label}"
                                  + (f"; {note}" if note else ""))[:1024])
    equipment.DeviceUID = model.device_uid
    sr = hd.sr.ComprehensiveSR(
        evidence=list(evidence), content=report, series_instance_uid=series_uid,
        series_number=9901, sop_instance_uid=sop_uid, instance_number=1,
        manufacturer="deidgate", is_complete=True, is_final=False, is_verified=False,
        # LO is 64 characters: the demo notice must survive whole, the name is in the equipment
        series_description=(f"Triage score: {DEMO_NOTICE}" if model.demo
                            else f"Triage score, {label}")[:64],
        contributing_equipment=[equipment],
    )
    return sr


def write_sr(sr: Dataset, folder: Path) -> Path:
    """Write ``sr`` as ``<folder>/<SOPInstanceUID>.dcm`` (atomically: complete or absent)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{sr.SOPInstanceUID}.dcm"
    tmp = path.with_suffix(".tmp")
    sr.save_as(tmp, enforce_file_format=True)
    tmp.replace(path)
    return path
