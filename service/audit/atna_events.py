"""ATNA audit messages for the hospital's audit repository (SIEM): one builder per event kind.

Each builder below makes one message kind; ``message_for`` maps the audit store's event kinds
onto them, so ``AuditStore.log_event`` can hand every event over with one call. The XML follows
the DICOM audit message schema (``atna.rng`` beside this file, checked by the tests).

What a message may name (the rule that keeps PHI out of the SIEM): AE titles, node names,
addresses, user names of staff, pseudonyms, de-identified UIDs, keyed hashes, SOP Class UIDs,
codes and counts. Never a patient name, patient ID, accession number or original UID, with one
exception: the re-identification message names the patient whose identity was disclosed, by
the original Patient ID only (ATNA's Patient participant object needs it: the privacy officer's
"who saw this patient's identity" question cannot be answered without it). Its name is not
sent; ParticipantObjectName carries the pseudonym instead, and the operator's reason stays in
the tamper-evident audit log.

Event choices (PS3.15 A.5.3), including the one the standard leaves open:
- association refused: Security Alert / Node Authentication, minor failure, the reason code;
- instances received, retrieved: DICOM Instances Transferred, action C (we create copies);
  a retrieval's start: Begin Transferring DICOM Instances; forwarding: Instances Transferred, R;
- query: Query, action E; ParticipantObjectQuery holds the query's *keywords* and level as
  JSON, never its values (the standard asks for the dataset itself, which carries PHI);
- de-identification: DICOM Instances Accessed, action C (new de-identified instances are made),
  the study and the patient pseudonym as participant objects with life cycle 7
  "De-identification" and ``Anonymized`` true. The standard has no de-identification event,
  and Export (110106) is for data leaving the organisation's control: that is the mapping
  export (pseudonym -> original in bulk), which is audited as Export;
- re-identification (and lookup by original): Patient Record, action R, life cycle 11
  "Disclosure";
- login/logout: User Authentication / Login, Logout (minor failure for a refused login);
- configuration change: Security Alert / Network Configuration (nodes, allow-list, local AE),
  Security Configuration (tokens, users, keys), Software Configuration (policies, software).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from service.audit.atna import (
    APPLICATION_ACTIVITY,
    APPLICATION_START,
    APPLICATION_STOP,
    BEGIN_TRANSFERRING,
    CONFIG_ITEM,
    EXPORT,
    INSTANCES_ACCESSED,
    INSTANCES_TRANSFERRED,
    LOGIN,
    LOGOUT,
    MAPPING_TABLE,
    NETWORK_CONFIGURATION,
    NODE_AUTHENTICATION,
    PATIENT_NUMBER,
    PATIENT_RECORD,
    PSEUDONYM,
    QUERY,
    ROLE_APPLICATION,
    ROLE_DESTINATION,
    ROLE_SOURCE,
    SECURITY_ALERT,
    SECURITY_CONFIGURATION,
    SOFTWARE_CONFIGURATION,
    SOP_CLASS_UID,
    STUDY_INSTANCE_UID,
    STUDY_KEY,
    USER_AUTHENTICATION,
    AtnaMessage,
    AuditSource,
    Code,
    ConfigArea,
    Outcome,
    Participant,
    ParticipantObject,
    build,
)

STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"

_CONFIG_CODES: dict[ConfigArea, Code] = {
    ConfigArea.network: NETWORK_CONFIGURATION,
    ConfigArea.security: SECURITY_CONFIGURATION,
    ConfigArea.software: SOFTWARE_CONFIGURATION,
}


def _us(source: AuditSource, *, requestor: bool, role: Code | None = None) -> Participant:
    return Participant(source.ae_title, requestor, role, source.host,
                       alternative_id=source.source_id)


def _sop(sop_classes: Mapping[str, int]) -> tuple[tuple[str, int], ...]:
    return tuple(sorted((str(k), int(v)) for k, v in sop_classes.items()))


def _outcome(ok: bool) -> Outcome:
    return Outcome.success if ok else Outcome.minor_failure


# --- the builders -----------------------------------------------------------------------------

def application_activity(source: AuditSource, *, started: bool) -> AtnaMessage:
    return build("application-" + ("start" if started else "stop"), APPLICATION_ACTIVITY, "E",
                 Outcome.success, [_us(source, requestor=False, role=ROLE_APPLICATION)], source,
                 type_codes=[APPLICATION_START if started else APPLICATION_STOP])


def association_refused(source: AuditSource, *, calling_ae: str, peer_host: str,
                        reason: str) -> AtnaMessage:
    """``reason``: a refusal code (``TlsRefusal`` or ``calling-ae-not-allowed``)."""
    return build("association-refused", SECURITY_ALERT, "E", Outcome.minor_failure,
                 [Participant(calling_ae, True, ROLE_SOURCE, peer_host),
                  _us(source, requestor=False, role=ROLE_DESTINATION)], source,
                 type_codes=[NODE_AUTHENTICATION], description=reason)


def instances_received(source: AuditSource, *, calling_ae: str, peer_host: str, study_key: str,
                       sop_classes: Mapping[str, int], ok: bool = True,
                       reason: str | None = None) -> AtnaMessage:
    """One per study and association, at its end; ``study_key`` is the keyed hash."""
    return build("instances-received", INSTANCES_TRANSFERRED, "C", _outcome(ok),
                 [Participant(calling_ae, True, ROLE_SOURCE, peer_host),
                  _us(source, requestor=False, role=ROLE_DESTINATION)], source,
                 [ParticipantObject(study_key, STUDY_KEY, type_code=2, role=3,
                                    sop_classes=_sop(sop_classes))], description=reason)


def query(source: AuditSource, *, node_ae: str, node_host: str, level: str,
          keys: Sequence[str], matches: int, sop_class: str = STUDY_ROOT_FIND, ok: bool = True,
          reason: str | None = None) -> AtnaMessage:
    """``keys``: the query's attribute keywords (never their values)."""
    summary = json.dumps({"level": level, "keys": sorted(keys), "matches": matches},
                         separators=(",", ":")).encode()
    return build("query", QUERY, "E", _outcome(ok),
                 [_us(source, requestor=True, role=ROLE_SOURCE),
                  Participant(node_ae, False, ROLE_DESTINATION, node_host)], source,
                 [ParticipantObject(sop_class, SOP_CLASS_UID, query=summary, type_code=2,
                                    role=24, details=(("matches", str(matches)),))],
                 description=reason)


