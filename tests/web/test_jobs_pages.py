"""The jobs pages: submission by values or CSV (values never echoed into URLs), errors that
name the line, progress fragments that stop polling, and the PHI-free failure report."""

from __future__ import annotations

from collections.abc import Callable

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from service.core.config import Settings
from service.core.security import Role
from service.db.models.jobs import Job, JobStudy
from service.db.session import session_scope
from service.dicom import admin as dicom_admin
from tests.web.conftest import ORIGIN

SignedIn = Callable[[Role], tuple[TestClient, str]]


def _node(settings: Settings) -> None:
    with session_scope(settings.db_url) as s:
        dicom_admin.add_node(s, "pacs1", ae_title="PACS1", host="127.0.0.1", port=1)


def test_csv_submission_progress_and_failure_report(signed_in: SignedIn,
                                                     settings: Settings) -> None:
    _node(settings)
    c, token = signed_in(Role.admin)
    page = c.get("/jobs")
    assert '<textarea id="values" name="values" autocomplete="off" spellcheck="false">' \
           '</textarea>' in page.text
    csv_text = "accession_number\nACC-1\nACC-2\nACC-3\n"
    r = c.post("/jobs", headers=ORIGIN, data={"csrf_token": token, "pacs": "pacs1",
                                              "selector": "patient_ids"},
               files={"csv_file": ("list.csv", csv_text.encode(), "text/csv")})
    assert r.status_code == 303
    job_id = r.headers["location"].rsplit("/", 1)[1]
    with session_scope(settings.db_url) as s:
        job = s.get(Job, job_id)
        assert job is not None and (job.selector, job.requested) == ("accession_numbers", 3)
        s.add(JobStudy(job_id=job_id, idx=0, study_key="k0", uid_sealed=b"x", state="failed",
                       reason="retrieve-incomplete: 2 of 4 instances arrived"))
        s.add(JobStudy(job_id=job_id, idx=1, study_key="k1", uid_sealed=b"x", state="complete",
                       pseudo_uid="2.25.99"))
        s.add(JobStudy(job_id=job_id, idx=2, study_key="k2", uid_sealed=b"x", state="failed",
                       reason="=HYPERLINK(\"x\")"))
    frag = c.get(f"/jobs/{job_id}/progress", headers={"HX-Request": "true"})
    assert 'hx-trigger="every 3s"' in frag.text and "HX-Refresh" not in frag.headers
    assert 'role="progressbar"' in frag.text and 'aria-valuetext="3 of 3 studies"' in frag.text
    with session_scope(settings.db_url) as s:
        s.execute(update(Job).where(Job.id == job_id).values(state="failed"))
    frag = c.get(f"/jobs/{job_id}/progress", headers={"HX-Request": "true"})
    assert "hx-trigger" not in frag.text  # finished: the fragment no longer polls
    assert frag.headers["HX-Refresh"] == "true"  # the page reloads once, to its final state
    report = c.get(f"/jobs/{job_id}/failures.csv")
    assert report.status_code == 200 and report.headers["content-type"].startswith("text/csv")
    lines = report.text.strip().split("\r\n")
    assert lines[0].startswith("study_index,study_uid,state,reason_code")
    assert lines[1].startswith("0,,failed,retrieve-incomplete,")
    assert lines[2].startswith("2,,failed,unspecified,")  # free text never copied out
    assert len(lines) == 3 and "2 of 4" not in report.text and "HYPERLINK" not in report.text


def test_bad_submissions_name_the_problem_not_the_value(signed_in: SignedIn,
                                                        settings: Settings) -> None:
    _node(settings)
    c, token = signed_in(Role.service)
    r = c.post("/jobs", headers=ORIGIN, data={"csrf_token": token, "pacs": "pacs1"},
               files={"csv_file": ("l.csv", b"PID-SECRET-9\n\n , \n", "text/csv")})
    assert r.status_code == 422 and "choose what the CSV lists" in r.text
    r = c.post("/jobs", headers=ORIGIN, data={"csrf_token": token, "pacs": "pacs1",
                                              "selector": "study_instance_uids",
                                              "values": "1.2.3\nnot-a-uid-SECRET"})
    assert r.status_code == 422 and "study_instance_uids[1]" in r.text
    assert r.text.count("not-a-uid-SECRET") == 1  # only in the form, given back to fix
    r = c.post("/jobs", headers=ORIGIN, data={"csrf_token": token, "pacs": "nowhere",
                                              "selector": "accession_numbers",
                                              "values": "A1"})
    assert r.status_code == 422
    with session_scope(settings.db_url) as s:
        assert list(s.scalars(select(Job))) == []
