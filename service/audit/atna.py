"""ATNA audit messages: the DICOM PS3.15 Annex A.5 XML model (codes, participants, ``build``).

The messages themselves, and which event each audit-store event becomes, are in
``service.audit.atna_events``; the XML follows the DICOM audit message schema (``atna.rng``
beside this file, which the tests validate every message kind against).
"""

from __future__ import annotations

import base64
import ipaddress
import socket
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import IntEnum, StrEnum
from pathlib import Path

from service.core.config import Settings

SCHEMA = Path(__file__).with_name("atna.rng")


@dataclass(frozen=True)
class Code:
    code: str
    system: str
    meaning: str


def _dcm(code: str, meaning: str) -> Code:
    return Code(code, "DCM", meaning)


# EventID (CID 400) and EventTypeCode (CID 401)
APPLICATION_ACTIVITY = _dcm("110100", "Application Activity")
BEGIN_TRANSFERRING = _dcm("110102", "Begin Transferring DICOM Instances")
INSTANCES_ACCESSED = _dcm("110103", "DICOM Instances Accessed")
INSTANCES_TRANSFERRED = _dcm("110104", "DICOM Instances Transferred")
EXPORT = _dcm("110106", "Export")
PATIENT_RECORD = _dcm("110110", "Patient Record")
QUERY = _dcm("110112", "Query")
SECURITY_ALERT = _dcm("110113", "Security Alert")
USER_AUTHENTICATION = _dcm("110114", "User Authentication")
APPLICATION_START = _dcm("110120", "Application Start")
APPLICATION_STOP = _dcm("110121", "Application Stop")
LOGIN = _dcm("110122", "Login")
LOGOUT = _dcm("110123", "Logout")
NODE_AUTHENTICATION = _dcm("110126", "Node Authentication")
NETWORK_CONFIGURATION = _dcm("110128", "Network Configuration")
SECURITY_CONFIGURATION = _dcm("110129", "Security Configuration")
SOFTWARE_CONFIGURATION = _dcm("110131", "Software Configuration")
# RoleIDCode (CID 402)
ROLE_APPLICATION = _dcm("110150", "Application")
ROLE_DESTINATION = _dcm("110152", "Destination Role ID")
ROLE_SOURCE = _dcm("110153", "Source Role ID")
# ParticipantObjectIDTypeCode: DICOM's (CID 404), RFC 3881's, and ours (99DEIDGATE, local)
STUDY_INSTANCE_UID = _dcm("110180", "Study Instance UID")
SOP_CLASS_UID = _dcm("110181", "SOP Class UID")
PATIENT_NUMBER = Code("2", "RFC-3881", "Patient Number")
STUDY_KEY = Code("study-key", "99DEIDGATE", "Keyed hash of a Study Instance UID")
PSEUDONYM = Code("pseudonym", "99DEIDGATE", "Pseudonym")
MAPPING_TABLE = Code("mapping-table", "99DEIDGATE", "Pseudonym mapping table")
CONFIG_ITEM = Code("config-item", "99DEIDGATE", "Configuration item")

class Outcome(IntEnum):
    success = 0
    minor_failure = 4
    serious_failure = 8
    major_failure = 12


class ConfigArea(StrEnum):
    network = "network"  # nodes, allow-list, the local AE, TLS pins
    security = "security"  # tokens, users, roles, keys
    software = "software"  # policies, software


@dataclass(frozen=True)
class AuditSource:
    """The gateway as it names itself in every message (AuditSourceIdentification)."""

    source_id: str
    ae_title: str
    host: str
    site_id: str = ""

    @classmethod
    def from_settings(cls, settings: Settings, host: str | None = None) -> AuditSource:
        return cls(source_id=settings.audit_source_id or settings.ae_title,
                   ae_title=settings.ae_title, host=host or socket.gethostname(),
                   site_id=settings.audit_enterprise_site_id)


@dataclass(frozen=True)
class Participant:
    user_id: str
    requestor: bool
    role: Code | None = None
    access_point: str | None = None
    alternative_id: str | None = None


