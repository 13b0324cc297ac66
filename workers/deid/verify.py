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
from collections.abc import Iterable, Iterator
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.valuerep import PersonName

from service.core.errors import PolicyRefused
from service.dicom.elements import tag_text

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


# Besides every PN: strings the text cleaner must never let through in free text.
_IDENTIFYING = {"PatientID", "OtherPatientIDs", "AccessionNumber", "InstitutionName",
                "InstitutionAddress", "StationName", "PatientAddress", "StudyID",
                "PatientTelephoneNumbers", "InstitutionalDepartmentName", "IssuerOfPatientID"}


def _values(value: object) -> list[Any]:
    """An element's values, flattened (None and "" are no value)."""
    if value is None or value == "":
        return []
    if isinstance(value, (list, MultiValue)):
        return [s for v in value for s in _values(v)]
    return [value]


def _strings(value: object) -> list[str]:
    return [str(v) for v in _values(value)]


def leaf_elements(ds: Dataset) -> Iterator[DataElement]:
    """Every element that is not a sequence, at every depth, in file order."""
    for elem in ds:
        if elem.VR == "SQ":
            for item in elem.value or []:
                yield from leaf_elements(item)
        else:
            yield elem


def person_name_tokens(ds: Dataset) -> list[str]:
    """Every PN value (and its components) and identifying string at any depth: the text
    cleaner's deny-list for free text."""
    out: list[str] = []
    try:
        for elem in leaf_elements(ds):
            if elem.VR == "PN" or elem.keyword in _IDENTIFYING:
                for v in _values(elem.value):
                    if isinstance(v, PersonName):
                        out.extend(str(c) for c in v.components)
                    out.append(str(v))
    except Exception as exc:
        raise PolicyRefused(f"data set cannot be parsed ({type(exc).__name__})",
                            code="malformed-element") from None
    return out


def identity_needles(ds: Dataset) -> frozenset[str]:
    """The patient's identifying strings, case-folded, from every level of ``ds``."""
    out: set[str] = set()
    for elem in leaf_elements(ds):
        if elem.keyword in _NAME_KEYWORDS:
            for v in _strings(elem.value):
                pn = PersonName(v)
                for comp in (pn.family_name, pn.given_name, pn.middle_name):
                    out.update(t for t in re.split(r"[\s,.\-]+", comp) if len(t) >= 4)
        elif elem.keyword in _ID_KEYWORDS:
            out.update(v.strip() for v in _strings(elem.value) if len(v.strip()) >= 6)
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
        name = f"{path}{elem.keyword or tag_text(int(elem.tag))}"
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
