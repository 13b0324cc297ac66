"""Generate the tables of docs/conformance.md from the code, so the statement cannot drift.

Each table sits between ``<!-- BEGIN GENERATED: name -->`` and ``<!-- END GENERATED: name -->``
in the document; this script rewrites what is between the markers and leaves the prose alone.
``tests/dicom/test_conformance_doc.py`` fails when a table differs from what the code gives.

    python scripts/gen_conformance.py            # rewrite docs/conformance.md
    python scripts/gen_conformance.py --check    # exit 1 when it is out of date
"""

from __future__ import annotations

import dataclasses
import re
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "conformance.md"
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import pynetdicom  # noqa: E402
from pydicom.uid import UID  # noqa: E402
from pynetdicom._globals import APPLICATION_CONTEXT_NAME  # noqa: E402

from service.core import tls as core_tls  # noqa: E402
from service.core.config import Settings  # noqa: E402
from service.dicom import find, pull, scu, sopclasses  # noqa: E402
from service.dicom.admin import NodeConfig  # noqa: E402
from service.dicom.listener import ListenerConfig  # noqa: E402
from service.dicom.tls import TlsMode, TlsRefusal  # noqa: E402
from workers.deid.policy import load_policy  # noqa: E402
from workers.deid.vocabulary import CID7050, Option  # noqa: E402

_BLOCK = re.compile(r"(<!-- BEGIN GENERATED: (?P<name>[a-z0-9-]+) -->\n)(?P<body>.*?)"
                    r"(<!-- END GENERATED: (?P=name) -->)", re.S)

# What each refusal means for the operator (the codes are service.dicom.tls.TlsRefusal).
REFUSALS: dict[TlsRefusal, str] = {
    TlsRefusal.plain_on_tls_port: "a plain DICOM (or other non-TLS) connection to the TLS port",
    TlsRefusal.tls_required: "a plain association from a calling AE whose policy requires TLS",
    TlsRefusal.protocol_version: "the peer offered only TLS 1.1 or older",
    TlsRefusal.unknown_ca: "the certificate chain does not end in a CA of the trusted bundle",
    TlsRefusal.expired: "the peer's certificate has expired",
    TlsRefusal.not_yet_valid: "the peer's certificate is not valid yet",
    TlsRefusal.bad_certificate: "any other certificate verification failure",
    TlsRefusal.hostname_mismatch: "SCU only: the node's certificate does not name its host",
    TlsRefusal.client_certificate_required: "no client certificate where mtls-required needs one",
    TlsRefusal.pin_mismatch: "the certificate's SHA-256 differs from the node's pin",
    TlsRefusal.ae_mismatch: "the certificate names, or is pinned to, another AE title",
    TlsRefusal.handshake_timeout: "the TLS handshake did not finish in time",
    TlsRefusal.handshake_failed: "the handshake failed otherwise (no shared cipher, hang-up)",
}

MODES: dict[TlsMode, str] = {
    TlsMode.off: "plain DICOM (incoming TLS on the TLS port is still accepted and checked "
                 "against any pin)",
    TlsMode.tls: "TLS required; the peer certificate is checked against a pin when one is set",
    TlsMode.mtls: "TLS with a valid certificate on both sides, pinned to the AE title (CN or "
                  "SubjectAltName) unless a name or fingerprint pin is set",
}

SETTINGS = ("ae_title", "dicom_host", "dicom_port", "dicom_plain", "dicom_tls_port",
            "dicom_tls_cert", "dicom_tls_key", "dicom_tls_ca", "dicom_tls_handshake_timeout_s",
            "max_pdu", "listener_processes", "spool_free_floor_mb", "dicom_config_file",
            "default_policy")


# For the settings whose Field carries no description.
SETTING_NOTES = {
    "ae_title": "the gateway's AE title (seeds the local AE; then `deidgate ae set`)",
    "dicom_host": "bind address (seeds the local AE)",
    "dicom_port": "plain DICOM port (seeds the local AE)",
    "dicom_tls_handshake_timeout_s": "seconds a TLS handshake may take",
    "max_pdu": "largest PDU the listener accepts, bytes (seeds the local AE)",
    "spool_free_floor_mb": "below this free space the listener answers A700",
    "default_policy": "the de-identification policy of jobs that name none",
}


