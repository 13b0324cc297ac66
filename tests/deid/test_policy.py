"""Policy loading: the shipped YAML, layering, selectors, and errors naming file, line and key."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from service.core.errors import PolicyError
from workers.deid import iod
from workers.deid.policy import load_policy, shipped_policies
from workers.deid.vocabulary import Action, Option, TagPattern

ROOT = Path(__file__).resolve().parents[2]
MG = "1.2.840.10008.5.1.4.1.1.1.2"


def write(tmp_path: Path, name: str, text: str) -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


# ------------------------------------------------------------------ shipped policies


def test_basic_profile_has_every_table_row_and_records_editions() -> None:
    path = ROOT / "policies" / "dicom-basic-profile.yaml"
    text = path.read_text()
    raw = yaml.safe_load(text)
    table_rows = [r for r in raw["rules"] if r["source"] in ("2024b", "2026c")]
    # 621 rows in 2024b + 35 rows new in 2026c
    assert len(table_rows) == 656
    assert sum(r["source"] == "2024b" for r in table_rows) == 4  # rows 2026c does not list
    assert "2026c" in text.split("name:")[0] and "2024b" in text.split("name:")[0]
    selectors = {r.get("tag") for r in table_rows}
    assert {"(50xx,xxxx)", "(60xx,3000)", "(60xx,4000)"} <= selectors
    assert any(r.get("private") for r in table_rows)
    options = {o for r in table_rows for o in r.get("options", {})}
    assert options == {o.value for o in Option} - {"clean-pixel-data"}
    assert set(raw["available_options"]) == {o.value for o in Option}


def test_generator_reproduces_the_committed_yaml(tmp_path: Path) -> None:
    """The script turns the two JSON extracts into the YAML; tiny extracts prove the mapping."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("gen", ROOT / "scripts" / "gen_basic_profile.py")
    assert spec and spec.loader
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    old = [
        {"name": "Study Date", "tag": "(0008,0020)", "stdCompIOD": "Y", "basicProfile": "D",
         "rtnLongFullDatesOpt": "K", "rtnLongModifDatesOpt": "C", "id": "00080020"},
        {"name": "Overlay Data", "tag": "(60XX,3000)", "stdCompIOD": "Y", "basicProfile": "X",
         "cleanGraphOpt": "C", "id": "60xx3000"},
        {"name": "Private Attributes", "tag": "(GGGG,EEEE) where GGGG is odd", "stdCompIOD": "N",
         "basicProfile": "X", "rtnSafePrivOpt": "C", "id": "ggggeeee"},
    ]
    new = {"edition": "2026c", "source": "test", "rows": {"(0008,0020)": "Z", "(0010,0011)": "X"}}
    (tmp_path / "ps3.15-table-e1-1-2024b.json").write_text(json.dumps(old))
    (tmp_path / "ps3.15-basic-profile-2026c.json").write_text(json.dumps(new))
    out = gen.build(tmp_path)
    doc = yaml.safe_load(out)
    rows = {r.get("tag") or ("private" if r.get("private") else r.get("vr") or "other"): r
            for r in doc["rules"]}
    assert rows["(0008,0020)"]["action"] == "Z"  # newest edition wins
    assert rows["(0008,0020)"]["source"] == "2026c"
    assert rows["(0008,0020)"]["options"] == {
        "retain-longitudinal-full-dates": "keep", "retain-longitudinal-modified-dates": "shift"}
    assert rows["(60xx,3000)"]["options"] == {"clean-graphics": "clean"}
    assert rows["private"]["options"] == {"retain-safe-private": "safe-private"}
    assert rows["(0010,0011)"]["source"] == "2026c"
    p = write(tmp_path, "gen.yaml", out)
    assert load_policy(p).name == "dicom-basic-profile"


def test_shipped_policies_load() -> None:
    assert {"dicom-basic-profile", "mammography-screening"} <= set(shipped_policies())
    mg = load_policy("mammography-screening")
    assert mg.layers == ["dicom-basic-profile", "mammography-screening"]
    assert mg.options == {
        Option.RETAIN_LONGITUDINAL_MODIFIED_DATES, Option.RETAIN_PATIENT_CHARACTERISTICS,
        Option.CLEAN_DESCRIPTORS, Option.CLEAN_STRUCTURED_CONTENT, Option.CLEAN_GRAPHICS,
        Option.CLEAN_PIXEL_DATA}
    assert mg.sop_classes.accept == [
        MG, "1.2.840.10008.5.1.4.1.1.1.2.1", "1.2.840.10008.5.1.4.1.1.13.1.3",
        "1.2.840.10008.5.1.4.1.1.13.1.4", "1.2.840.10008.5.1.4.1.1.13.1.5"]
    assert mg.safe_private == []
    assert mg.pixels_enabled


