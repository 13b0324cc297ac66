"""The scoring worker on both databases: a de-identified study goes through ``scoring``, gets a
ScoreResult and a worklist row, an SR that parses with highdicom; identical input and model give
identical scores; an incomplete exam waits for the quiet period and says so; re-scoring with
another model keeps the old result; the sweep re-sends a lost score task."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import highdicom as hd
import pydicom
import pytest
from sqlalchemy import select, update

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.base import utcnow
from service.db.models.dicom import ReceivedInstance
from service.db.models.jobs import Job, JobInstance, JobStudy
from service.db.models.triage import ScoreResult, TriageEntry
from service.db.session import get_sessionmaker, session_scope
from service.db.states import InstanceState, JobState, StudyState
from service.dicom.uid_keys import uid_key
from service.jobs import ops, recovery
from service.jobs.transitions import FoundStudy, add_studies, check_study, claim_job
from synthetic.lesions import make_lesion_exam
from tests.jobs.conftest import submit
from tests.score.conftest import make_tiny_model
from workers.score.infer import _cached_model
from workers.score.sr import CATEGORY_CODE, SCORE_CODE
from workers.tasks.completion import enqueue_scoring, scoring_enabled
from workers.tasks.score import score_study

pytestmark = pytest.mark.timeout(300)


def _write_views(settings: Settings, woman: int, *, drop: tuple[str, ...] = ()) -> list[Path]:
    """A synthetic 4-view exam in the output store's layout (patient/study/series/sop.dcm)."""
    ex = make_lesion_exam(woman, cancer=bool(woman % 2), seed=0, rows=120, cols=98)
    paths = []
    for v in ex.views:
        if f"{v.laterality}-{v.view}" in drop:
            continue
        ds = v.dataset
        for kw in ("PatientBirthDate", "PatientSex", "StudyTime", "ReferringPhysicianName",
                   "StudyID", "InstitutionName", "StationName", "DeviceSerialNumber"):
            if kw in ds:  # as the de-identification policy leaves them: absent
                delattr(ds, kw)
        p = (settings.output_dir / str(ds.PatientID) / str(ds.StudyInstanceUID)
             / str(ds.SeriesInstanceUID) / f"{ds.SOPInstanceUID}.dcm")
        p.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(p, enforce_file_format=True)
        paths.append(p)
    return paths


def _study(settings: Settings, keys: SiteKeys, paths: list[Path], *, score: bool = True,
           destination: str | None = None) -> tuple[str, int, str]:
    """A job whose one study is fully de-identified (instances written to ``paths``)."""
    db = settings.db_url
    uid = str(pydicom.dcmread(paths[0], stop_before_pixels=True).StudyInstanceUID)
    with get_sessionmaker(db)() as s:
        job_id = submit(s, settings, keys, **({"destination": destination} if destination
                                              else {}))
        assert claim_job(s, job_id, 60) is not None
        [sid] = add_studies(s, keys, job_id, [FoundStudy("1.2.3.4." + uid[-12:], len(paths))])
    with session_scope(db) as s:
        for i, p in enumerate(paths):
            r = ReceivedInstance(sop_key=uid_key(keys, f"{uid}.{i}"), series_key="s",
                                 study_key=uid_key(keys, uid), sop_class_uid="1.2",
                                 transfer_syntax="1.2.840.10008.1.2.1",
                                 spool_path=f"/spool/{i}.dcm", calling_ae="PACS1",
                                 size_bytes=1, status="done", job_id=job_id, node="n1")
            s.add(r)
            s.flush()
            s.add(JobInstance(received_id=r.id, job_id=job_id, study_id=sid,
                              spool_path=r.spool_path, node="n1", state=InstanceState.WRITTEN,
                              out_path=str(p), attempts=1))
        s.execute(update(JobStudy).where(JobStudy.id == sid).values(
            state=StudyState.DEIDENTIFYING, retrieved=True, pseudo_uid=uid))
        s.execute(update(Job).where(Job.id == job_id).values(state=JobState.DEIDENTIFYING))
    with get_sessionmaker(db)() as s:
        assert check_study(s, sid, score=score)
    return job_id, sid, uid


