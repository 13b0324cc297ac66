"""Who and where, for one synthetic exam: invented, Norwegian-shaped values (Æ Ø Å, 11-digit
national ID numbers) and deterministic UIDs derived from them."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, replace
from typing import Any

from pydicom.uid import UID

_FIRST = ["Åse", "Kari", "Ingrid", "Sølvi", "Bjørg", "Ragnhild", "Æsa", "Tove"]
_LAST = ["Ødegård", "Nordmann", "Håland", "Sæther", "Bjørnstad", "Løvås", "Aarø"]


@dataclass(frozen=True)
class ExamIdentity:
    """Who and where, for one synthetic exam. Defaults are invented, Norwegian-shaped values."""

    patient_name: str = "Ødegård^Åse Kristine"
    patient_id: str = "12057847391"
    issuer_of_patient_id: str = "NO-FNR"
    birth_date: str = "19580512"
    patient_age: str = "065Y"
    accession_number: str = "BSN24031500417"
    study_id: str = "4417"
    study_date: str = "20240315"
    study_time: str = "093512.250000"
    institution_name: str = "Brystdiagnostisk senter Tromsø"
    institution_address: str = "Hansine Hansens veg 67, 9019 Tromsø"
    department: str = "Mammografiseksjonen"
    station_name: str = "MAMMO-TRO-2"
    referring_physician: str = "Bjørnstad^Æsa"
    operator_name: str = "Lægreid^Kåre"
    device_serial_number: str = "SDM17042281"
    detector_id: str = "D-88231-Ø"
    manufacturer: str = "HOLOGIC, Inc."
    model_name: str = "Selenia Dimensions"
    charset: str = "ISO_IR 192"
    seed: int = 1
    uid_root: str | None = None

    def uid(self, *parts: object) -> UID:
        """A deterministic UID for this exam; under ``uid_root`` when one is given."""
        digest = hashlib.sha256(repr((self.seed, self.patient_id, self.accession_number,
                                      *parts)).encode()).digest()
        number = int.from_bytes(digest[:15], "big")
        if self.uid_root:
            return UID(f"{self.uid_root.rstrip('.')}.{number}"[:64])
        return UID(f"2.25.{number}")


def default_identity(n: int) -> ExamIdentity:
    """The n-th of a family of distinct synthetic women (for demos and benchmarks); the same n
    always gives the same woman, exam and UIDs."""
    return replace(
        ExamIdentity(),
        patient_name=f"{_LAST[n % 7]}^{_FIRST[n % 8]}",
        patient_id=f"{(12057847391 + 7919 * n) % 10**11:011d}",
        accession_number=f"BSN2403{15 + n % 10:02d}{417 + n:05d}",
        seed=n + 1,
    )


def unique_identity(n: int, **changes: Any) -> ExamIdentity:
    """Like ``default_identity(n)``, but new IDs and UIDs on every call: one PACS may serve
    many tests, and each must find only its own exams."""
    tag = secrets.token_hex(3)
    return replace(default_identity(n), patient_id=f"PID{n:05d}{tag}",
                   accession_number=f"A{n:05d}{tag}", **changes)