# ------------------------------------------------------------------ layering and selectors


def test_later_layer_wins_per_attribute_keyword_and_tag_are_one_selector(tmp_path: Path) -> None:
    base = write(tmp_path, "base.yaml", """
name: base
rules:
  - {tag: "(0010,0010)", action: Z}
  - {tag: "(0008,0080)", action: X/Z/D}
  - {other: true, action: keep}
""")
    write(tmp_path, "modality.yaml", """
name: modality
extends: base.yaml
rules:
  - {keyword: PatientName, action: pseudonym}
""")
    top = write(tmp_path, "project.yaml", """
name: project
extends: [modality.yaml]
options: [retain-institution-identity]
rules:
  - {keyword: InstitutionName, action: X, options: {retain-institution-identity: K}}
""")
    p = load_policy(top)
    assert p.layers == ["base", "modality", "project"]
    assert p.rules["tag:(0010,0010)"].action is Action.PSEUDONYM
    rs = p.matcher
    d = rs.decide(rs.match(0x00080080, "LO"), sop_class=MG, tag=0x00080080, top=True)
    assert d.action is Action.KEEP and d.via == "retain-institution-identity"
    assert base.exists()


def test_selector_precedence(tmp_path: Path) -> None:
    p = load_policy(write(tmp_path, "sel.yaml", """
name: sel
safe_private: [{creator: "SAFE CO", element: "10"}]
options: [retain-safe-private]
rules:
  - {tag: "(0010,0010)", action: Z}
  - {tag: "(60xx,3000)", action: X}
  - {tag: "(60xx,xxxx)", action: K}
  - {private_creator: "ACME 1.0", element: "0x01", action: clean}
  - {private: true, action: X, options: {retain-safe-private: safe-private}}
  - {vr: PN, action: X}
  - {other: true, action: K}
"""))
    rs = p.matcher
    assert rs.match(0x00100010, "PN").tag == "(0010,0010)"
    assert rs.match(0x60023000, "OW").tag == "(60xx,3000)"
    assert rs.match(0x60020010, "US").tag == "(60xx,xxxx)"
    assert rs.match(0x00091001, "LO", "ACME 1.0").private_creator == "ACME 1.0"
    assert rs.match(0x00091101, "LO", "OTHER").private is True
    assert rs.match(0x00081050, "PN").vr == "PN"
    assert rs.match(0x00080060, "CS").other is True
    priv = rs.decide(rs.match(0x00091101, "LO", "X"), sop_class=MG, tag=0x00091101, top=True)
    assert priv.action is Action.SAFE_PRIVATE
    assert ("SAFE CO", 0x10) in rs.safe_private


def test_tag_patterns() -> None:
    assert TagPattern.parse("(60xx,3000)").matches(0x60223000)
    assert not TagPattern.parse("(60xx,3000)").matches(0x60224000)
    assert TagPattern.parse("(50XX,XXXX)").matches(0x501E0005)
    assert TagPattern.parse("0010,0010").exact


def test_combined_actions_resolve_by_type_and_safely_when_unknown() -> None:
    assert iod.attribute_type(MG, 0x00100020) == 2  # PatientID, Type 2 in the Patient module
    assert iod.attribute_type(MG, 0x00080080) == 3  # InstitutionName, Type 3
    assert iod.attribute_type("1.2.840.10008.5.1.4.1.1.2", 0x00100020) is None  # CT: not listed
    assert iod.resolve(Action.Z_D, 2) is Action.EMPTY
    assert iod.resolve(Action.Z_D, 1) is Action.DUMMY
    assert iod.resolve(Action.X_Z_D, 3) is Action.REMOVE
    for combined, safe in [(Action.X_Z, Action.EMPTY), (Action.X_D, Action.DUMMY),
                           (Action.X_Z_D, Action.DUMMY), (Action.Z_D, Action.DUMMY),
                           (Action.X_Z_U, Action.UID)]:
        assert iod.resolve(combined, None) is safe


