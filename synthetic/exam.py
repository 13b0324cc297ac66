"""Screening exams: several views of one study (``ExamSpec``), in memory or written to a folder
under names made from UIDs only (never from names or IDs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from pydicom import dcmread
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    CTImageStorage,
    ExplicitVRLittleEndian,
    GrayscaleSoftcopyPresentationStateStorage,
    generate_uid,
)

from synthetic.identity import unique_identity
from synthetic.mammogram import make_mammogram
from synthetic.spec import ExamSpec


@dataclass
class Exam:
    """An exam as written: what a test looks for in a PACS and in the gateway's output."""

    patient_id: str
    patient_name: str
    accession: str
    study_uid: str
    study_date: str
    files: list[Path] = field(default_factory=list)
    series_uids: list[str] = field(default_factory=list)
    sop_uids: list[str] = field(default_factory=list)


def make_exam(spec: ExamSpec | None = None, /, **changes: Any) -> list[FileDataset]:
    """The views of one exam (``changes``: see ``ExamSpec.of``)."""
    return [make_mammogram(v) for v in ExamSpec.of(spec, **changes).view_specs()]


def write_exam(folder: Path, spec: ExamSpec | None = None, /, **changes: Any) -> Exam:
    """Write one exam; files are named ``<SOPInstanceUID>.dcm``."""
    spec = ExamSpec.of(spec, **changes)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    ident = spec.identity
    exam = Exam(patient_id=ident.patient_id, patient_name=ident.patient_name,
                accession=ident.accession_number, study_uid=str(ident.uid("study")),
                study_date=ident.study_date)
    for ds in make_exam(spec):
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        exam.files.append(path)
        exam.sop_uids.append(str(ds.SOPInstanceUID))
        if str(ds.SeriesInstanceUID) not in exam.series_uids:
            exam.series_uids.append(str(ds.SeriesInstanceUID))
    return exam


def fresh_exam(folder: Path, index: int = 0, *, study_date: str = "20260105",
               **changes: Any) -> Exam:
    """An exam that is new on every call (small by default: 64 x 48 images, one series per
    view), for the tests and benchmarks of the DICOM edge, where many exams meet in one PACS.
    ``changes``: see ``ExamSpec.of`` (rows, cols, views, transfer_syntax, ...)."""
    base = {"rows": 64, "cols": 48, "series_per_view": True}
    return write_exam(folder, identity=unique_identity(index, study_date=study_date),
                      **{**base, **changes})


#: A vendor's own storage class (private root): what a PACS may hold next to the views.
PRIVATE_STORAGE_CLASS = "1.3.6.1.4.1.55555.7.1.1"


def write_study_extras(folder: Path, exam: Exam) -> list[Path]:
    """What else a screening study in a real PACS may hold, in the exam's own study (same
    patient, accession and study UID), each in its own series: a misfiled CT image, a
    Grayscale Softcopy Presentation State on the first view, and an object of a private SOP
    class. The mammography policy retrieves none of them (not MG) or refuses them."""
    first = dcmread(exam.files[0], stop_before_pixels=True)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out: list[Path] = []

    def base(sop_class: str, modality: str, number: int) -> Dataset:
        ds = Dataset()
        ds.SpecificCharacterSet = first.get("SpecificCharacterSet", "ISO_IR 100")
        for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex",
                   "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
                   "ReferringPhysicianName"):
            if kw in first:
                setattr(ds, kw, first.data_element(kw).value)  # type: ignore[union-attr]
        ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = modality, number, 1
        ds.SeriesDate, ds.SeriesTime = first.StudyDate, first.StudyTime
        return ds

    ct = base(CTImageStorage, "CT", 90)
    ct.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ct.Rows = ct.Columns = 16
    ct.SamplesPerPixel, ct.PhotometricInterpretation = 1, "MONOCHROME2"
    ct.BitsAllocated, ct.BitsStored, ct.HighBit, ct.PixelRepresentation = 16, 12, 11, 0
    ct.RescaleIntercept, ct.RescaleSlope = "-1024", "1"
    ct.PixelData = np.full((16, 16), 1024, dtype="<u2").tobytes()

    pr = base(GrayscaleSoftcopyPresentationStateStorage, "PR", 91)
    pr.ContentLabel, pr.ContentDescription = "ANNOTATION", "reader mark"
    pr.PresentationCreationDate, pr.PresentationCreationTime = first.StudyDate, first.StudyTime
    ref_img = Dataset()
    ref_img.ReferencedSOPClassUID = first.SOPClassUID
    ref_img.ReferencedSOPInstanceUID = first.SOPInstanceUID
    ref_ser = Dataset()
    ref_ser.SeriesInstanceUID = first.SeriesInstanceUID
    ref_ser.ReferencedImageSequence = Sequence([ref_img])
    pr.ReferencedSeriesSequence = Sequence([ref_ser])

    vendor = base(PRIVATE_STORAGE_CLASS, "OT", 92)
    vendor.add_new(0x00990010, "LO", "ACME VENDOR DATA")
    vendor.add_new(0x00991001, "OB", b"\x01\x02" * 32)

    for ds in (ct, pr, vendor):
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out