@pytest.fixture()
def scoring(settings: Settings, jobs_db: str, tiny_model: Path) -> Settings:
    settings.score_model = tiny_model
    return settings


def test_study_is_scored_into_result_worklist_and_sr(scoring: Settings,
                                                    site_keys: SiteKeys) -> None:
    settings = scoring
    assert scoring_enabled(settings)
    job_id, sid, exam = _study(settings, site_keys, _write_views(settings, 1))
    with session_scope(settings.db_url) as s:
        assert s.get(JobStudy, sid).state == StudyState.SCORING  # type: ignore[union-attr]
        assert s.get(Job, job_id).state != JobState.DONE  # type: ignore[union-attr]
    assert enqueue_scoring(settings, sid)  # published to the score queue
    out = score_study(settings, sid)
    assert out.status == "scored" and out.result_id is not None
    with session_scope(settings.db_url) as s:
        r = s.get(ScoreResult, out.result_id)
        assert r is not None
        assert r.exam == exam and r.model_name == "tiny" and r.model_version == "1"
        assert len(r.model_sha256) == 64 and r.device_uid.startswith("2.25.")
        assert r.preprocessing_version == "mammo-1" and r.demo is False
        assert r.complete is True and r.note is None
        assert r.category in ("likely-normal", "standard", "priority")
        assert 0.0 <= r.score <= 1.0
        assert sorted((v["laterality"], v["view"]) for v in r.views) == [
            ("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO")]
        assert all((settings.output_dir / v["file"]).is_file() for v in r.views)
        assert max(v["score"] for v in r.views) >= r.score  # max over breasts of the mean
        e = s.scalars(select(TriageEntry).where(TriageEntry.exam == exam)).one()
        assert e.result_id == r.id and e.score == r.score and e.category == r.category
        assert e.model_version == "1" and e.read_at is None
        st = s.get(JobStudy, sid)
        assert st is not None and st.state == StudyState.COMPLETE
        view = ops.get_job(s, job_id)
        assert view.state == JobState.DONE and view.counts.studies_scored == 1
        assert view.studies[0].scored
    # the SR: TID 1500 with the score, the category and the model's identity, unverified
    assert out.sr_path is not None and out.sr_path.is_file()
    sr = hd.sr.srread(out.sr_path)
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    assert sr.VerificationFlag == "UNVERIFIED"
    assert sr.StudyInstanceUID == exam
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    ours = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "deidgate"]
    assert ours and ours[0].DeviceUID == r.device_uid
    assert sr.SeriesDescription == "Triage score, tiny 1"
    measured = {}
    for item in _walk(sr.ContentSequence):
        code = item.ConceptNameCodeSequence[0].CodeValue if "ConceptNameCodeSequence" in item \
            else None
        if code == SCORE_CODE.value and item.ValueType == "NUM":
            measured["score"] = float(item.MeasuredValueSequence[0].NumericValue)
        if code == CATEGORY_CODE.value:
            measured["category"] = item.ConceptCodeSequence[0].CodeMeaning
    assert measured["score"] == pytest.approx(r.score, abs=1e-6)
    assert measured["category"].lower().replace(" ", "-") == r.category
    # a redelivered task does nothing; the SR is the same file
    assert score_study(settings, sid).status == "skipped"


def _walk(seq: pydicom.Sequence) -> list[pydicom.Dataset]:
    out = []
    for item in seq:
        out.append(item)
        if "ContentSequence" in item:
            out.extend(_walk(item.ContentSequence))
    return out


def test_identical_input_and_model_give_identical_scores(scoring: Settings,
                                                         site_keys: SiteKeys) -> None:
    settings = scoring
    paths = _write_views(settings, 2)
    _, sid, _ = _study(settings, site_keys, paths)
    first = score_study(settings, sid)
    with session_scope(settings.db_url) as s:
        a = s.get(ScoreResult, first.result_id)
        assert a is not None
        want = (a.score, [(v["sop"], v["score"]) for v in a.views])
        s.execute(update(TriageEntry).values(result_id=None))
        s.delete(a)
        s.execute(update(JobStudy).where(JobStudy.id == sid)
                  .values(state=StudyState.SCORING))
    _cached_model.cache_clear()  # a fresh model load, as in another worker process
    again = score_study(settings, sid)
    assert again.status == "scored"
    with session_scope(settings.db_url) as s:
        b = s.get(ScoreResult, again.result_id)
        assert b is not None
        assert (b.score, [(v["sop"], v["score"]) for v in b.views]) == want  # bit for bit


