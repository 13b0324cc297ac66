"""``deidgate policy validate`` / ``explain`` through the real command line (typer runner)."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from service.cli.main import app
from synthetic.mammogram import make_mammogram
from synthetic.phi import plant_phi
from tests.deid.support import save


@pytest.fixture()
def runner(home: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("DEIDGATE_HOME", str(home))
    return CliRunner()


def test_validate_ok_and_broken(runner: CliRunner, tmp_path: Path) -> None:
    res = runner.invoke(app, ["policy", "validate", "mammography-screening"])
    assert res.exit_code == 0, res.output
    assert "dicom-basic-profile -> mammography-screening" in res.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nextends: mammography-screening\nrules:\n"
                   "  - {keyword: PatientName, action: scramble}\n")
    res = runner.invoke(app, ["policy", "validate", str(bad)])
    assert res.exit_code == 2
    assert f"{bad}:4: key 'rules[0].action'" in res.output


def test_explain_prints_rules_not_values(runner: CliRunner, tmp_path: Path) -> None:
    ds = make_mammogram(rows=32, cols=32)
    values = plant_phi(ds)
    src = save(ds, tmp_path / "in.dcm")
    res = runner.invoke(app, ["policy", "explain", "mammography-screening", str(src)])
    assert res.exit_code == 0, res.output
    assert "PatientID" in res.output and "pseudonym" in res.output
    assert "ContentSequence[0].ContentSequence[0].ContentSequence[0].TextValue" in res.output
    assert not [v for v in values if v in res.output]
    assert not [p.name for p in tmp_path.iterdir() if p.name not in {"in.dcm", "home"}]
