"""Studies as PACSes hold them (issue 7, section 1), against real Orthanc: one study with the
four MG views, a CT image, a GSPS and an object of a private SOP class.

Before: the listener did not negotiate the private class, Orthanc failed the whole C-MOVE
("Cannot transcode ... to one of [ ]", 0xC000) and the gateway failed the study. Now:
- by default (mammography policy) the series are found at SERIES level and only the MG series
  are moved; the others are reported skipped with a reason; the job ends done;
- with the job option ``modalities`` naming all four, everything is moved, the listener
  accepts every class, the policy refuses the three non-MG objects with a reason (kept in
  quarantine), they count as refused (not failed), and the job ends done.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom import dcmread
from sqlalchemy import select

from service.db.models.jobs import JobInstance
from service.db.session import get_sessionmaker
from synthetic.exam import write_study_extras
from tests.e2e.harness import gateway, make_settings

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]


def _report(name: str, job: dict) -> None:
    """The job's counts, for the closing note (printed with -s; recorded under test-output)."""
    line = json.dumps({"job": name, "state": job["state"], "counts": job["counts"],
                       "studies": [{k: s[k] for k in ("state", "expected", "received",
                                                      "deidentified", "refused", "failed",
                                                      "skipped", "skipped_reason")}
                                   for s in job["studies"]]})
    print(line)
    out = Path(__file__).resolve().parents[2] / "test-output"
    out.mkdir(exist_ok=True)
    with (out / "mixed_study_counts.jsonl").open("a") as f:
        f.write(line + "\n")


def test_mixed_study_every_view_deidentified_others_skipped_or_refused(tmp_path: Path) -> None:
    st = make_settings(tmp_path, db_url=f"sqlite:///{tmp_path / 'deidgate.db'}")
    with gateway(tmp_path, st, n_exams=2) as gw:
        extras = [write_study_extras(tmp_path / f"extras{i}", e) for i, e in enumerate(gw.exams)]
        for files in extras:
            gw.orthanc.upload(*files)
        assert len(gw.orthanc.instances()) == 14

        # 1. default: the policy's filter (MG only), per-series C-MOVE
        default = gw.wait(gw.submit([gw.exams[0].accession]), timeout=180)
        _report("default (mammography-screening)", default)
        c = default["counts"]
        assert default["state"] == "done", default
        assert (c["instances_deidentified"], c["instances_refused"], c["instances_failed"],
                c["instances_skipped"]) == (4, 0, 0, 3)
        (study,) = default["studies"]
        assert study["state"] == "complete" and study["expected"] == 4
        reason = study["skipped_reason"]
        for modality in ("CT", "PR", "OT"):
            assert f"modality {modality} not in MG (policy mammography-screening)" in reason
        assert gw.exams[0].study_uid not in reason

        # 2. the job option names every modality: all moved, three refused by the policy
        job_id = gw.submit([gw.exams[1].accession], modalities=["MG", "CT", "PR", "OT"])
        moved = gw.wait(job_id, timeout=180)
        _report("modalities MG,CT,PR,OT", moved)
        c = moved["counts"]
        assert moved["state"] == "done", moved
        assert moved["modalities"] == ["MG", "CT", "PR", "OT"]
        assert (c["instances_received"], c["instances_deidentified"], c["instances_refused"],
                c["instances_failed"], c["instances_skipped"]) == (7, 4, 3, 0, 0)
        assert moved["studies"][0]["state"] == "complete"
        with get_sessionmaker(gw.db_url)() as s:
            reasons = sorted(r for r in s.scalars(select(JobInstance.reason).where(
                JobInstance.job_id == job_id, JobInstance.state == "refused")))
        assert reasons == ["unsupported-sop-class"] * 3, reasons

        # every MG view de-identified, and only those; the refused kept in quarantine
        outs = gw.outputs()
        assert len(outs) == 8
        assert {str(dcmread(p, stop_before_pixels=True).Modality) for p in outs} == {"MG"}
        quarantined = sorted(gw.settings.quarantine_dir.rglob("*.dcm"))
        assert len(quarantined) == 3
        classes = {str(dcmread(p, stop_before_pixels=True).SOPClassUID) for p in quarantined}
        assert classes == {"1.2.840.10008.5.1.4.1.1.2", "1.2.840.10008.5.1.4.1.1.11.1",
                           "1.3.6.1.4.1.55555.7.1.1"}
        assert gw.spool_files() == []