def test_incomplete_exam_waits_for_the_quiet_period_then_says_so(
        scoring: Settings, site_keys: SiteKeys) -> None:
    settings = scoring
    settings.score_quiet_period_s = 600
    _, sid, exam = _study(settings, site_keys, _write_views(settings, 3, drop=("R-MLO",)))
    early = score_study(settings, sid)
    assert early.status == "deferred" and early.retry_in is not None
    assert 590 <= early.retry_in <= 600
    with session_scope(settings.db_url) as s:
        assert s.scalar(select(ScoreResult).where(ScoreResult.exam == exam)) is None
        assert s.get(JobStudy, sid).state == StudyState.SCORING  # type: ignore[union-attr]
    late = score_study(settings, sid, now=utcnow() + timedelta(seconds=601))
    assert late.status == "scored"
    with session_scope(settings.db_url) as s:
        r = s.get(ScoreResult, late.result_id)
        assert r is not None and r.complete is False
        assert r.note == "scored with 3 of 4 views after the quiet period (missing R-MLO)"
        assert len(r.views) == 3


def test_rescoring_with_another_model_keeps_the_old_result(
        scoring: Settings, site_keys: SiteKeys, tmp_path: Path) -> None:
    settings = scoring
    _, sid, exam = _study(settings, site_keys, _write_views(settings, 4))
    old = score_study(settings, sid)
    settings.score_model = tmp_path / "b"
    make_tiny_model(settings.score_model, seed=1, version="2")
    with session_scope(settings.db_url) as s:
        s.execute(update(JobStudy).where(JobStudy.id == sid).values(state=StudyState.SCORING))
    new = score_study(settings, sid)
    assert new.status == "scored" and new.result_id != old.result_id
    with session_scope(settings.db_url) as s:
        rows = list(s.scalars(select(ScoreResult).where(ScoreResult.exam == exam)
                              .order_by(ScoreResult.id)))
        assert [r.model_version for r in rows] == ["1", "2"]
        assert rows[0].score != rows[1].score
        e = s.scalars(select(TriageEntry).where(TriageEntry.exam == exam)).one()
        assert e.result_id == rows[1].id and e.model_version == "2"


def test_without_a_model_nothing_is_scored(settings: Settings, jobs_db: str,
                                           site_keys: SiteKeys) -> None:
    assert not scoring_enabled(settings)
    _, sid, _ = _study(settings, site_keys, _write_views(settings, 5), score=False)
    assert not enqueue_scoring(settings, sid)
    with session_scope(settings.db_url) as s:
        assert s.get(JobStudy, sid).state == StudyState.COMPLETE  # type: ignore[union-attr]
        assert s.scalar(select(ScoreResult)) is None


def test_sweep_resends_a_lost_score_task_and_dead_letter_completes_unscored(
        scoring: Settings, site_keys: SiteKeys) -> None:
    settings = scoring
    _, sid, _ = _study(settings, site_keys, _write_views(settings, 6))
    with get_sessionmaker(settings.db_url)() as s:
        assert recovery.sweep(s, stale_s=300, score=True).scoring == []  # fresh: not picked
        s.execute(update(JobStudy).where(JobStudy.id == sid)
                  .values(updated_at=utcnow() - timedelta(seconds=400)))
        s.commit()
        assert recovery.sweep(s, stale_s=300, score=True).scoring == [sid]
        assert recovery.sweep(s, stale_s=300, score=True).scoring == []  # touched
    from service.core.queues import TaskName

    with session_scope(settings.db_url) as s:
        recovery.dead_letter(s, task=TaskName.SCORE_STUDY, target=str(sid),
                             reason="internal: RuntimeError", attempts=6)
    with session_scope(settings.db_url) as s:
        st = s.get(JobStudy, sid)
        assert st is not None and st.state == StudyState.COMPLETE
        assert st.reason == "not scored: internal: RuntimeError"


