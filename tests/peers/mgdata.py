"""Small synthetic screening mammography exams (pydicom + numpy), for tests and benchmarks.

Used when ``service.sample.synthetic`` is not available, and for shapes the tests need exactly
(tiny images, chosen transfer syntaxes, a given study UID). Values are fake but realistic in form.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
    generate_uid,
)

MG_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"
VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


@dataclass
class Exam:
    patient_id: str
    accession: str
    study_uid: str
    study_date: str
    files: list[Path] = field(default_factory=list)
    series_uids: list[str] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)


def mg_dataset(*, patient_id: str, accession: str, study_uid: str, series_uid: str,
               laterality: str, view: str, study_date: str = "20260105", rows: int = 64,
               cols: int = 48, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    breast = ((xx / cols) ** 2 + ((yy - rows / 2) / (rows / 2)) ** 2) < 0.9
    img = (breast * (1500 + rng.normal(0, 200, (rows, cols)))).clip(0, 4095).astype(np.uint16)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = UID(MG_PRESENTATION)
    ds.SOPClassUID = MG_PRESENTATION
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Nordmann^Kari"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19650312"
    ds.PatientSex = "F"
    ds.AccessionNumber = accession
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyDate = study_date
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.StudyDescription = "Screening mammography"
    ds.Modality = "MG"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.ImageLaterality = laterality
    ds.ViewPosition = view
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "BREAST"
    ds.Manufacturer = "SYNTHETIC"
    ds.InstitutionName = "Synthetic Hospital"
    ds.BurnedInAnnotation = "NO"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.PixelData = img.tobytes()
    return ds


def save(ds: Dataset, path: Path, transfer_syntax: str = ExplicitVRLittleEndian) -> Path:
    if transfer_syntax in (JPEG2000Lossless, RLELossless):
        ds.compress(transfer_syntax)
    elif transfer_syntax == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    ds.save_as(path, enforce_file_format=True)
    return path


def make_exam(folder: Path, *, index: int = 0, patient_id: str | None = None,
              study_date: str = "20260105", views: int = 4, series_per_view: bool = True,
              transfer_syntax: str = ExplicitVRLittleEndian, rows: int = 64,
              cols: int = 48) -> Exam:
    """One screening exam: ``views`` images, one series per view (as many modalities do)."""
    folder.mkdir(parents=True, exist_ok=True)
    tag = secrets.token_hex(3)  # unique per call: one PACS may serve many tests
    ex = Exam(patient_id=patient_id or f"PID{index:05d}{tag}", accession=f"A{index:05d}{tag}",
              study_uid=generate_uid(), study_date=study_date)
    shared_series = generate_uid()
    for i, (lat, view) in enumerate(VIEWS[:views] if views <= 4 else VIEWS * (views // 4 + 1)):
        if i >= views:
            break
        series = generate_uid() if series_per_view else shared_series
        ds = mg_dataset(patient_id=ex.patient_id, accession=ex.accession,
                        study_uid=ex.study_uid, series_uid=series, laterality=lat, view=view,
                        study_date=study_date, rows=rows, cols=cols, seed=index * 10 + i)
        ds.SeriesNumber = i + 1 if series_per_view else 1
        ds.InstanceNumber = i + 1
        path = save(ds, folder / f"exam{index:03d}_{i}.dcm", transfer_syntax)
        ex.files.append(path)
        if series not in ex.series_uids:
            ex.series_uids.append(series)
        ex.sop_uids.append(str(ds.SOPInstanceUID))
    return ex
