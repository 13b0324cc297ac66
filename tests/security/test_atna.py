"""ATNA messages: every kind validates against the DICOM audit message schema (RELAX NG, lxml),
carries the right codes, and no planted PHI except where the re-identification needs it."""

from __future__ import annotations

import base64
import contextlib
import json
from collections.abc import Callable

import pytest
from lxml import etree

from service.audit import atna_events as ev
from service.audit.atna import SCHEMA, AtnaMessage, AuditSource, Outcome

SOURCE = AuditSource(source_id="DEIDGATE-1", ae_title="DEIDGATE", host="10.1.2.3",
                     site_id="Synthetic Hospital")
MG = "1.2.840.10008.5.1.4.1.1.1.2"

# PHI as the store, the listener and the SCU might have it in hand; none of it may appear
PHI = {
    "name": "Nordmann^Kari", "patient_id": "PID0042X", "birth": "19650312",
    "accession": "ACC777123", "study_uid": "1.2.826.0.1.3680043.8.498.1234567890",
    "path": "/data/incoming/Nordmann_Kari",
}


@pytest.fixture(scope="module")
def schema() -> etree.RelaxNG:
    return etree.RelaxNG(etree.parse(str(SCHEMA)))


def _all_messages() -> dict[str, AtnaMessage]:
    """One of each kind, built the way the gateway will build them (store events included,
    with the PHI-bearing keys a careless caller might leave in ``details``)."""
    def store(event_kind: str, actor: str, **details: object) -> AtnaMessage:
        msg = ev.message_for(event_kind, actor=actor, details=details, source=SOURCE)
        assert msg is not None, event_kind
        return msg

    return {
        "start": ev.application_activity(SOURCE, started=True),
        "refused": ev.association_refused(SOURCE, calling_ae="MODALITY", peer_host="10.9.9.9",
                                          reason="tls-certificate-ae-mismatch"),
        "received": ev.instances_received(SOURCE, calling_ae="MODALITY", peer_host="10.9.9.9",
                                          study_key="ab" * 32, sop_classes={MG: 4}),
        "query": ev.query(SOURCE, node_ae="PACS", node_host="10.5.5.5", level="STUDY",
                          keys=["AccessionNumber", "StudyInstanceUID"], matches=1),
        "retrieve-started": ev.retrieve_started(SOURCE, node_ae="PACS", node_host="10.5.5.5",
                                                study_key="cd" * 32, job="job-1"),
        "retrieved": ev.retrieved(SOURCE, node_ae="PACS", node_host="10.5.5.5",
                                  study_key="cd" * 32, job="job-1", sop_classes={MG: 4}),
        "deidentified": store("deidentified", "deidgate", patient="P-7F3A", study="2.25.999",
                              series="2.25.998", instance="2.25.997", sop_class=MG,
                              policy="mammography-screening", policy_version="3",
                              source=PHI["path"], job_id="job-1", mappings=6),
        "forwarded": ev.forwarded(SOURCE, dest_ae="RESEARCH", dest_host="10.7.7.7",
                                  study_uid="2.25.999", patient_pseudonym="P-7F3A",
                                  sop_classes={MG: 4}, job="job-1"),
        "reidentify": ev.message_for("reidentify", actor="dr.hansen", details={
            "pseudonym": "P-7F3A", "reason": f"ticket 42 for {PHI['name']}", "matches": 1,
            "kinds": ["patient"], "client": "10.3.3.3"}, source=SOURCE,
            disclosed_patient_id=PHI["patient_id"]) or pytest.fail("no message"),
        "lookup-original": store("lookup-original", "dr.hansen", kind="patient",
                                 reason=PHI["name"], pseudonyms=["P-7F3A"]),
        "export": store("export-mapping", "admin", kind="patient", rows=120),
        "login": store("login", "dr.hansen", client="10.3.3.3"),
        "login-failed": store("login-failed", "mallory", client="10.6.6.6"),
        "logout": store("logout", "dr.hansen", client="10.3.3.3"),
        "node-added": store("dicom.node-added", "admin", name="pacs-main", ae_title="PACS",
                            host="10.5.5.5", port=104),
        "local-ae": store("dicom.local-ae-changed", "admin", port=11113),
        "token": store("token.created", "admin", id=3, name="worker-token", role="service"),
        "refused-event": store("dicom.association-refused", "deidgate", calling_ae="X",
                               peer_host="10.9.9.8", reason="calling-ae-not-allowed"),
    }