def test_sr_is_stored_to_a_real_pacs(scoring: Settings, site_keys: SiteKeys,
                                     tmp_path: Path) -> None:
    """The SR goes by C-STORE to the configured node (Orthanc), beside nothing else."""
    from service.dicom import admin
    from tests.peers.orthanc import orthanc_server

    settings = scoring
    with orthanc_server(tmp_path / "orthanc") as orthanc:
        with session_scope(settings.db_url) as s:
            admin.add_node(s, "viewer", ae_title=orthanc.ae_title, host="127.0.0.1",
                           port=orthanc.dicom_port)
        settings.score_sr_node = "viewer"
        _, sid, exam = _study(settings, site_keys, _write_views(settings, 7))
        out = score_study(settings, sid)
        assert out.status == "scored" and out.sr_sent == ("viewer",)
        [inst] = orthanc.instances()
        tags = orthanc._req("GET", f"/instances/{inst}/simplified-tags")
        assert tags["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.33"
        assert tags["StudyInstanceUID"] == exam
        assert tags["SOPInstanceUID"] == pydicom.dcmread(out.sr_path).SOPInstanceUID
        assert tags["VerificationFlag"] == "UNVERIFIED"


def test_cli_export_scores_and_compare_two_models(scoring: Settings, site_keys: SiteKeys,
                                                  tmp_path: Path) -> None:
    """`model export-scores` and `model compare` (stored results, then --rescore)."""
    import csv
    import os
    import subprocess
    import sys

    settings = scoring
    sids = [_study(settings, site_keys, _write_views(settings, w))[1] for w in (8, 9, 10)]
    a_folder = settings.score_model
    for sid in sids:
        assert score_study(settings, sid).status == "scored"
    b_folder = tmp_path / "b"
    make_tiny_model(b_folder, seed=3, version="2")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
        env.update(DEIDGATE_HOME=str(settings.home), DEIDGATE_DATABASE_URL=settings.db_url)
        return subprocess.run([sys.executable, "-m", "service.cli.main", *args], env=env,
                              capture_output=True, text=True, timeout=300, check=False)

    out = cli("model", "export-scores", "--model", str(a_folder), "--out",
              str(tmp_path / "a.csv"))
    assert out.returncode == 0, out.stderr
    rows = list(csv.DictReader((tmp_path / "a.csv").open()))
    assert len(rows) == 3 and set(rows[0]) == {"exam", "woman", "score", "arrival"}
    stored = cli("model", "compare", str(a_folder), str(b_folder))
    assert stored.returncode == 2 and "no exam has scores of both models" in stored.stderr
    both = cli("model", "compare", str(a_folder), str(b_folder), "--rescore", "--out",
               str(tmp_path / "ab.csv"))
    assert both.returncode == 0, both.stderr
    assert "3 exams (re-scored)" in both.stdout and "Spearman rho" in both.stdout
    paired = list(csv.DictReader((tmp_path / "ab.csv").open()))
    assert [k for k in paired[0] if k.startswith("score_")] == ["score_tiny-1", "score_tiny-2"]
    by_exam = {r["exam"]: float(r["score"]) for r in rows}
    for r in paired:  # re-scoring model A gives exactly its stored scores
        assert float(r["score_tiny-1"]) == by_exam[r["exam"]]


def test_demo_model_sr_says_so_whole(tmp_path: Path) -> None:
    """The 64-character Series Description keeps the whole demo notice."""
    from workers.score.card import DEMO_NOTICE
    from workers.score.sr import SrModel, SrView, build_sr

    ex = make_lesion_exam(11, cancer=False, seed=0, rows=120, cols=98)
    dss = [v.dataset for v in ex.views]
    for ds in dss:
        del ds.PatientBirthDate  # as after de-identification
    sr = build_sr(dss, exam_score=0.2, category="likely-normal",
                  views=[SrView(str(d.SOPInstanceUID), 0.2) for d in dss],
                  model=SrModel("deidgate-demo", "1", "2.25.9", "b" * 64, True))
    assert DEMO_NOTICE in sr.SeriesDescription
    ours = [e for e in sr.ContributingEquipmentSequence if e.Manufacturer == "deidgate"]
    assert DEMO_NOTICE in ours[0].ContributionDescription and ours[0].DeviceUID == "2.25.9"
    assert sr.PatientBirthDate == ""