def _default(name: str) -> object:
    """A setting's default as declared (not as this process's environment sets it)."""
    return Settings.model_fields[name].default


def _table(header: Iterable[str], rows: Iterable[Iterable[object]]) -> str:
    head = list(header)
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _name(uid: str) -> str:
    return UID(uid).name


def storage_classes() -> str:
    """The storage SOP classes known by name: the listener's table, and what C-GET offers."""
    rows = [(_name(u) if _name(u) != u else name, f"`{u}`",
             "mammography" if u in sopclasses.MAMMOGRAPHY else "other")
            for u, name in sopclasses.STORAGE.items()]
    return _table(("SOP class", "UID", "group"), rows)


def transfer_syntaxes() -> str:
    return _table(("transfer syntax", "UID"),
                  ((_name(ts), f"`{ts}`") for ts in sopclasses.TRANSFER_SYNTAXES))


def scu_classes() -> str:
    rows = [
        ("Verification", f"`{sopclasses.VERIFICATION}`", "SCU and SCP", "C-ECHO"),
        (_name(find.FIND), f"`{find.FIND}`", "SCU", "C-FIND: STUDY, SERIES, IMAGE levels"),
        (_name(pull.MOVE), f"`{pull.MOVE}`", "SCU", "C-MOVE: STUDY, SERIES, IMAGE levels"),
        (_name(pull.GET), f"`{pull.GET}`", "SCU", "C-GET: STUDY, SERIES, IMAGE levels"),
    ]
    return _table(("SOP class", "UID", "role", "use"), rows)


def default_syntaxes() -> str:
    return _table(("transfer syntax", "UID"),
                  ((_name(ts), f"`{ts}`") for ts in pynetdicom.DEFAULT_TRANSFER_SYNTAXES))


def forward_syntaxes() -> str:
    from service.jobs.pacs import FALLBACK_SYNTAXES

    return _table(("proposed for uncompressed files", "UID"),
                  ((_name(ts), f"`{ts}`") for ts in FALLBACK_SYNTAXES))


def association_limits() -> str:
    lc = ListenerConfig(ae_title="DEIDGATE")
    t = scu.Timeouts()
    node = dataclasses.fields(NodeConfig)
    node_default = next(f.default for f in node if f.name == "max_associations")
    rows = [
        ("listener: maximum PDU received", f"{_default('max_pdu')} bytes (local AE `max_pdu`)"),
        ("listener: associations at once, per process", lc.max_associations),
        ("listener: ACSE timeout (association, release messages)", f"{lc.acse_timeout:g} s"),
        ("listener: DIMSE timeout", f"{lc.dimse_timeout:g} s"),
        ("listener: idle network timeout", f"{lc.network_timeout:g} s"),
        ("listener: TLS handshake timeout", f"{_default('dicom_tls_handshake_timeout_s'):g} s"),
        ("SCU: maximum PDU received", f"{scu.make_ae('DEIDGATE', t).maximum_pdu_size} bytes"),
        ("SCU: associations at once, per PACS node (default)", node_default),
        ("SCU: connect and A-ASSOCIATE answer timeout", f"{t.connect:g} s"),
        ("SCU: DIMSE timeout (one response, C-MOVE pending included)", f"{t.dimse:g} s"),
        ("SCU: idle network timeout", f"{t.network:g} s"),
        ("SCU: wait for a free association slot", f"{t.slot:g} s"),
    ]
    return _table(("policy", "value"), rows)


def implementation() -> str:
    rows = [("Implementation Class UID (network)", f"`{pynetdicom.PYNETDICOM_IMPLEMENTATION_UID}`"),
            ("Implementation Version Name (network)",
             f"`{pynetdicom.PYNETDICOM_IMPLEMENTATION_VERSION}`"),
            ("Application Context Name", f"`{APPLICATION_CONTEXT_NAME}`")]
    return _table(("item", "value"), rows)