@dataclass(frozen=True)
class ParticipantObject:
    object_id: str
    id_type: Code
    name: str | None = None
    query: bytes | None = None
    type_code: int | None = None
    role: int | None = None
    lifecycle: int | None = None
    details: tuple[tuple[str, str], ...] = ()
    sop_classes: tuple[tuple[str, int], ...] = ()
    anonymized: bool | None = None


@dataclass(frozen=True)
class AtnaMessage:
    event: str  # our short name, e.g. "deidentification" (the syslog SD and tests use it)
    outcome: Outcome
    xml: bytes

    @property
    def severity(self) -> int:
        """Syslog severity (IHE ITI-20): 5 notice, 4 warning for any failure."""
        return 5 if self.outcome is Outcome.success else 4


def _code(parent: ET.Element, tag: str, c: Code) -> None:
    ET.SubElement(parent, tag, {"csd-code": c.code, "codeSystemName": c.system,
                                "originalText": c.meaning})


def _access_point_type(value: str) -> str:
    try:
        ipaddress.ip_address(value)
        return "2"
    except ValueError:
        return "1"


def build(event: str, event_id: Code, action: str, outcome: Outcome,
          participants: Sequence[Participant], source: AuditSource,
          objects: Sequence[ParticipantObject] = (), *, type_codes: Sequence[Code] = (),
          description: str | None = None, at: datetime | None = None) -> AtnaMessage:
    root = ET.Element("AuditMessage")
    ev = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": action,
        "EventDateTime": (at or datetime.now(UTC)).isoformat(timespec="milliseconds"),
        "EventOutcomeIndicator": str(int(outcome))})
    _code(ev, "EventID", event_id)
    for tc in type_codes:
        _code(ev, "EventTypeCode", tc)
    if description:
        ET.SubElement(ev, "EventOutcomeDescription").text = description
    for p in participants:
        attrs = {"UserID": p.user_id, "UserIsRequestor": "true" if p.requestor else "false"}
        if p.alternative_id:
            attrs["AlternativeUserID"] = p.alternative_id
        if p.access_point:
            attrs["NetworkAccessPointID"] = p.access_point
            attrs["NetworkAccessPointTypeCode"] = _access_point_type(p.access_point)
        ap = ET.SubElement(root, "ActiveParticipant", attrs)
        if p.role is not None:
            _code(ap, "RoleIDCode", p.role)
    src_attrs = {"AuditSourceID": source.source_id}
    if source.site_id:
        src_attrs = {"AuditEnterpriseSiteID": source.site_id, **src_attrs}
    src = ET.SubElement(root, "AuditSourceIdentification", src_attrs)
    ET.SubElement(src, "AuditSourceTypeCode", {"csd-code": "4"})  # application server process
    for o in objects:
        _object(root, o)
    return AtnaMessage(event, outcome, ET.tostring(root, encoding="utf-8",
                                                   xml_declaration=True))


def _object(root: ET.Element, o: ParticipantObject) -> None:
    attrs = {"ParticipantObjectID": o.object_id}
    for attr, number in (("ParticipantObjectTypeCode", o.type_code),
                         ("ParticipantObjectTypeCodeRole", o.role),
                         ("ParticipantObjectDataLifeCycle", o.lifecycle)):
        if number is not None:
            attrs[attr] = str(number)
    el = ET.SubElement(root, "ParticipantObjectIdentification", attrs)
    _code(el, "ParticipantObjectIDTypeCode", o.id_type)
    if o.query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = base64.b64encode(o.query).decode()
    else:
        ET.SubElement(el, "ParticipantObjectName").text = o.name or o.object_id
    for key, value in o.details:
        ET.SubElement(el, "ParticipantObjectDetail", {
            "type": key, "value": base64.b64encode(value.encode()).decode()})
    if o.sop_classes or o.anonymized is not None:
        desc = ET.SubElement(el, "ParticipantObjectDescription")
        for uid, count in o.sop_classes:
            ET.SubElement(desc, "SOPClass", {"UID": uid, "NumberOfInstances": str(count)})
        if o.anonymized is not None:
            ET.SubElement(desc, "Anonymized").text = "true" if o.anonymized else "false"