def test_action_letters_and_case_are_accepted(tmp_path: Path) -> None:
    p = load_policy(write(tmp_path, "a.yaml", """
name: a
rules:
  - {tag: "(0010,0010)", action: "x"}
  - {tag: "(0010,0020)", action: Keep}
  - {tag: "(0020,000D)", action: U}
"""))
    assert [r.action for r in p.rules.values()] == [Action.REMOVE, Action.KEEP, Action.UID]


# ------------------------------------------------------------------ errors: file, line, key


@pytest.mark.parametrize(
    ("text", "line", "key"),
    [
        ("name: x\nrules:\n  - {tag: '(0010,0010)', action: X}\nfrobnicate: 1\n", 4, "frobnicate"),
        ("name: x\nrules:\n  - {tag: '(0010,0010)', action: X}\n  - {tag: '(0010,0020)', "
         "action: zap}\n", 4, "rules[1].action"),
        ("name: x\nrules:\n  - tag: '(0010,0010)'\n    action: X\n  - tag: '(00Q0,xx10)'\n"
         "    action: X\n", 5, "rules[1].tag"),
        ("name: x\nrules:\n  - {tag: '(0010,0010)', action: X, colour: red}\n", 3,
         "rules[0].colour"),
        ("name: x\noptions: [retain-everything]\n", 2, "options[0]"),
        ("name: x\nrules:\n  - {keyword: PatientNaem, action: X}\n", 3, "rules[0].keyword"),
        ("name: x\nrules:\n  - {tag: '(0010,0010)', vr: PN, action: X}\n", 3, "rules[0]"),
        ("name: x\ndates:\n  shift_min_days: 10\n  shift_max_days: -10\n", 2, "dates"),
    ],
)
def test_errors_name_file_line_and_key(tmp_path: Path, text: str, line: int, key: str) -> None:
    path = write(tmp_path, "broken.yaml", text)
    with pytest.raises(PolicyError) as ei:
        load_policy(path)
    msg = ei.value.reason
    assert f"{path}:{line}:" in msg, msg
    assert f"key '{key}'" in msg, msg


def test_yaml_syntax_and_duplicate_key_errors_name_the_line(tmp_path: Path) -> None:
    bad = write(tmp_path, "syntax.yaml", "name: x\nrules:\n  - {tag: '(0010,0010)', action: X\n")
    with pytest.raises(PolicyError, match=re.escape(str(bad)) + r":\d+: YAML error"):
        load_policy(bad)
    dup = write(tmp_path, "dup.yaml", "name: x\nversion: '1'\nversion: '2'\n")
    with pytest.raises(PolicyError, match=re.escape(str(dup)) + r":3: YAML error: duplicate key"):
        load_policy(dup)


def test_error_in_a_parent_layer_names_the_parent(tmp_path: Path) -> None:
    parent = write(tmp_path, "parent.yaml",
                   "name: p\nrules:\n  - {tag: '(0010,0010)', action: ?}\n")
    child = write(tmp_path, "child.yaml", "name: c\nextends: parent.yaml\n")
    with pytest.raises(PolicyError) as ei:
        load_policy(child)
    assert f"{parent}:3:" in ei.value.reason


def test_missing_parent_cycles_and_conflicting_options_are_errors(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="does not exist"):
        load_policy(write(tmp_path, "m.yaml", "name: m\nextends: nowhere.yaml\n"))
    write(tmp_path, "c1.yaml", "name: c1\nextends: c2.yaml\n")
    with pytest.raises(PolicyError, match="cycle"):
        load_policy(write(tmp_path, "c2.yaml", "name: c2\nextends: c1.yaml\n"))
    with pytest.raises(PolicyError, match="exclude each other"):
        load_policy(write(tmp_path, "o.yaml", "name: o\nextends: dicom-basic-profile\noptions: "
                                              "[retain-longitudinal-full-dates, "
                                              "retain-longitudinal-modified-dates]\n"))
    with pytest.raises(PolicyError, match="unknown policy"):
        load_policy("no-such-policy")
    with pytest.raises(PolicyError, match=r"px.yaml:3: key 'pixels.colour': unknown key"):
        load_policy(write(tmp_path, "px.yaml", "name: px\nextends: mammography-screening\n"
                                               "pixels: {colour: red}\n"))
    with pytest.raises(PolicyError, match=r"px2.yaml:4: key 'pixels.mode'"):
        load_policy(write(tmp_path, "px2.yaml", "name: px2\nextends: mammography-screening\n"
                                                "pixels:\n  mode: maybe\n"))
