#!/usr/bin/env python3
"""Generate policies/dicom-basic-profile.yaml from the PS3.15 Table E.1-1 extracts.

Why a generator: the table has ~650 rows and changes every edition; hand-copying it is how
de-identifiers end up missing rows. The YAML is committed, so nothing reads ../shared at run time.

Sources (both JSON, in ../shared/data/ by default):
- ps3.15-table-e1-1-2024b.json: every row with the Basic Profile action and every option column.
- ps3.15-basic-profile-2026c.json: the newer edition's Basic Profile column only (35 more rows).

The basic action comes from the newest edition that lists the row; option columns come from 2024b
(the only edition that has them). Option cells are written as concrete actions:
K -> keep; C -> shift for the longitudinal-modified-dates column, safe-private for the
retain-safe-private column, clean for every other column.

Usage: python scripts/gen_basic_profile.py [--data DIR] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = ROOT.parent / "shared" / "data"

# JSON column -> option name used in policies (order = PS3.15 column order).
OPTION_COLUMNS: dict[str, str] = {
    "rtnSafePrivOpt": "retain-safe-private",
    "rtnUIDsOpt": "retain-uids",
    "rtnDevIdOpt": "retain-device-identity",
    "rtnInstIdOpt": "retain-institution-identity",
    "rtnPatCharsOpt": "retain-patient-characteristics",
    "rtnLongFullDatesOpt": "retain-longitudinal-full-dates",
    "rtnLongModifDatesOpt": "retain-longitudinal-modified-dates",
    "cleanDescOpt": "clean-descriptors",
    "cleanStructContOpt": "clean-structured-content",
    "cleanGraphOpt": "clean-graphics",
}
# Clean Pixel Data has no column in Table E.1-1; it is a pixel-stage switch (see README).
EXTRA_OPTIONS = ["clean-pixel-data"]


def _option_action(column: str, cell: str) -> str:
    if cell == "K":
        return "keep"
    if cell != "C":
        raise ValueError(f"unexpected option cell {cell!r} in {column}")
    if column == "rtnLongModifDatesOpt":
        return "shift"
    if column == "rtnSafePrivOpt":
        return "safe-private"
    return "clean"


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)  # JSON strings are valid YAML scalars


def _selector(tag: str) -> str:
    t = tag.upper()
    if t.startswith("(GGGG,EEEE)"):
        return "private: true"
    if "X" in t[1:10]:
        return f"tag: {_q('(' + t[1:5].lower() + ',' + t[6:10].lower() + ')')}"
    return f"tag: {_q(t)}"


def _name(raw: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"\(see Note \d+\)", "", raw)).strip()


def _dictionary_name(tag: str) -> str | None:
    """Rows new in 2026c carry no name in the extract; take pydicom's (generation time only)."""
    try:
        from pydicom.datadict import dictionary_description

        return str(dictionary_description(int(tag[1:5] + tag[6:10], 16)))
    except (ImportError, KeyError, ValueError):
        return None


# Rows deidgate adds after the table (source: deidgate). They close gaps the table leaves:
# a person name or instance UID in an attribute the table does not list, and Text Value, the
# free text of SR TEXT content items, which the table does not list either.
ADDITIONS = [
    '{tag: "(0040,A160)", name: "Text Value", action: "X", '
    'options: {clean-structured-content: clean}, source: deidgate}',
    '{vr: PN, name: "Any other person name", action: "X", source: deidgate}',
    '{vr: UI, name: "Any other UID (registered DICOM UIDs are never remapped)", action: "U", '
    'source: deidgate}',
    '{other: true, name: "Any other standard attribute", action: "K", source: deidgate}',
]


