"""ATNA messages from the running gateway, caught by a real syslog receiver on loopback and read
back as XML: the audit store (de-identification, re-identification, lookups), the web sign-in,
CLI configuration changes, key rotation and the listener's associations. Each message validates
against the DICOM audit schema and carries pseudonyms and counts, never PHI (re-identification
names the disclosed Patient ID only)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from lxml import etree
from typer.testing import CliRunner

from service.audit import AuditStore, atna_export
from service.audit.atna import SCHEMA
from service.cli.main import app
from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope
from service.dicom import admin
from service.dicom.listener import Listener
from service.web import accounts, signin
from synthetic.exam import fresh_exam
from tests.audit.util import originals, outcome, pseudonyms
from tests.peers.dcmtk import echoscu, storescu
from tests.peers.fixtures import start_listener  # noqa: F401 - the fixture
from tests.peers.syslog import Receiver, syslog_receiver

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


@pytest.fixture()
def rx(home: Path) -> Iterator[tuple[Receiver, Settings]]:
    with syslog_receiver("tcp") as receiver:
        settings = Settings(home=home, audit_syslog_host="127.0.0.1",
                            audit_syslog_port=receiver.port, audit_syslog_transport="tcp",
                            audit_source_id="DEIDGATE-T")
        atna_export.configure(settings, announce=False)
        try:
            yield receiver, settings
        finally:
            atna_export.reset()


def _messages(receiver: Receiver, n: int, schema: etree.RelaxNG) -> list[etree._Element]:
    exporter = atna_export.current()
    assert exporter is not None
    exporter.sender.flush(10)
    frames = receiver.wait(n)
    assert not receiver.errors
    out = []
    for f in frames:
        root = etree.fromstring(f.msg)
        assert schema.validate(root), schema.error_log
        out.append(root)
    return out


def _event(root: etree._Element) -> tuple[str, str]:
    ev = root.find("EventIdentification")
    assert ev is not None
    code = ev.find("EventID")
    assert code is not None
    return str(code.get("csd-code")), str(ev.get("EventActionCode"))


def _texts(root: etree._Element) -> str:
    return etree.tostring(root).decode()


def test_store_events_reach_the_siem_after_commit(migrated_db: str, site_keys: SiteKeys,
                                                  rx: tuple[Receiver, Settings],
                                                  schema: etree.RelaxNG) -> None:
    receiver, _ = rx
    with session_scope(migrated_db) as s:  # rolled back: never sent
        AuditStore(s, site_keys).record_outcome(outcome(7), source="cli", job_id=None)
        s.rollback()
    with session_scope(migrated_db) as s:
        AuditStore(s, site_keys).record_outcome(outcome(1), source="cli", job_id="job-9")
    with session_scope(migrated_db) as s:
        store = AuditStore(s, site_keys)
        store.lookup(pseudonyms(1)["patient"], reason="ticket-42", actor="dr.who")
        store.find_pseudonyms("accession", originals(1)["accession"], reason="t", actor="dpo")
    deid, reid, lookup = _messages(receiver, 3, schema)
    assert _event(deid) == ("110103", "C")  # DICOM Instances Accessed, create
    assert pseudonyms(1)["study"] in _texts(deid) and pseudonyms(1)["patient"] in _texts(deid)
    assert _event(reid) == ("110110", "R")  # Patient Record, read
    ids = {o.get("ParticipantObjectID") for o in reid.iter("ParticipantObjectIdentification")}
    assert ids == {pseudonyms(1)["patient"], originals(1)["patient"]}  # what ATNA requires
    assert "ticket-42" not in _texts(reid)  # the reason stays in the tamper-evident log
    assert _event(lookup) == ("110110", "R")
    for root, allowed in ((deid, set()), (reid, {"patient"}), (lookup, set())):
        text = _texts(root)
        for kind, value in originals(1).items():
            if kind not in allowed:
                assert value not in text, kind
    assert originals(7)["patient"] not in "".join(_texts(m) for m in (deid, reid, lookup))


def test_sign_in_config_changes_and_keys(migrated_db: str, home: Path,
                                         rx: tuple[Receiver, Settings],
                                         schema: etree.RelaxNG) -> None:
    receiver, settings = rx
    settings.database_url = migrated_db
    keys = SiteKeys.load(home / "keys" / "site.key")
    with session_scope(migrated_db) as s:
        accounts.create_user(s, name="alice", role="staff", password="a long pass phrase 9")
    with session_scope(migrated_db) as s:
        signin.with_password(s, settings, keys, name="alice", password="a long pass phrase 9",
                             client="127.0.0.9")
    with session_scope(migrated_db) as s, pytest.raises(signin.SignInRefused):
        signin.with_password(s, settings, keys, name="alice", password="wrong wrong wrong",
                             client="127.0.0.9")
    login_ok, login_bad = _messages(receiver, 2, schema)
    assert _event(login_ok) == ("110114", "E") and _event(login_bad) == ("110114", "E")
    assert login_ok.find("EventIdentification").get("EventOutcomeIndicator") == "0"
    assert login_bad.find("EventIdentification").get("EventOutcomeIndicator") == "4"
    assert "alice" in _texts(login_bad) and "wrong" not in _texts(login_bad)

    atna_export.reset()  # the CLI process installs its own exporter from its settings
    env = {"DEIDGATE_HOME": str(home), "DEIDGATE_DATABASE_URL": migrated_db,
           "DEIDGATE_AUDIT_SYSLOG_HOST": "127.0.0.1",
           "DEIDGATE_AUDIT_SYSLOG_PORT": str(receiver.port),
           "DEIDGATE_AUDIT_SYSLOG_TRANSPORT": "tcp"}
    runner = CliRunner()
    for args in (["ae", "allow", "MODALITY1"], ["pacs", "add", "pacs1", "--ae-title", "PACS1",
                                                "--host", "127.0.0.1", "--port", "104"],
                 ["keys", "rotate"]):
        r = runner.invoke(app, args, env=env)
        assert r.exit_code == 0, r.output
    msgs = _messages(receiver, 2 + 4, schema)[2:]  # rotate: created + activated
    changed = {o.get("ParticipantObjectID")
               for m in msgs for o in m.iter("ParticipantObjectIdentification")}
    assert {"MODALITY1", "pacs1"} <= changed
    assert all(_event(m) == ("110113", "E") for m in msgs)  # Security Alert
    types = {t.get("csd-code") for m in msgs for t in m.iter("EventTypeCode")}
    assert {"110128", "110129"} <= types  # Network and Security Configuration


def test_listener_associations(sqlite_db: str, site_keys: SiteKeys, tmp_path: Path,
                               rx: tuple[Receiver, Settings], schema: etree.RelaxNG,
                               start_listener: Callable[..., Listener]) -> None:  # noqa: F811
    receiver, _ = rx
    listener = start_listener(sqlite_db, site_keys, tmp_path / "spool")
    assert echoscu(listener.port, calling="STRANGER").returncode != 0
    with session_scope(sqlite_db) as s:
        admin.allow(s, "STORESCU", None)
    exam = fresh_exam(tmp_path / "exam", index=5, views=2)
    r = storescu(listener.port, exam.files)
    assert r.returncode == 0, r.stderr
    refused, received = _messages(receiver, 2, schema)
    assert _event(refused) == ("110113", "E")
    assert "STRANGER" in _texts(refused)
    assert _event(received) == ("110104", "C")  # DICOM Instances Transferred
    text = _texts(received)
    assert exam.study_uid not in text and exam.patient_id not in text
    assert exam.accession not in text
    sop = next(received.iter("SOPClass"))
    assert sop.get("NumberOfInstances") == "2"


@pytest.fixture()
def sqlite_db(tmp_path: Path) -> str:
    from service.db.migrate import upgrade

    url = f"sqlite:///{tmp_path / 'deidgate.db'}"
    upgrade(url)
    return url




def test_query_and_retrieve_through_the_pacs_adapter(
        sqlite_db: str, tmp_path: Path, home: Path, rx: tuple[Receiver, Settings],
        schema: etree.RelaxNG, start_listener: Callable[..., Listener]) -> None:  # noqa: F811
    import base64
    import json

    from service.jobs import pacs as adapter
    from synthetic.pacs import SamplePacs

    receiver, settings = rx
    settings.database_url = sqlite_db
    exam = fresh_exam(tmp_path / "pacs", index=8, views=1)
    with SamplePacs(list(exam.files), ae_title="SAMPLEPACS") as pacs:
        with session_scope(sqlite_db) as s:
            admin.seed_from_settings(s, settings)
            admin.add_node(s, "pacs1", ae_title="SAMPLEPACS", host="127.0.0.1", port=pacs.port)
        found = adapter.find(settings, "pacs1", {"accession_numbers": [exam.accession]})
        assert [f.study_uid for f in found] == [exam.study_uid]
        keys = SiteKeys.for_settings(settings)
        listener = start_listener(sqlite_db, keys, tmp_path / "spool")
        pacs.add_destination("DEIDGATE", "127.0.0.1", listener.port)
        with session_scope(sqlite_db) as s:
            admin.allow(s, "SAMPLEPACS", None)
        got = adapter.retrieve(settings, "pacs1", exam.study_uid, found[0].expected, attempt=1,
                               job="job-7")
        assert got.complete, got
    query, *transfer = _messages(receiver, 4, schema)  # the listener's and ours: any order
    assert sorted(_event(m) for m in transfer) == [
        ("110102", "E"),  # Begin Transferring DICOM Instances (the retrieval's start)
        ("110104", "C"), ("110104", "C")]  # Instances Transferred: retrieved, and received
    jobs = [base64.b64decode(d.get("value", "")) for m in transfer
            for d in m.iter("ParticipantObjectDetail") if d.get("type") == "job"]
    assert jobs == [b"job-7", b"job-7"]  # started and retrieved name the job
    for m in transfer:
        for value in (exam.accession, exam.patient_id, exam.study_uid):
            assert value not in _texts(m)
    assert _event(query) == ("110112", "E")  # Query
    asked = query.find(".//ParticipantObjectQuery")
    assert asked is not None and asked.text
    summary = json.loads(base64.b64decode(asked.text))
    assert summary == {"level": "STUDY", "keys": ["accession_numbers"], "matches": 1}
    text = _texts(query)
    for value in (exam.accession, exam.patient_id, exam.study_uid):
        assert value not in text