MESSAGES = _all_messages()


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_every_message_validates_against_the_dicom_schema(schema: etree.RelaxNG,
                                                           name: str) -> None:
    doc = etree.fromstring(MESSAGES[name].xml)
    assert schema.validate(doc), schema.error_log.last_error


def test_the_schema_is_not_vacuous(schema: etree.RelaxNG) -> None:
    good = MESSAGES["login"].xml
    broken = {
        "outcome": good.replace(b'EventOutcomeIndicator="0"', b'EventOutcomeIndicator="1"'),
        "no source": etree.tostring(_without(good, "AuditSourceIdentification")),
        "no participant": etree.tostring(_without(good, "ActiveParticipant")),
        "order": good.replace(b"<EventIdentification", b"<Wrong", 1).replace(
            b"</EventIdentification>", b"</Wrong>"),
    }
    for what, xml in broken.items():
        assert not schema.validate(etree.fromstring(xml)), what


def _without(xml: bytes, tag: str) -> etree._Element:
    doc = etree.fromstring(xml)
    for el in doc.findall(tag):
        doc.remove(el)
    return doc


def _code(el: etree._Element, tag: str) -> tuple[str, str, str]:
    c = el.find(tag)
    assert c is not None, tag
    return c.get("csd-code"), c.get("codeSystemName"), c.get("originalText")


@pytest.mark.parametrize(("name", "event_id", "action", "type_code"), [
    ("start", "110100", "E", "110120"),
    ("refused", "110113", "E", "110126"),
    ("received", "110104", "C", None),
    ("query", "110112", "E", None),
    ("retrieve-started", "110102", "E", None),
    ("retrieved", "110104", "C", None),
    ("deidentified", "110103", "C", None),
    ("forwarded", "110104", "R", None),
    ("reidentify", "110110", "R", None),
    ("export", "110106", "R", None),
    ("login", "110114", "E", "110122"),
    ("logout", "110114", "E", "110123"),
    ("node-added", "110113", "E", "110128"),
    ("token", "110113", "E", "110129"),
])
def test_event_codes(name: str, event_id: str, action: str, type_code: str | None) -> None:
    doc = etree.fromstring(MESSAGES[name].xml)
    ident = doc.find("EventIdentification")
    assert _code(ident, "EventID")[:2] == (event_id, "DCM")
    assert ident.get("EventActionCode") == action
    types = [t.get("csd-code") for t in ident.findall("EventTypeCode")]
    assert types == ([type_code] if type_code else [])
    src = doc.find("AuditSourceIdentification")
    assert (src.get("AuditSourceID"), src.get("AuditEnterpriseSiteID")) == (
        "DEIDGATE-1", "Synthetic Hospital")


def test_failures_are_marked() -> None:
    for name in ("refused", "login-failed"):
        msg = MESSAGES[name]
        assert msg.outcome is Outcome.minor_failure and msg.severity == 4
        assert b'EventOutcomeIndicator="4"' in msg.xml
    assert MESSAGES["login"].severity == 5
    desc = etree.fromstring(MESSAGES["refused"].xml).findtext(
        "EventIdentification/EventOutcomeDescription")
    assert desc == "tls-certificate-ae-mismatch"


