"""`deidgate deidentify` as an operator runs it: a real process, a real data folder.

Bad inputs (non-DICOM, truncated, unsupported SOP class) are refused with a specific reason, never
stop the batch, never produce output, and the report carries no PHI (not even input file names,
which in exports are often LASTNAME_ID_VIEW.dcm).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from synthetic.exam import write_exam
from synthetic.identity import ExamIdentity

DEIDGATE = [sys.executable, "-m", "service.cli.main"]
IDENT = ExamIdentity()
PHI_STRINGS = [IDENT.patient_id, IDENT.accession_number, "Ødegård", "Tromsø"]


def run_cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DEIDGATE_HOME": str(home)}
    env.pop("DEIDGATE_DATABASE_URL", None)
    return subprocess.run(
        [*DEIDGATE, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )


@pytest.fixture()
def inputs(tmp_path: Path) -> Path:
    folder = tmp_path / "export"
    folder.mkdir()
    views = write_exam(folder, identity=IDENT).files
    # names as exports really write them: identifying
    for i, v in enumerate(views):
        v.rename(folder / f"ODEGARD_{IDENT.patient_id}_{i}.dcm")
    (folder / f"ODEGARD_{IDENT.patient_id}_notes.dcm").write_bytes(b"not dicom at all\n")
    good = next(folder.glob("*_0.dcm")).read_bytes()
    (folder / "sub").mkdir()
    (folder / "sub" / f"ODEGARD_{IDENT.patient_id}_cut.dcm").write_bytes(good[: len(good) // 2])
    (folder / "sub" / f"ODEGARD_{IDENT.patient_id}_head.dcm").write_bytes(good[:2000])
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.save_as(folder / "sub" / "ct.dcm")
    return folder


def test_batch_refuses_bad_inputs_and_writes_good_ones(tmp_path: Path, inputs: Path) -> None:
    home, out, report = tmp_path / "home", tmp_path / "out", tmp_path / "report.json"
    proc = run_cli(home, "deidentify", str(inputs), "--out", str(out), "--report", str(report))
    assert proc.returncode == 0, proc.stderr
    rep = json.loads(report.read_text())
    assert rep["counts"]["inputs"] == 8
    assert rep["counts"]["written"] == 4
    assert rep["counts"]["refused"] == 4
    codes = sorted(e["code"] for e in rep["instances"] if e["status"] == "refused")
    assert codes == ["not-dicom", "truncated", "truncated", "unsupported-sop-class"]
    written = sorted(out.rglob("*.dcm"))
    assert len(written) == 4
    for f in written:
        ds = pydicom.dcmread(f)
        assert ds.PixelData  # every written view is complete
        assert f.name == f"{ds.SOPInstanceUID}.dcm"
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        raw = f.read_bytes()
        for s in PHI_STRINGS:
            assert s.encode("utf-8") not in raw
            assert s.encode("latin-1", "ignore") not in raw or not s.isascii()
    # no PHI in names, the report, or anything printed
    text = report.read_text() + proc.stderr + proc.stdout
    text += "".join(str(p) for p in out.rglob("*"))
    for s in [*PHI_STRINGS, "ODEGARD"]:
        assert s not in text
    # the site key was generated, 0600, under DEIDGATE_HOME
    key = home / "keys" / "site.key"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600


def test_same_key_same_pseudonyms_across_runs(tmp_path: Path, inputs: Path) -> None:
    home = tmp_path / "home"
    a = run_cli(home, "deidentify", str(inputs), "--out", str(tmp_path / "a"))
    b = run_cli(home, "deidentify", str(inputs), "--out", str(tmp_path / "b"))
    assert a.returncode == 0 and b.returncode == 0
    names_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.dcm"))
    names_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.dcm"))
    assert names_a == names_b and len(names_a) == 4
    # one exam: one patient folder, one study folder
    assert len({p.parts[0] for p in names_a}) == 1
    assert len({p.parts[1] for p in names_a}) == 1
    # another data folder means another key: nothing links
    c = run_cli(tmp_path / "other", "deidentify", str(inputs), "--out", str(tmp_path / "c"))
    assert c.returncode == 0
    names_c = sorted(p.relative_to(tmp_path / "c") for p in (tmp_path / "c").rglob("*.dcm"))
    assert {p.parts[0] for p in names_c}.isdisjoint({p.parts[0] for p in names_a})


def test_basic_profile_by_name_accepts_ct(tmp_path: Path, inputs: Path) -> None:
    ct = inputs / "sub" / "ct.dcm"
    proc = run_cli(tmp_path / "h", "deidentify", str(ct), "--out", str(tmp_path / "o"),
                   "--policy", "dicom-basic-profile")
    assert proc.returncode == 0, proc.stderr
    (out,) = list((tmp_path / "o").rglob("*.dcm"))
    ds = pydicom.dcmread(out)
    assert ds.PatientIdentityRemoved == "YES"


def test_missing_input_and_bad_policy_are_specific_errors(tmp_path: Path) -> None:
    proc = run_cli(tmp_path / "h", "deidentify", str(tmp_path / "nope"), "--out", str(tmp_path))
    assert proc.returncode == 2 and "does not exist" in proc.stderr
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nversion: '1'\nbogus_key: 1\n")
    f = tmp_path / "f.dcm"
    f.write_bytes(b"x")
    proc = run_cli(tmp_path / "h", "deidentify", str(f), "--out", str(tmp_path / "o"),
                   "--policy", str(bad))
    assert proc.returncode == 2
    assert "bad.yaml" in proc.stderr and "bogus_key" in proc.stderr
    assert "Traceback" not in proc.stderr
