"""Keyed pseudonyms and UIDs (HMAC-SHA256 under the site keys, namespaced by project).

Keyed, not plain hashes: anyone can hash every plausible PatientID and invert an unkeyed digest.
Deterministic, so the same woman keeps one pseudonym across exams, runs and machines sharing the
key, and every reference to a UID (sequences, file meta) maps to the same new UID.
"""

from __future__ import annotations

import base64
from functools import lru_cache

from pydicom.uid import UID_dictionary

from service.core.keys import SiteKeys, hmac_sha256

_VR_MAX = {"AE": 16, "CS": 16, "SH": 16, "LO": 64, "PN": 64, "UI": 64, "ST": 1024, "UC": 1024}


class Pseudonymizer:
    def __init__(self, keys: SiteKeys, project: str, *, prefix: str = "P", chars: int = 20,
                 name_prefix: str = "ANON") -> None:
        self._keys = keys
        self.project = project
        self.prefix = prefix
        self.chars = chars
        self.name_prefix = name_prefix
        self.uid = lru_cache(maxsize=65536)(self._uid)

    def patient_id(self, original: str) -> str:
        """'P' + 20 base32 characters (100 bits): collisions are checked by the audit store."""
        digest = hmac_sha256(self._keys.pseudonym, "patient", self.project, original.strip())
        return self.prefix + base64.b32encode(digest).decode("ascii")[: self.chars]

    def patient_name(self, pseudonym: str) -> str:
        """A PN carrying nothing but the pseudonym: family name = prefix, given = pseudonym."""
        return f"{self.name_prefix}^{pseudonym}"

    def value(self, kind: str, original: str, vr: str) -> str:
        """Generic keyed pseudonym for other identifiers (accession, study ID, ...)."""
        digest = hmac_sha256(self._keys.pseudonym, kind, self.project, original.strip())
        text = base64.b32encode(digest).decode("ascii")
        limit = _VR_MAX.get(vr, 16)
        if vr == "PN":
            return f"{self.name_prefix}^{text[:16]}"
        return text[: min(limit, 16)]

    def _uid(self, original: str) -> str:
        """'2.25.' + decimal of the first 128 bits of the HMAC; registered UIDs stay as they are."""
        original = original.strip().rstrip("\x00")
        if not original or original in UID_dictionary:
            return original
        digest = hmac_sha256(self._keys.uid, "uid", self.project, original)
        return "2.25." + str(int.from_bytes(digest[:16], "big"))

    def day_offset(self, patient_key: str, lo: int, hi: int) -> int:
        """Per-patient day shift in [lo, hi], never zero (zero would leave real dates)."""
        digest = hmac_sha256(self._keys.date, "date-shift", self.project, patient_key.strip())
        choices = [d for d in range(lo, hi + 1) if d != 0]
        return choices[int.from_bytes(digest[:8], "big") % len(choices)]