def retrieve_started(source: AuditSource, *, node_ae: str, node_host: str, study_key: str,
                     job: str) -> AtnaMessage:
    return build("retrieve-started", BEGIN_TRANSFERRING, "E", Outcome.success,
                 [Participant(node_ae, False, ROLE_SOURCE, node_host),
                  _us(source, requestor=True, role=ROLE_DESTINATION)], source,
                 [ParticipantObject(study_key, STUDY_KEY, type_code=2, role=3,
                                    details=(("job", job),))])


def retrieved(source: AuditSource, *, node_ae: str, node_host: str, study_key: str, job: str,
              sop_classes: Mapping[str, int], ok: bool = True,
              reason: str | None = None) -> AtnaMessage:
    return build("retrieved", INSTANCES_TRANSFERRED, "C", _outcome(ok),
                 [Participant(node_ae, False, ROLE_SOURCE, node_host),
                  _us(source, requestor=True, role=ROLE_DESTINATION)], source,
                 [ParticipantObject(study_key, STUDY_KEY, type_code=2, role=3,
                                    details=(("job", job),), sop_classes=_sop(sop_classes))],
                 description=reason)


def _deid_objects(study_uid: str, patient_pseudonym: str | None,
                  sop_classes: Mapping[str, int],
                  details: tuple[tuple[str, str], ...]) -> list[ParticipantObject]:
    objects = [ParticipantObject(study_uid, STUDY_INSTANCE_UID, type_code=2, role=3,
                                 lifecycle=7, details=details, sop_classes=_sop(sop_classes),
                                 anonymized=True)]
    if patient_pseudonym:
        objects.append(ParticipantObject(patient_pseudonym, PSEUDONYM, type_code=1, role=1,
                                         lifecycle=7))
    return objects


