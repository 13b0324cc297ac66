"""Shared helpers for the policy/engine tests (fixtures are imported by the test modules)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from service.core.keys import SiteKeys
from workers.deid.engine import Deidentifier
from workers.deid.outcome import DeidOutcome
from workers.deid.policy import load_policy

KEY_A = bytes(range(1, 33))
KEY_B = bytes(range(101, 133))


@pytest.fixture(scope="module")
def keys() -> SiteKeys:
    return SiteKeys.from_master(KEY_A)


def no_pixel_policy(tmp: Path, base: str = "mammography-screening") -> Path:
    """A layer over ``base`` with the pixel stage off (header tests need no text detection)."""
    p = tmp / f"{base}-nopix.yaml"
    p.write_text(f"name: {base}-nopix\nextends: {base}\npixels: {{mode: \"off\"}}\n")
    return p


def engine(policy: str | Path, keys: SiteKeys, project: str = "test") -> Deidentifier:
    return Deidentifier(load_policy(policy), keys, project=project)


def save(ds: Dataset, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


def run(d: Deidentifier, src: Path, dest: Path) -> tuple[DeidOutcome, Dataset, bytes]:
    outcome = d.deidentify(src)
    d.write(outcome, dest)
    return outcome, pydicom.dcmread(dest), dest.read_bytes()


def _dump(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["dcmdump", "-dc", str(path)], capture_output=True, text=True,
                          timeout=60)


def dcmdump_ok(path: Path, source: Path | None = None) -> None:
    """dcmtk reads the whole file without error, and warns about nothing the source did not."""
    cp = _dump(path)
    assert cp.returncode == 0, cp.stderr[-2000:]
    assert "E:" not in cp.stderr, cp.stderr[-2000:]
    warnings = {line for line in cp.stderr.splitlines() if line.startswith("W:")}
    if warnings and source is not None:
        warnings -= {line for line in _dump(source).stderr.splitlines() if line.startswith("W:")}
    assert not warnings, sorted(warnings)


def all_elements(ds: Dataset) -> list:
    out = []
    for elem in ds:
        out.append(elem)
        if elem.VR == "SQ":
            for item in elem.value or []:
                out.extend(all_elements(item))
    return out
