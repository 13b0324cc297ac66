"""Post-condition: the patient's own identifiers must not survive anywhere in the output header.

Rules decide per attribute; this check looks at values. It catches what a rule set cannot know:
a vendor writing the patient's name into an attribute every policy keeps (a model name, a body
part, a code meaning), or a free-text value the cleaner's vocabulary happens to contain. When it
finds one, the instance is refused (quarantined) rather than written: fail closed.

Needles are the patient's names (components of 4+ characters), IDs and accession numbers (6+),
birth date and address, taken from every level of the source header. A needle made of word
characters must match a whole word ("Test" in "99TEST" is no hit; "Ødegård" in "L CC Ødegård"
is); other needles match as substrings. Values the engine generated
itself (pseudonyms, dummies, new UIDs) are not scanned: a keyed base32 pseudonym could contain a
short name by chance, and it is not the patient's data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

_NAME_KEYWORDS = {"PatientName", "OtherPatientNames", "PatientBirthName",
                  "PatientMotherBirthName"}
_ID_KEYWORDS = {"PatientID", "OtherPatientIDs", "AccessionNumber", "PatientBirthDate",
                "PatientAddress", "PatientTelephoneNumbers", "MedicalRecordLocator"}
# Controlled terminology, not free text: a surname that is also an English word ("Long",
# "White") must not make every instance with a matching code meaning unusable.
_CODED = {"CodeValue", "LongCodeValue", "URNCodeValue", "CodeMeaning", "CodingSchemeDesignator",
          "CodingSchemeVersion", "ContextIdentifier", "MappingResource"}
_WORD = re.compile(r"\w+")
_SPLIT = re.compile(r"[^\w]+")
_SKIP_VRS = {"SQ", "UI", "CS", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "US", "SS", "UL", "SL",
             "UV", "SV", "FL", "FD", "AT"}


def _strings(value: object) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (list, MultiValue)):
        return [s for v in value for s in _strings(v)]
    return [str(value)]


def identity_needles(ds: Dataset) -> frozenset[str]:
    """The patient's identifying strings, case-folded, from every level of ``ds``."""
    out: set[str] = set()

    def visit(d: Dataset) -> None:
        for elem in d:
            if elem.VR == "SQ":
                for item in elem.value or []:
                    visit(item)
            elif elem.keyword in _NAME_KEYWORDS:
                for v in _strings(elem.value):
                    pn = v if isinstance(v, PersonName) else PersonName(v)
                    for comp in (pn.family_name, pn.given_name, pn.middle_name):
                        out.update(t for t in re.split(r"[\s,.\-]+", comp) if len(t) >= 4)
            elif elem.keyword in _ID_KEYWORDS:
                out.update(v.strip() for v in _strings(elem.value) if len(v.strip()) >= 6)

    visit(ds)
    return frozenset(n.casefold() for n in out)


def find_survivor(ds: Dataset, needles: frozenset[str], generated: Iterable[str],
                  path: str = "") -> str | None:
    """The path of the first element still holding a needle (no value in it), else None."""
    if not needles:
        return None
    words = {n for n in needles if _WORD.fullmatch(n)}
    others = needles - words
    skip = set(generated)
    for elem in ds:
        name = f"{path}{elem.keyword or f'({elem.tag.group:04X},{elem.tag.element:04X})'}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                hit = find_survivor(item, needles, skip, f"{name}[{i}].")
                if hit:
                    return hit
            continue
        if elem.VR in _SKIP_VRS or elem.keyword in _CODED:
            continue
        for v in _strings(elem.value):
            if v in skip:
                continue
            folded = v.casefold()
            if words & set(_SPLIT.split(folded)) or any(n in folded for n in others):
                return name
    return None