def deidentified(source: AuditSource, *, study_uid: str, patient_pseudonym: str | None,
                 sop_classes: Mapping[str, int], policy: str, policy_version: str,
                 job: str | None = None, ok: bool = True,
                 reason: str | None = None) -> AtnaMessage:
    """``study_uid``: the de-identified (new) Study Instance UID."""
    details = (("policy", policy), ("policy-version", policy_version),
               *((("job", job),) if job else ()))
    return build("deidentification", INSTANCES_ACCESSED, "C", _outcome(ok),
                 [_us(source, requestor=True, role=ROLE_APPLICATION)], source,
                 _deid_objects(study_uid, patient_pseudonym, sop_classes, details),
                 description=reason)


def forwarded(source: AuditSource, *, dest_ae: str, dest_host: str, study_uid: str,
              patient_pseudonym: str | None, sop_classes: Mapping[str, int],
              job: str | None = None, ok: bool = True,
              reason: str | None = None) -> AtnaMessage:
    details = (("job", job),) if job else ()
    return build("forwarded", INSTANCES_TRANSFERRED, "R", _outcome(ok),
                 [_us(source, requestor=True, role=ROLE_SOURCE),
                  Participant(dest_ae, False, ROLE_DESTINATION, dest_host)], source,
                 _deid_objects(study_uid, patient_pseudonym, sop_classes, details),
                 description=reason)


def reidentified(source: AuditSource, *, operator: str, operator_host: str | None,
                 pseudonym: str, kinds: Sequence[str], matches: int,
                 patient_id: str | None) -> AtnaMessage:
    """The one message naming a patient: ``patient_id`` (the original Patient ID) when the
    re-identification disclosed it. Nothing else identifying: no name, no reason text."""
    objects = [ParticipantObject(pseudonym, PSEUDONYM, name=",".join(sorted(kinds)) or "none",
                                 type_code=2, role=4, lifecycle=11,
                                 details=(("matches", str(matches)),))]
    if patient_id:
        objects.append(ParticipantObject(patient_id, PATIENT_NUMBER, name=pseudonym,
                                         type_code=1, role=1, lifecycle=11))
    return build("reidentification", PATIENT_RECORD, "R", Outcome.success,
                 [Participant(operator, True, None, operator_host),
                  _us(source, requestor=False, role=ROLE_APPLICATION)], source, objects)


def mapping_exported(source: AuditSource, *, operator: str, kind: str, rows: int) -> AtnaMessage:
    return build("mapping-export", EXPORT, "R", Outcome.success,
                 [Participant(operator, True, ROLE_SOURCE),
                  _us(source, requestor=False, role=ROLE_APPLICATION)], source,
                 [ParticipantObject(kind, MAPPING_TABLE, type_code=2, role=22, lifecycle=10,
                                    details=(("rows", str(rows)),))])


def login(source: AuditSource, *, user: str, client_host: str | None, ok: bool = True,
          logout: bool = False) -> AtnaMessage:
    return build("logout" if logout else "login", USER_AUTHENTICATION, "E", _outcome(ok),
                 [Participant(user, True, None, client_host),
                  _us(source, requestor=False, role=ROLE_APPLICATION)], source,
                 type_codes=[LOGOUT if logout else LOGIN])


def configuration_changed(source: AuditSource, *, actor: str, area: ConfigArea | str,
                          item: str, change: str, actor_host: str | None = None) -> AtnaMessage:
    """``item``: what changed (a node name, an AE title, a token name); ``change``: our event
    kind, e.g. ``dicom.node-added``."""
    area = ConfigArea(area)
    return build("configuration-change", SECURITY_ALERT, "E", Outcome.success,
                 [Participant(actor, True, None, actor_host),
                  _us(source, requestor=False, role=ROLE_APPLICATION)], source,
                 [ParticipantObject(item, CONFIG_ITEM, name=change, type_code=2, role=13)],
                 type_codes=[_CONFIG_CODES[area]])


# --- the audit store's event kinds ------------------------------------------------------------

Builder = Callable[[AuditSource, str, Mapping[str, Any], str | None], AtnaMessage | None]


def _first(details: Mapping[str, Any], keys: Sequence[str], default: str) -> str:
    for k in keys:
        if details.get(k):
            return str(details[k])
    return default


def _config(area: ConfigArea, *keys: str, default: str = "unknown") -> Builder:
    return lambda src, actor, d, _pid: configuration_changed(
        src, actor=actor, area=area, item=_first(d, keys, default),
        change=str(d.get("_kind", "")))