def build(data: Path) -> str:
    old_path = data / "ps3.15-table-e1-1-2024b.json"
    new_path = data / "ps3.15-basic-profile-2026c.json"
    old_rows = json.loads(old_path.read_text())
    new = json.loads(new_path.read_text())
    new_rows: dict[str, str] = {k.upper(): v for k, v in new["rows"].items()}
    by_tag = {r["tag"].upper(): r for r in old_rows}
    tags = sorted(set(by_tag) | set(new_rows), key=lambda t: (t.startswith("(GGGG"), t))
    lines: list[str] = []
    counts = {"2024b-only": 0, "2026c": 0, "2026c-only": 0}
    for tag in tags:
        row = by_tag.get(tag)
        if tag in new_rows:
            action = new_rows[tag]
            counts["2026c" if row else "2026c-only"] += 1
            edition = "2026c"
        else:
            assert row is not None
            action = row["basicProfile"]
            counts["2024b-only"] += 1
            edition = "2024b"
        name = _name(row["name"]) if row else _dictionary_name(tag)
        parts = [_selector(tag)]
        if name:
            parts.append(f"name: {_q(name)}")
        parts.append(f"action: {_q(action)}")
        if row and row.get("stdCompIOD"):
            parts.append(f"in_std_iod: {row['stdCompIOD'] == 'Y'}".lower())
        opts = [
            f"{OPTION_COLUMNS[col]}: {_option_action(col, row[col])}"
            for col in OPTION_COLUMNS
            if row and col in row
        ]
        if opts:
            parts.append("options: {" + ", ".join(opts) + "}")
        parts.append(f"source: {edition}")
        lines.append("  - {" + ", ".join(parts) + "}")
    header = f"""\
# GENERATED by scripts/gen_basic_profile.py - do not edit by hand; re-run the script.
#
# PS3.15 Annex E, Table E.1-1 (Application Level Confidentiality Profile Attributes).
# Editions used:
#   - 2026c: Basic Profile column ({new_path.name}; {new.get("source", "")}).
#            Newest edition; it decides `action` for every row it lists ({counts["2026c"]} rows also
#            in 2024b, {counts["2026c-only"]} rows new in 2026c).
#   - 2024b: every option column ({old_path.name}); also the Basic Profile action for the
#            {counts["2024b-only"]} rows 2026c does not list (the repeating-group rows (50xx,xxxx),
#            (60xx,3000), (60xx,4000) and the private-attribute row).
# `source` on each row says which edition gave `action`; `options` always come from 2024b.
# Option cells: K -> keep; C -> shift (retain-longitudinal-modified-dates), safe-private
# (retain-safe-private: keep only allow-listed private attributes), clean (all other columns).
# Rows with `source: deidgate` at the end are not in the table: see ADDITIONS in the script.
# clean-pixel-data has no column in the table; it switches the pixel stage (policies/README.md).
"""
    body = f"""\
name: dicom-basic-profile
version: "2026c.1"
description: >-
  PS3.15 Basic Application Level Confidentiality Profile (Table E.1-1, 2026c basic actions,
  2024b option columns). Options are off; layer a policy with `extends:` to select them.
available_options: [{", ".join(list(OPTION_COLUMNS.values()) + EXTRA_OPTIONS)}]
options: []
sop_classes:
  accept: any-storage
  refuse:
    - {{uid: "1.2.840.10008.5.1.4.1.1.104.1", reason: "Encapsulated PDF: content unchecked"}}
    - {{uid: "1.2.840.10008.5.1.4.1.1.104.2", reason: "Encapsulated CDA: content unchecked"}}
    - {{uid: "1.2.840.10008.5.1.4.1.1.104.3", reason: "Encapsulated STL: may show a face"}}
    - {{uid: "1.2.840.10008.5.1.4.1.1.104.4", reason: "Encapsulated OBJ: may show a face"}}
    - {{uid: "1.2.840.10008.5.1.4.1.1.104.5", reason: "Encapsulated MTL: cannot be checked"}}
    - {{uid: "1.2.840.10008.5.1.4.1.1.66", reason: "Raw Data: opaque content cannot be checked"}}
rules:
"""
    lines += ["  - " + a for a in ADDITIONS]
    return header + body + "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--out", type=Path, default=ROOT / "policies" / "dicom-basic-profile.yaml")
    args = ap.parse_args()
    text = build(args.data)
    args.out.write_text(text, encoding="utf-8")
    print(f"wrote {args.out} ({text.count(chr(10) + '  - {')} rows)")


if __name__ == "__main__":
    main()