def test_participants_of_a_transfer() -> None:
    doc = etree.fromstring(MESSAGES["received"].xml)
    parts = {(p.get("UserID"), p.get("UserIsRequestor"), _code(p, "RoleIDCode")[0],
              p.get("NetworkAccessPointID"), p.get("NetworkAccessPointTypeCode"))
             for p in doc.findall("ActiveParticipant")}
    assert parts == {("MODALITY", "true", "110153", "10.9.9.9", "2"),
                     ("DEIDGATE", "false", "110152", "10.1.2.3", "2")}
    study = doc.find("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == "ab" * 32
    sop = study.find("ParticipantObjectDescription/SOPClass")
    assert (sop.get("UID"), sop.get("NumberOfInstances")) == (MG, "4")


def test_deidentification_objects() -> None:
    doc = etree.fromstring(MESSAGES["deidentified"].xml)
    study, patient = doc.findall("ParticipantObjectIdentification")
    assert study.get("ParticipantObjectID") == "2.25.999"
    assert _code(study, "ParticipantObjectIDTypeCode")[0] == "110180"
    assert study.get("ParticipantObjectDataLifeCycle") == "7"
    assert study.findtext("ParticipantObjectDescription/Anonymized") == "true"
    details = {d.get("type"): base64.b64decode(d.get("value")).decode()
               for d in study.findall("ParticipantObjectDetail")}
    assert details == {"policy": "mammography-screening", "policy-version": "3", "job": "job-1"}
    assert (patient.get("ParticipantObjectID"), patient.get("ParticipantObjectTypeCodeRole"),
            patient.get("ParticipantObjectDataLifeCycle")) == ("P-7F3A", "1", "7")


def test_query_carries_keywords_never_values() -> None:
    obj = etree.fromstring(MESSAGES["query"].xml).find("ParticipantObjectIdentification")
    assert obj.get("ParticipantObjectID") == "1.2.840.10008.5.1.4.1.2.2.1"
    assert obj.get("ParticipantObjectTypeCodeRole") == "24"
    summary = json.loads(base64.b64decode(obj.findtext("ParticipantObjectQuery")))
    assert summary == {"level": "STUDY", "keys": ["AccessionNumber", "StudyInstanceUID"],
                       "matches": 1}


def _decoded_texts(xml: bytes) -> str:
    """The message with every base64 field decoded too, so PHI cannot hide in encoding."""
    doc = etree.fromstring(xml)
    parts = [xml.decode()]
    for el in doc.iter():
        for value in [el.text or "", *el.attrib.values()]:
            with contextlib.suppress(ValueError):  # not base64: already in the raw text
                parts.append(base64.b64decode(value, validate=True).decode("utf-8", "replace"))
    return "\n".join(parts)


@pytest.mark.parametrize("name", sorted(MESSAGES))
def test_no_phi_except_the_disclosed_patient_id(name: str) -> None:
    text = _decoded_texts(MESSAGES[name].xml)
    for what, value in PHI.items():
        if name == "reidentify" and what == "patient_id":
            continue
        assert value not in text, (name, what)


def test_reidentification_names_the_patient_id_once_in_its_place() -> None:
    xml = MESSAGES["reidentify"].xml
    assert xml.count(PHI["patient_id"].encode()) == 1
    doc = etree.fromstring(xml)
    pseudonym, patient = doc.findall("ParticipantObjectIdentification")
    assert patient.get("ParticipantObjectID") == PHI["patient_id"]
    assert _code(patient, "ParticipantObjectIDTypeCode")[:2] == ("2", "RFC-3881")
    assert (patient.get("ParticipantObjectTypeCode"),
            patient.get("ParticipantObjectTypeCodeRole"),
            patient.get("ParticipantObjectDataLifeCycle")) == ("1", "1", "11")
    assert patient.findtext("ParticipantObjectName") == "P-7F3A"  # never the patient's name
    assert pseudonym.get("ParticipantObjectID") == "P-7F3A"
    operator = doc.find("ActiveParticipant")
    assert (operator.get("UserID"), operator.get("UserIsRequestor")) == ("dr.hansen", "true")
    without = ev.reidentified(SOURCE, operator="dr.hansen", operator_host=None,
                              pseudonym="S-1", kinds=["study"], matches=1, patient_id=None)
    assert len(etree.fromstring(without.xml).findall("ParticipantObjectIdentification")) == 1


def test_kinds_without_an_atna_event() -> None:
    assert ev.message_for("job.submitted", actor="x", details={}, source=SOURCE) is None


@pytest.mark.parametrize("builder", [
    lambda: ev.message_for("deidentified", actor="a", details={}, source=SOURCE),
    lambda: ev.message_for("export-mapping", actor="a", details={"rows": "many"},
                           source=SOURCE),
])
def test_malformed_details_raise_for_the_exporter_to_count(
        builder: Callable[[], object]) -> None:
    with pytest.raises((KeyError, ValueError)):
        builder()