EVENT_KINDS: dict[str, Builder] = {
    "deidentified": lambda src, actor, d, _pid: deidentified(
        src, study_uid=str(d["study"]), patient_pseudonym=d.get("patient"),
        sop_classes={str(d["sop_class"]): 1} if d.get("sop_class") else {},
        policy=str(d.get("policy", "")), policy_version=str(d.get("policy_version", "")),
        job=d.get("job_id")),
    "reidentify": lambda src, actor, d, pid: reidentified(
        src, operator=actor, operator_host=d.get("client"), pseudonym=str(d["pseudonym"]),
        kinds=list(d.get("kinds", [])), matches=int(d.get("matches", 0)), patient_id=pid),
    "lookup-original": lambda src, actor, d, _pid: reidentified(
        src, operator=actor, operator_host=d.get("client"),
        pseudonym=",".join(d.get("pseudonyms", [])) or "none", kinds=[str(d.get("kind", ""))],
        matches=len(d.get("pseudonyms", [])), patient_id=None),
    "export-mapping": lambda src, actor, d, _pid: mapping_exported(
        src, operator=actor, kind=str(d["kind"]), rows=int(d.get("rows", 0))),
    "login": lambda src, actor, d, _pid: login(src, user=actor, client_host=d.get("client")),
    "login-failed": lambda src, actor, d, _pid: login(
        src, user=actor, client_host=d.get("client"), ok=False),
    "logout": lambda src, actor, d, _pid: login(
        src, user=actor, client_host=d.get("client"), logout=True),
    "dicom.association-refused": lambda src, actor, d, _pid: association_refused(
        src, calling_ae=str(d["calling_ae"]), peer_host=str(d["peer_host"]),
        reason=str(d["reason"])),
    "dicom.query": lambda src, actor, d, _pid: query(
        src, node_ae=str(d["node_ae"]), node_host=str(d["node_host"]),
        level=str(d.get("level", "STUDY")), keys=list(d.get("keys", [])),
        matches=int(d.get("matches", 0))),
    "dicom.caller-allowed": _config(ConfigArea.network, "ae_title", "calling_ae"),
    "dicom.caller-disallowed": _config(ConfigArea.network, "ae_title", "calling_ae"),
    "dicom.local-ae-changed": _config(ConfigArea.network, "ae_title", default="local-ae"),
    "dicom.node-added": _config(ConfigArea.network, "name", "node"),
    "dicom.node-removed": _config(ConfigArea.network, "name", "node"),
    "dicom.node-replaced": _config(ConfigArea.network, "name", "node"),
    # the web UI's sign-in (service.web.signin) and sign-out
    "web.sign-in": lambda src, actor, d, _pid: login(src, user=actor, client_host=d.get("client")),
    "web.sign-in-failed": lambda src, actor, d, _pid: login(
        src, user=str(d.get("account") or "unknown"), client_host=d.get("client"), ok=False),
    "web.sign-out": lambda src, actor, d, _pid: login(
        src, user=actor, client_host=d.get("client"), logout=True),
    "user.created": _config(ConfigArea.security, "name", "user"),
    "user.password-changed": _config(ConfigArea.security, "name", "user"),
    "user.disabled": _config(ConfigArea.security, "name", "user"),
    "keys.created": _config(ConfigArea.security, "key_id"),
    "keys.activated": _config(ConfigArea.security, "key_id"),
    "keys.rekeyed": _config(ConfigArea.security, "key_id"),
    "token.created": _config(ConfigArea.security, "name", "token"),
    "token.revoked": _config(ConfigArea.security, "name", "token"),
    "policy.changed": _config(ConfigArea.software, "name", "policy"),
}


def message_for(kind: str, *, actor: str, details: Mapping[str, Any], source: AuditSource,
                disclosed_patient_id: str | None = None) -> AtnaMessage | None:
    """The ATNA message for one audit-store event, or None for kinds ATNA has no event for
    (job bookkeeping). Only the keys each builder names are read from ``details``.

    ``disclosed_patient_id``: for ``reidentify`` only, the original Patient ID the lookup
    decrypted (the store knows it only after logging the event, so it passes it here)."""
    builder = EVENT_KINDS.get(kind)
    if builder is None:
        return None
    return builder(source, actor, {**details, "_kind": kind}, disclosed_patient_id)