def settings_table() -> str:
    fields = Settings.model_fields
    rows = []
    for name in SETTINGS:
        f = fields[name]
        default = f.default if f.default is not None else "unset"
        rows.append((f"`DEIDGATE_{name.upper()}`", f"`{default}`",
                     f.description or SETTING_NOTES[name]))
    return _table(("setting", "default", "meaning"), rows)


def tls_modes() -> str:
    assert set(MODES) == set(TlsMode), "describe every TLS mode"
    return _table(("`tls_mode`", "meaning"), ((f"`{m.value}`", MODES[m]) for m in TlsMode))


def tls_profile() -> str:
    rows = [("protocol versions", f"TLS 1.2 and TLS 1.3 (minimum "
                                  f"`{core_tls.MINIMUM_VERSION.name}`)"),
            ("TLS 1.2 cipher suites (OpenSSL string)", f"`{core_tls.TLS12_CIPHERS}`"),
            ("TLS 1.3 cipher suites", "OpenSSL's defaults (all AEAD)"),
            ("compression, renegotiation", "off (`OP_NO_COMPRESSION`, `OP_NO_RENEGOTIATION`)"),
            ("private key file", "refused unless readable by its owner only (0600 or 0400)")]
    return _table(("item", "value"), rows)


def tls_refusals() -> str:
    assert set(REFUSALS) == set(TlsRefusal), "describe every TLS refusal code"
    return _table(("reason code", "meaning"),
                  ((f"`{r.value}`", REFUSALS[r]) for r in TlsRefusal))


def cid7050() -> str:
    policy = load_policy(str(_default("default_policy")))
    rows = []
    for key, (code, meaning) in CID7050.items():
        if key == "basic":
            option, used = "(the profile itself)", "always"
        else:
            option = f"`{key}`"
            opt = Option(key)
            used = "yes" if opt in policy.options and (
                opt is not Option.CLEAN_PIXEL_DATA or policy.pixels_enabled) else "no"
        rows.append((f"`{code}`", meaning, option, used))
    return _table(("code (DCM)", "code meaning", "policy option",
                   f"in `{policy.name}` {policy.version}"), rows)


def policy_classes() -> str:
    policy = load_policy(str(_default("default_policy")))
    accept = policy.sop_classes.accept
    if isinstance(accept, str):
        return f"The default policy accepts `{accept}`.\n"
    return _table(("SOP class accepted by the default policy", "UID"),
                  ((_name(u), f"`{u}`") for u in accept))


BLOCKS: dict[str, Callable[[], str]] = {
    "implementation": implementation,
    "storage-classes": storage_classes,
    "transfer-syntaxes": transfer_syntaxes,
    "scu-classes": scu_classes,
    "default-syntaxes": default_syntaxes,
    "forward-syntaxes": forward_syntaxes,
    "association-limits": association_limits,
    "settings": settings_table,
    "tls-modes": tls_modes,
    "tls-profile": tls_profile,
    "tls-refusals": tls_refusals,
    "cid7050": cid7050,
    "policy-classes": policy_classes,
}


def blocks_in(text: str) -> dict[str, str]:
    return {m["name"]: m["body"] for m in _BLOCK.finditer(text)}


def render(text: str) -> str:
    """``text`` with every generated block replaced by what the code gives now."""
    missing = set(BLOCKS) - set(blocks_in(text))
    if missing:
        raise ValueError(f"docs/conformance.md lacks the generated blocks {sorted(missing)}")
    return _BLOCK.sub(lambda m: m.group(1) + BLOCKS[m["name"]]() + m.group(4), text)


def main(argv: list[str]) -> int:
    text = DOC.read_text(encoding="utf-8")
    new = render(text)
    if "--check" in argv:
        if new != text:
            print("docs/conformance.md is out of date: run scripts/gen_conformance.py")
            return 1
        return 0
    DOC.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
