"""Applying the policy to a data set, element by element, at every depth.

One walker serves both de-identification and ``explain``: it decides each element's rule and
action, records the decision (path, rule, action, never the value), applies it, and descends into
every sequence that survives, so nested, private and repeating-group elements get the same rules
as top-level ones. Anything it cannot handle raises PolicyRefused: no half-cleaned output.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from pydicom.datadict import dictionary_has_tag, keyword_for_tag, repeater_has_tag
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from service.core.errors import PolicyRefused
from service.dicom.elements import tag_text
from workers.deid.dates import BadDate, shift_da, shift_dt
from workers.deid.policy import Policy
from workers.deid.pseudonym import Pseudonymizer
from workers.deid.rules import Decision, RuleSet
from workers.deid.text import TextCleaner
from workers.deid.vocabulary import Action, Option

TEXT_VRS = {"SH", "LO", "ST", "LT", "UT", "UC", "CS"}
BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN"}
NUMERIC_VRS = {"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "DS", "IS", "AT"}
DUMMY: dict[str, Any] = {
    "AE": "DEIDGATE", "AS": "000Y", "CS": "ANONYMIZED", "DA": "19000101", "DT": "19000101000000",
    "TM": "000000", "DS": "0", "IS": "0", "LO": "ANONYMIZED", "LT": "ANONYMIZED",
    "PN": "ANONYMIZED", "SH": "ANONYMIZED", "ST": "ANONYMIZED", "UT": "ANONYMIZED",
    "UC": "ANONYMIZED", "UR": "https://anonymized.invalid/",
    "FL": 0.0, "FD": 0.0, "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "AT": 0,
    "OB": b"\x00\x00", "OW": b"\x00\x00", "OF": b"\x00\x00\x00\x00", "OD": b"\x00" * 8,
    "OL": b"\x00" * 4, "OV": b"\x00" * 8, "UN": b"\x00\x00",
}  # fmt: skip
_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_DAYS = {"D": 1, "W": 7, "M": 30.4375, "Y": 365.25}


@dataclass(frozen=True)
class ExplainRow:
    """What happens to one element; carries no values (safe to print for any attribute)."""

    path: str
    tag: str
    keyword: str
    vr: str
    rule: str
    written: str
    action: str
    via: str


@dataclass
class Context:
    policy: Policy
    rules: RuleSet
    pseudo: Pseudonymizer
    cleaner: TextCleaner
    sop_class: str
    patient_pseudonym: str
    day_offset: int
    phi: frozenset[str]
    rows: list[ExplainRow] | None = None
    counts: dict[str, int] = field(default_factory=dict)
    generated: set[str] = field(default_factory=set)  # values the engine wrote (pseudonyms...)

    def count(self, action: Action) -> None:
        self.counts[action.value] = self.counts.get(action.value, 0) + 1


def _creator(ds: Dataset, tag: int) -> str | None:
    block = (tag & 0xFF00) >> 8
    if block < 0x10:
        return None
    elem = ds.get((tag & 0xFFFF0000) | block)
    if elem is None or elem.value is None:
        return None
    return str(elem.value)


def walk(ds: Dataset, ctx: Context, path: str = "", top: bool = True) -> None:
    """Apply the policy to ``ds`` in place (items of sequences included)."""
    for base_tag in list(ds.keys()):
        tag = int(base_tag)
        group, elem_no = tag >> 16, tag & 0xFFFF
        name = f"{path}{tag_text(tag)}"
        try:
            elem = ds[tag]
        except Exception as exc:  # pydicom raises many types on malformed values
            raise PolicyRefused(
                f"element {tag_text(tag)} at {path or 'top level'} cannot be parsed "
                f"({type(exc).__name__})", code="malformed-element") from None
        vr = str(elem.VR)
        kw = keyword_for_tag(tag) or ""
        if kw:
            name = f"{path}{kw}"
        if group == 0x0002:
            _record(ctx, name, tag, kw, vr, None, Action.REMOVE, Action.REMOVE,
                    "file meta rewritten")
            del ds[tag]
            continue
        if elem_no == 0:
            _record(ctx, name, tag, kw, vr, None, Action.REMOVE, Action.REMOVE, "group length")
            del ds[tag]
            continue
        private = group % 2 == 1
        if private and 0x0010 <= elem_no <= 0x00FF:
            continue  # private creators are kept exactly when something in their block is
        creator = _creator(ds, tag) if private else None
        # private paths name the tag only: a private creator string can name the hospital
        rule = ctx.rules.match(tag, vr, creator)
        known = private or dictionary_has_tag(tag) or repeater_has_tag(tag)
        if not known and tag not in ctx.rules.exact:
            # an unknown public tag only survives when a rule names it exactly (fail closed)
            _record(ctx, name, tag, kw, vr, None, Action.REMOVE, Action.REMOVE,
                    "unknown public tag (fail closed)")
            del ds[tag]
            ctx.count(Action.REMOVE)
            continue
        decision = ctx.rules.decide(rule, sop_class=ctx.sop_class, tag=tag, top=top)
        via = decision.via
        if decision.action is Action.SHIFT and vr == "TM":
            via += "; time of day kept (whole-day shift)"
        _record(ctx, name, tag, kw, vr, decision.rule, decision.written, decision.action, via)
        _apply(ds, elem, decision, ctx, name, private, creator)
    _tidy(ds)


def _record(ctx: Context, path: str, tag: int, kw: str, vr: str, rule: Any, written: Action,
            action: Action, via: str) -> None:
    if ctx.rows is not None:
        ctx.rows.append(ExplainRow(path, tag_text(tag), kw, vr,
                                   rule.describe() if rule is not None else "-",
                                   written.value, action.value, via))


def _apply(ds: Dataset, elem: DataElement, d: Decision, ctx: Context, path: str, private: bool,
           creator: str | None) -> None:
    action, vr, tag = d.action, str(elem.VR), int(elem.tag)
    ctx.count(action)
    if action is Action.SAFE_PRIVATE:
        safe = private and creator is not None and (
            (creator.strip(), tag & 0xFF) in ctx.rules.safe_private)
        action = Action.KEEP if safe else Action.REMOVE
    if action is Action.REMOVE:
        del ds[tag]
        return
    if action is Action.EMPTY:
        elem.value = Sequence([]) if vr == "SQ" else None
        return
    if vr == "SQ":
        _descend(elem, ctx, path)  # every surviving sequence is walked
        return
    if action is Action.KEEP:
        if vr == "AS":
            _cap_age(elem, ctx)
        return
    if action is Action.DUMMY:
        if vr == "UI":
            _remap_uids(elem, ctx)
        elif vr in DUMMY:
            elem.value = DUMMY[vr]
            ctx.generated.add(str(DUMMY[vr]))
        else:
            del ds[tag]
        return
    if action is Action.UID:
        if vr == "UI":
            _remap_uids(elem, ctx)
        else:
            elem.value = DUMMY.get(vr)
        return
    if action is Action.PSEUDONYM:
        _pseudonymize(elem, ctx)
        return
    if action is Action.SHIFT:
        _shift(elem, ctx)
        return
    if action is Action.CLEAN:
        _clean(ds, elem, ctx)
        return
    raise PolicyRefused(f"action {action.value} cannot be applied to {tag_text(tag)}",
                        code="unknown-action")


def _descend(elem: DataElement, ctx: Context, path: str) -> None:
    for i, item in enumerate(elem.value or []):
        walk(item, ctx, f"{path}[{i}].", top=False)


def _values(elem: DataElement) -> list[Any]:
    v = elem.value
    if v is None or v == "":
        return []
    return list(v) if isinstance(v, (list, MultiValue)) else [v]


def _set(elem: DataElement, values: list[Any]) -> None:
    if not values:
        elem.value = None
    elif len(values) == 1:
        elem.value = values[0]
    else:
        elem.value = values


def _remap_uids(elem: DataElement, ctx: Context) -> None:
    _set(elem, [ctx.pseudo.uid(str(v)) for v in _values(elem)])


def _pseudonymize(elem: DataElement, ctx: Context) -> None:
    vr, kw = str(elem.VR), keyword_for_tag(elem.tag) or tag_text(int(elem.tag))
    out: list[Any] = []
    for v in _values(elem):
        text = str(v)
        if kw == "PatientID":
            out.append(ctx.pseudo.patient_id(text))
        elif kw == "PatientName":
            out.append(ctx.pseudo.patient_name(ctx.patient_pseudonym))
        elif vr == "UI":
            out.append(ctx.pseudo.uid(text))
        elif vr in TEXT_VRS or vr in {"PN", "AE"}:
            out.append(ctx.pseudo.value(kw, text, vr))
        else:
            raise PolicyRefused(f"pseudonym action does not apply to VR {vr}", code="bad-action")
    ctx.generated.update(str(v) for v in out)
    _set(elem, out)


def _shift(elem: DataElement, ctx: Context) -> None:
    vr = str(elem.VR)
    if vr == "TM":
        return  # whole-day shifts leave times of day as they are (see dates.py)
    if vr not in {"DA", "DT"}:
        _clean_scalar(elem, ctx)
        return
    fn = shift_da if vr == "DA" else shift_dt
    try:
        _set(elem, [fn(str(v), ctx.day_offset) for v in _values(elem)])
    except BadDate:
        elem.value = None


def _clean(ds: Dataset, elem: DataElement, ctx: Context) -> None:
    vr = str(elem.VR)
    if vr in BINARY_VRS:
        del ds[int(elem.tag)]  # bits cannot be scrubbed for text; remove
        return
    if vr in {"DA", "DT", "TM"}:
        if Option.RETAIN_LONGITUDINAL_FULL_DATES in ctx.policy.options:
            return
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in ctx.policy.options:
            _shift(elem, ctx)
        else:
            elem.value = None
        return
    _clean_scalar(elem, ctx)


def _clean_scalar(elem: DataElement, ctx: Context) -> None:
    vr = str(elem.VR)
    if vr == "UI":
        _remap_uids(elem, ctx)
    elif vr == "PN":
        _set(elem, [DUMMY["PN"] for _ in _values(elem)])
    elif vr in TEXT_VRS:
        cleaned = [ctx.cleaner.clean(str(v), ctx.phi) for v in _values(elem)]
        if vr == "CS":
            cleaned = [c.upper()[:16] for c in cleaned]
        _set(elem, [c for c in cleaned if c] if len(cleaned) > 1 else cleaned)
    elif vr == "AS":
        _cap_age(elem, ctx)
    elif vr in NUMERIC_VRS:
        return
    elif vr in DUMMY:
        elem.value = DUMMY[vr] if _values(elem) else None
    else:
        elem.value = None


def _cap_age(elem: DataElement, ctx: Context) -> None:
    cap = ctx.policy.age_cap_years
    if cap is None:
        return
    out = []
    for v in _values(elem):
        m = _AGE.match(str(v).strip())
        if not m:
            out.append(DUMMY["AS"])  # not an age string: do not keep free text in AS
            continue
        years = int(m.group(1)) * _AGE_DAYS[m.group(2)] / 365.25
        out.append(f"{cap + 1:03d}Y" if years > cap else str(v).strip())
    _set(elem, out)


def _tidy(ds: Dataset) -> None:
    """Drop private creators with nothing left in their block, and overlays / curves whose
    data element is gone (a description of a bitmap that no longer exists is not conformant, and
    its labels are free text)."""
    tags = [int(t) for t in ds.keys()]  # noqa: SIM118 - a snapshot; ds changes below
    present = set(tags)
    for t in tags:
        group, elem_no = t >> 16, t & 0xFFFF
        if group % 2 == 1 and 0x0010 <= elem_no <= 0x00FF:
            lo = (group << 16) | (elem_no << 8)
            if not any(lo <= x <= lo + 0xFF for x in present):
                del ds[t]
    repeating = {t >> 16 for t in tags
                 if (0x6000 <= t >> 16 <= 0x601E or 0x5000 <= t >> 16 <= 0x501E)
                 and (t >> 16) % 2 == 0}
    for g in repeating:
        if ((g << 16) | 0x3000) not in present:
            for t in tags:
                if t >> 16 == g:
                    del ds[t]
