"""Small pieces: date shifting, age capping, the text cleaner, keyed pseudonyms."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from service.core.keys import SiteKeys
from synthetic.mammogram import make_mammogram
from tests.deid.support import KEY_A, engine, keys, no_pixel_policy, save
from workers.deid.dates import BadDate, shift_da, shift_dt
from workers.deid.pseudonym import Pseudonymizer
from workers.deid.text import TextCleaner, phi_tokens

__all__ = ["keys"]


@pytest.mark.parametrize(
    ("value", "days", "want"),
    [
        ("20240315", -10, "20240305"),
        ("20240301", -1, "20240229"),  # leap day
        ("202403", -31, "202401"),  # month precision stays month precision
        ("2024", -400, "2022"),
        ("20240101-20240131", -1, "20231231-20240130"),  # a DA range
        ("2024.03.15", 1, "20240316"),  # ACR-NEMA style
    ],
)
def test_shift_da(value: str, days: int, want: str) -> None:
    assert shift_da(value, days) == want


@pytest.mark.parametrize(
    ("value", "want"),
    [
        ("20240315093512.123456+0100", "20240305093512.123456+0100"),
        ("20240315093512-0500", "20240305093512-0500"),
        ("2024031509", "2024030509"),
        ("20240315", "20240305"),
    ],
)
def test_shift_dt_keeps_fraction_and_offset(value: str, want: str) -> None:
    assert shift_dt(value, -10) == want


@pytest.mark.parametrize("bad", ["15.03.2024", "yesterday", "20241315", "2024031509351x"])
def test_bad_dates_are_refused_by_the_shifter(bad: str) -> None:
    with pytest.raises(BadDate):
        shift_dt(bad, 3) if len(bad) > 10 else shift_da(bad, 3)


def test_day_offset_is_keyed_stable_in_range_and_never_zero() -> None:
    p = Pseudonymizer(SiteKeys.from_master(KEY_A), "proj")
    offsets = {p.day_offset(f"{n:011d}", -2, 2) for n in range(200)}
    assert offsets == {-2, -1, 1, 2}
    assert p.day_offset("12057847391", -3650, -30) == p.day_offset("12057847391", -3650, -30)
    other = Pseudonymizer(SiteKeys.from_master(bytes(range(50, 82))), "proj")
    diffs = sum(p.day_offset(f"{n}", -3650, -30) != other.day_offset(f"{n}", -3650, -30)
                for n in range(20))
    assert diffs >= 18


def test_pseudonyms_and_uids() -> None:
    p = Pseudonymizer(SiteKeys.from_master(KEY_A), "proj")
    pid = p.patient_id("12057847391")
    assert pid.startswith("P") and len(pid) == 21 and pid == p.patient_id(" 12057847391 ")
    assert pid != Pseudonymizer(SiteKeys.from_master(KEY_A), "other").patient_id("12057847391")
    uid = p.uid("1.2.578.1.20240315.1")
    assert uid.startswith("2.25.") and len(uid) <= 64 and int(uid[5:]) < 2**128
    assert p.uid("1.2.840.10008.5.1.4.1.1.1.2") == "1.2.840.10008.5.1.4.1.1.1.2"  # registered
    assert len({p.patient_id(f"{n:011d}") for n in range(5000)}) == 5000


def test_text_cleaner_keeps_vocabulary_only() -> None:
    c = TextCleaner(["prior"])
    phi = phi_tokens(["Rose^Ada", "12057847391"])
    assert c.clean("L CC", phi) == "L CC"
    assert c.clean("R MLO prior", phi) == "R MLO prior"
    assert c.clean("Screening Mammography Bilateral", phi) == "Screening Mammography Bilateral"
    assert c.clean("Ada Rose 12057847391 tlf 69 86 00 00, 15.03.2024", phi) == ""
    assert c.clean("2D + 3D tomo\nmammo by Ødegård", phi) == "2D + 3D tomo\nmammo"
    # a PHI token is dropped even when it is a vocabulary word
    assert c.clean("Mass", phi_tokens(["Mass^Kari"])) == ""


@pytest.mark.parametrize(
    ("age", "want"),
    [("095Y", "090Y"), ("089Y", "089Y"), ("090Y", "090Y"), ("999M", "999M"), ("030W", "030W"),
     ("abc", "000Y")],
)
def test_age_cap(age: str, want: str, tmp_path: Path, keys: SiteKeys) -> None:
    ds = make_mammogram(rows=32, cols=32)
    ds.PatientAge = age
    src = save(ds, tmp_path / "in.dcm")
    out = engine(no_pixel_policy(tmp_path), keys).deidentify(src).dataset
    assert out.PatientAge == want


def test_safe_private_allow_list(tmp_path: Path, keys: SiteKeys) -> None:
    ds = make_mammogram(rows=32, cols=32)
    safe = ds.private_block(0x0019, "HOLOGIC, Inc.", create=True)
    safe.add_new(0x10, "DS", "12.5")
    safe.add_new(0x11, "LO", "Ødegård")
    other = ds.private_block(0x0021, "OTHER CO", create=True)
    other.add_new(0x10, "DS", "1")
    src = save(ds, tmp_path / "in.dcm")
    layer = tmp_path / "safe.yaml"
    layer.write_text(
        f"name: safe\nextends: {no_pixel_policy(tmp_path).name}\n"
        "options: [retain-safe-private]\n"
        "safe_private: [{creator: 'HOLOGIC, Inc.', element: '10'}]\n")
    d = engine(layer, keys)
    outcome = d.deidentify(src)
    d.write(outcome, tmp_path / "out.dcm")
    out = pydicom.dcmread(tmp_path / "out.dcm")
    private = {int(e.tag): e.value for e in out if e.tag.is_private}
    assert private == {0x00190010: "HOLOGIC, Inc.", 0x00191010: "12.5"}
    assert "113111" in {c.CodeValue for c in out.DeidentificationMethodCodeSequence}
    # without the option the allow-list is not used
    plain = engine(no_pixel_policy(tmp_path), keys).deidentify(src).dataset
    assert not [e for e in plain if e.tag.is_private]


def test_pydicom_warnings_never_carry_values(caplog: pytest.LogCaptureFixture) -> None:
    """pydicom quotes invalid values in its warnings; the engine withholds them from the log and
    silences the duplicate warning (installed at import; re-installed here because pytest resets
    warning filters around each test)."""
    import warnings

    from pydicom import config
    from pydicom.valuerep import validate_value

    from workers.deid.engine import _protect_logs

    with warnings.catch_warnings(record=True) as seen, caplog.at_level("DEBUG", logger="pydicom"):
        _protect_logs()
        validate_value("AS", "Kjærstad 15.03", config.WARN)
        validate_value("DA", "Kjaerstad", config.WARN)
    assert "withheld" in caplog.text  # pydicom did complain, without the value
    text = caplog.text + " ".join(str(w.message) for w in seen)
    assert "Kjærstad" not in text and "Kjaerstad" not in text
