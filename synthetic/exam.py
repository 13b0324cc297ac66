"""Screening exams: several views of one study (``ExamSpec``), in memory or written to a folder
under names made from UIDs only (never from names or IDs)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import FileDataset

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
