"""Worklist rows for the tests: score results and triage entries as the scoring worker writes
them (the shared contract of PLAN.md), either made up (``add_exam``) or for exams that the real
de-identification pipeline wrote into the output folder (``add_deidentified``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pydicom
from sqlalchemy.orm import Session

from service.db.models.triage import ScoreResult, TriageEntry

T0 = datetime(2026, 11, 25, 8, 0, tzinfo=UTC)
VIEWS = (("R", "CC"), ("L", "CC"), ("R", "MLO"), ("L", "MLO"))


def add_exam(s: Session, exam: str, score: float, category: str, *,
             arrived: datetime = T0, demo: bool = True, model_name: str = "mgtriage-demo",
             model_version: str = "0.1", views: Sequence[dict[str, Any]] | None = None,
             accession_pseudonym: str | None = None, complete: bool = True,
             note: str | None = None, patient: str | None = None,
             read_at: datetime | None = None, read_by: str | None = None) -> TriageEntry:
    view_rows = list(views) if views is not None else [
        {"sop": f"{exam}.{i}", "series": f"{exam}.9{i}", "laterality": lat, "view": v,
         "score": round(score - 0.01 * i, 4), "file": None}
        for i, (lat, v) in enumerate(VIEWS)]
    result = ScoreResult(
        exam=exam, patient_pseudonym=patient or f"PSN-{exam[-3:]}", score=score,
        category=category, model_name=model_name, model_version=model_version,
        model_sha256=("ab" * 32), device_uid="2.25.424242", preprocessing_version="mammo-1",
        demo=demo, views=view_rows, complete=complete, note=note,
        scored_at=arrived + timedelta(minutes=1))
    s.add(result)
    s.flush()
    entry = TriageEntry(
        exam=exam, patient_pseudonym=result.patient_pseudonym, score=score, category=category,
        model_version=model_version, scored_at=result.scored_at, result_id=result.id,
        accession_pseudonym=accession_pseudonym, arrived_at=arrived, read_at=read_at,
        read_by=read_by)
    s.add(entry)
    s.flush()
    return entry


def add_deidentified(s: Session, output_dir: Path, out_paths: Sequence[Path], score: float,
                     category: str, *, arrived: datetime,
                     view_scores: Sequence[float] | None = None) -> TriageEntry:
    """A worklist row for one de-identified exam: its views read back from the output files
    (pseudonymous UIDs, laterality, view, relative path), as the scoring worker records them."""
    views = []
    study = accession = patient = ""
    for i, path in enumerate(out_paths):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        study, accession, patient = (str(ds.StudyInstanceUID), str(ds.AccessionNumber),
                                     str(ds.PatientID))
        view = str(ds.get("ViewPosition", "") or "")
        if not view and ds.get("ViewCodeSequence"):
            view = {"R-10242": "CC", "R-10226": "MLO"}.get(
                str(ds.ViewCodeSequence[0].CodeValue), "")
        views.append({"sop": str(ds.SOPInstanceUID), "series": str(ds.SeriesInstanceUID),
                      "laterality": str(ds.get("ImageLaterality", "")), "view": view,
                      "score": (view_scores[i] if view_scores else score),
                      "file": str(path.relative_to(output_dir))})
    return add_exam(s, study, score, category, arrived=arrived, views=views,
                    accession_pseudonym=accession or None, patient=patient)
