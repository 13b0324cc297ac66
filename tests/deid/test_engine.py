"""The engine on real files: pydicom's test files and deid-data (CT, MR, US, SR, SC, overlays,
private tags, JPEG 2000 / JPEG-LS / RLE / JPEG baseline, implicit VR, big endian).

Every output must be readable by pydicom and dcmtk, round-trip, carry no private element and no
original UID, keep references consistent with the top-level UIDs, and keep pixel bytes identical.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import deid_data
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import UID_dictionary

from service.core.errors import NotDicom, PolicyRefused, Truncated, UnsupportedSopClass
from service.core.keys import SiteKeys
from synthetic.mammogram import make_mammogram
from tests.deid.support import dcmdump_ok, engine, keys, no_pixel_policy, run, save
from workers.deid.engine import Deidentifier

__all__ = ["keys"]

PYDICOM_FILES = [
    "CT_small.dcm", "MR_small.dcm", "JPEG2000.dcm", "MR_small_jp2klossless.dcm",
    "MR_small_jpeg_ls_lossless.dcm", "MR_small_RLE.dcm", "SC_rgb_rle.dcm", "MR_small_implicit.dcm",
    "ExplVR_BigEnd.dcm", "test-SR.dcm", "reportsi.dcm", "examples_overlay.dcm",
    "JPEGLSNearLossless_08.dcm", "SC_rgb_small_odd.dcm", "waveform_ecg.dcm", "rtplan.dcm",
    "JPEG2000-embedded-sequence-delimiter.dcm", "SC_rgb_jpeg_dcmtk.dcm", "liver_1frame.dcm",
    "badVR.dcm", "rtdose.dcm", "GDCMJ2K_TextGBR.dcm", "MR_small_padded.dcm",
    "MR_small_bigendian.dcm", "SC_rgb_small_odd_big_endian.dcm", "JPGExtended.dcm",
    "examples_palette.dcm", "693_J2KI.dcm",
]  # fmt: skip
DEID_DATA = Path(deid_data.__file__).parent / "data"
DEID_FILES = sorted(str(p.relative_to(DEID_DATA)) for p in DEID_DATA.rglob("*.dcm"))


def _pydicom_file(name: str) -> Path:
    p = get_testdata_file(name, download=False)
    assert p is not None, f"pydicom test file {name} missing"
    return Path(p)


def _uids(ds: Dataset, path: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for elem in ds:
        key = f"{path}{elem.tag:08X}"
        if elem.VR == "SQ":
            for i, item in enumerate(elem.value or []):
                out.update(_uids(item, f"{key}[{i}]."))
        elif elem.VR == "UI" and elem.value:
            vals = elem.value if isinstance(elem.value, list) else [elem.value]
            for j, v in enumerate(vals):
                out[f"{key}#{j}"] = str(v)
    return out


def _private(ds: Dataset) -> list[int]:
    out = []
    for elem in ds:
        if elem.tag.is_private:
            out.append(int(elem.tag))
        if elem.VR == "SQ":
            for item in elem.value or []:
                out.extend(_private(item))
    return out


def _pixel_bytes(path: Path) -> bytes | None:
    ds = pydicom.dcmread(path)
    return ds.PixelData if "PixelData" in ds else None


def check_output(src: Path, dest: Path, d_out: Dataset) -> None:
    original = pydicom.dcmread(src)
    dcmdump_ok(dest, src)
    assert not _private(d_out), "private elements left"
    assert d_out.file_meta.MediaStorageSOPInstanceUID == d_out.SOPInstanceUID
    # UIDs: every non-registered UID is a new 2.25 UID; the mapping is a function and 1:1
    before, after = _uids(original), _uids(d_out)
    mapping: dict[str, str] = {}
    for key, new in after.items():
        if new in UID_dictionary:
            continue
        assert new.startswith("2.25."), (key, new)
        if key in before and before[key] not in UID_dictionary:
            old = before[key]
            assert new != old
            assert mapping.setdefault(old, new) == new, "one original UID, two new ones"
    assert len(set(mapping.values())) == len(mapping)
    olds = {v for v in before.values() if v not in UID_dictionary}
    raw = dest.read_bytes()
    leaked = [u for u in olds if len(u) > 10 and u.encode() in raw]
    assert not leaked, leaked
    # identifying top-level values are gone from the bytes
    kept = {str(e.value) for e in d_out if e.VR != "SQ"}  # e.g. Manufacturer == InstitutionName
    for kw in ("PatientName", "PatientID", "InstitutionName", "ReferringPhysicianName",
               "AccessionNumber", "PatientBirthDate", "OperatorsName", "StationName"):
        v = str(original.get(kw, "") or "")
        if len(v) >= 4 and not any(v in k for k in kept):
            assert v.encode() not in raw, kw
    # pixels byte-identical, and the file round-trips through pydicom
    assert _pixel_bytes(dest) == _pixel_bytes(src)
    buf = io.BytesIO()
    d_out.save_as(buf, enforce_file_format=True)
    assert pydicom.dcmread(io.BytesIO(buf.getvalue())) == d_out


def _refused_for_missing_study(d: Deidentifier, src: Path, tmp_path: Path) -> bool:
    """A Type 1 StudyInstanceUID missing: the instance cannot be placed; refused, not guessed."""
    if "StudyInstanceUID" in pydicom.dcmread(src, stop_before_pixels=True):
        return False
    with pytest.raises(PolicyRefused, match="no StudyInstanceUID"):
        d.deidentify(src)
    return True


@pytest.mark.parametrize("name", PYDICOM_FILES)
def test_pydicom_files(name: str, tmp_path: Path, keys: SiteKeys) -> None:
    src = _pydicom_file(name)
    d = engine("dicom-basic-profile", keys)
    if _refused_for_missing_study(d, src, tmp_path):
        return
    outcome, out, _ = run(d, src, tmp_path / "out.dcm")
    check_output(src, tmp_path / "out.dcm", out)
    assert outcome.pixel is not None
    assert outcome.pixel.action in ("unchanged", "no-pixels")


@pytest.mark.parametrize("name", DEID_FILES)
def test_deid_data_files(name: str, tmp_path: Path, keys: SiteKeys) -> None:
    src = DEID_DATA / name
    d = engine("dicom-basic-profile", keys)
    if _refused_for_missing_study(d, src, tmp_path):
        return
    _, out, _ = run(d, src, tmp_path / "out.dcm")
    check_output(src, tmp_path / "out.dcm", out)


def test_sr_references_follow_top_level_uids(tmp_path: Path, keys: SiteKeys) -> None:
    """An SR referencing its own study: the nested UID maps to the new top-level one."""
    ds = pydicom.dcmread(_pydicom_file("test-SR.dcm"))
    study = ds.StudyInstanceUID
    item = Dataset()
    item.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
    ds.ContentSequence[0].ContentSequence = pydicom.sequence.Sequence(
        [_image_item(item), *ds.ContentSequence[0].get("ContentSequence", [])])
    ref = Dataset()
    ref.StudyInstanceUID = study
    ds.ReferencedRequestSequence = pydicom.sequence.Sequence([ref])
    src = save(ds, tmp_path / "sr.dcm")
    d = engine("dicom-basic-profile", keys)
    _, out, _ = run(d, src, tmp_path / "out.dcm")
    nested = out.ContentSequence[0].ContentSequence[0].ReferencedSOPSequence[0]
    assert nested.ReferencedSOPInstanceUID == out.SOPInstanceUID
    assert out.ReferencedRequestSequence[0].StudyInstanceUID == out.StudyInstanceUID


def _image_item(ref: Dataset) -> Dataset:
    it = Dataset()
    it.RelationshipType = "CONTAINS"
    it.ValueType = "IMAGE"
    it.ReferencedSOPSequence = pydicom.sequence.Sequence([ref])
    return it


# ------------------------------------------------------------------ refusals (fail closed)


def test_refusals(tmp_path: Path, keys: SiteKeys) -> None:
    basic = engine("dicom-basic-profile", keys)
    mammo = engine("mammography-screening", keys)
    with pytest.raises(UnsupportedSopClass, match="not a mammography SOP class"):
        mammo.deidentify(_pydicom_file("CT_small.dcm"))
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(b"not dicom at all" * 20)
    with pytest.raises(NotDicom):
        basic.deidentify(junk)
    with pytest.raises(NotDicom):
        basic.deidentify(_pydicom_file("no_meta.dcm"))
    with pytest.raises(Truncated):
        basic.deidentify(_pydicom_file("MR_truncated.dcm"))
    # truncated inside the pixel data of a mammogram
    full = save(make_mammogram(rows=64, cols=48), tmp_path / "mg.dcm")
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(full.read_bytes()[:-100])
    with pytest.raises(Truncated):
        mammo.deidentify(cut)
    # an encapsulated PDF is refused by the basic profile
    pdf = pydicom.dcmread(_pydicom_file("MR_small.dcm"), stop_before_pixels=True)
    pdf.SOPClassUID = pdf.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.104.1"
    pdf.EncapsulatedDocument = b"%PDF-1.4 report\n"
    for tag in [t for t in pdf.keys() if t.group == 0x0028]:  # noqa: SIM118 - snapshot
        del pdf[tag]  # a document, not an image
    with pytest.raises(UnsupportedSopClass, match="Encapsulated PDF"):
        basic.deidentify(save(pdf, tmp_path / "pdf.dcm"))
    with pytest.raises(PolicyRefused) as ei:  # deflated: cannot be read header-first
        basic.deidentify(_pydicom_file("image_dfl.dcm"))
    assert ei.value.code == "deflated"


def test_unparseable_element_refuses_instead_of_half_cleaning(tmp_path: Path,
                                                              keys: SiteKeys) -> None:
    """A US value of 3 bytes cannot be decoded: refused, nothing written."""
    ds = make_mammogram(rows=32, cols=32)
    ds.add_new(0x00280106, "US", 5)  # SmallestImagePixelValue
    src = save(ds, tmp_path / "in.dcm")
    good = b"\x28\x00\x06\x01US\x02\x00\x05\x00"
    data = src.read_bytes()
    assert data.count(good) == 1
    bad = tmp_path / "bad.dcm"
    bad.write_bytes(data.replace(good, b"\x28\x00\x06\x01US\x03\x00\x05\x00\x00"))
    d = engine(no_pixel_policy(tmp_path), keys)
    with pytest.raises(PolicyRefused) as ei:
        d.deidentify(bad)
    assert ei.value.code == "malformed-element"
    assert not list(tmp_path.glob("out*"))


def test_unknown_public_tags_and_unlisted_person_names_are_removed(tmp_path: Path,
                                                                   keys: SiteKeys) -> None:
    ds = pydicom.dcmread(_pydicom_file("MR_small.dcm"))
    ds.add_new(0x00231234 & 0xFFFEFFFF, "LO", "unknown public")  # (0022,1234): not in dictionary
    ds.add_new(0x00081050, "PN", "Doctor^Unlisted")  # PerformingPhysicianName (in the table)
    ds.add_new(0x00404037, "PN", "Human^Performer")  # HumanPerformerName: not in the table
    ds.ClinicalTrialSponsorName = "kept sponsor"  # not in table E.1-1, not PN: kept
    src = save(ds, tmp_path / "in.dcm")
    out = engine("dicom-basic-profile", keys).deidentify(src).dataset
    assert 0x00221234 not in out
    assert 0x00404037 not in out and 0x00081050 not in out


# ------------------------------------------------------------------ explain, write, speed path


def test_explain_writes_nothing_and_prints_no_values(tmp_path: Path, keys: SiteKeys) -> None:
    from synthetic.phi import plant_phi

    ds = make_mammogram(rows=32, cols=32)
    values = plant_phi(ds)
    src = save(ds, tmp_path / "in.dcm")
    before = sorted(os.listdir(tmp_path))
    rows = engine("mammography-screening", keys).explain(src)
    assert sorted(os.listdir(tmp_path)) == before
    text = "\n".join(str(r) for r in rows)
    assert not [v for v in values if v in text]
    by_path = {r.path: r for r in rows}
    assert by_path["PatientID"].action == "pseudonym"
    assert by_path["InstitutionName"].action == "remove"
    assert by_path["SourceApplicationEntityTitle"].action == "remove"
    assert by_path["StudyDate"].via == "retain-longitudinal-modified-dates"
    deep = [r for r in rows if r.path.startswith("ContentSequence[0].ContentSequence[0]."
                                                 "ContentSequence[0].")]
    assert any(r.keyword == "TextValue" and r.action == "clean" for r in deep)
    assert any(r.keyword == "" and r.tag.startswith("(0009,") and r.action == "remove"
               for r in rows)
    assert by_path["PixelData"].action == "pixel stage"


def test_write_is_atomic_and_pixels_are_copied_from_the_source(tmp_path: Path,
                                                               keys: SiteKeys) -> None:
    src = save(make_mammogram(rows=128, cols=96), tmp_path / "in.dcm")
    d = engine("mammography-screening", keys)
    outcome = d.deidentify(src)
    dest = tmp_path / "o" / "x.dcm"
    d.write(outcome, dest)
    assert [p.name for p in dest.parent.iterdir()] == ["x.dcm"]  # no temp file left
    raw_in, raw_out = src.read_bytes(), dest.read_bytes()
    span = outcome.source.pixel  # type: ignore[union-attr]
    assert raw_out.endswith(raw_in[span.start : span.end])
    assert outcome.pixel is not None and outcome.pixel.action == "unchanged"
    assert "PixelData" not in outcome.dataset  # the header is all the engine holds


@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.90",
                                "1.2.840.10008.1.2.5"])
def test_blanked_pixels_are_written(ts: str, tmp_path: Path, keys: SiteKeys) -> None:
    """Burned-in text: the pixel stage blanks it and the writer emits the new pixel bytes
    (uncompressed, JPEG 2000 lossless and RLE, each re-encoded in its own transfer syntax)."""
    ds = make_mammogram(rows=768, cols=640, burned_in_text="ODEGARD 1205", transfer_syntax=ts)
    src = save(ds, tmp_path / "in.dcm")
    d = engine("mammography-screening", keys)
    outcome, out, _ = run(d, src, tmp_path / "out.dcm")
    assert outcome.pixel is not None and outcome.pixel.action == "blanked"
    assert out.file_meta.TransferSyntaxUID == (outcome.pixel.new_transfer_syntax or ts)
    before, after = pydicom.dcmread(src).pixel_array, out.pixel_array
    assert before.shape == after.shape and (before != after).any()
    dcmdump_ok(tmp_path / "out.dcm", src)


def test_a_cut_file_is_never_accepted(tmp_path: Path, keys: SiteKeys) -> None:
    """Cut a mammogram at many points (header, element boundaries, pixels): always refused."""
    from service.core.errors import Rejected

    full = save(make_mammogram(rows=32, cols=32), tmp_path / "full.dcm").read_bytes()
    d = engine(no_pixel_policy(tmp_path), keys)
    cuts = sorted({*range(0, len(full) - 1, 53), len(full) - 1, len(full) - 2})
    accepted = []
    for n in cuts:
        p = tmp_path / "cut.dcm"
        p.write_bytes(full[:n])
        try:
            d.deidentify(p)
        except Rejected as exc:
            assert isinstance(exc, (Truncated, NotDicom)), (n, exc)
        else:
            accepted.append(n)
    assert not accepted, accepted


def test_write_refuses_when_the_source_changed_or_vanished(tmp_path: Path,
                                                           keys: SiteKeys) -> None:
    src = save(make_mammogram(rows=32, cols=32), tmp_path / "in.dcm")
    d = engine(no_pixel_policy(tmp_path), keys)
    outcome = d.deidentify(src)
    src.write_bytes(src.read_bytes() + b"\x00\x00")
    with pytest.raises(PolicyRefused, match="changed"):
        d.write(outcome, tmp_path / "out" / "a.dcm")
    outcome = d.deidentify(src)
    src.unlink()
    with pytest.raises(PolicyRefused, match="vanished"):
        d.write(outcome, tmp_path / "out" / "b.dcm")
    assert not list((tmp_path / "out").iterdir())  # no partial or temp file left


def test_identity_surviving_in_a_kept_attribute_is_refused(tmp_path: Path,
                                                            keys: SiteKeys) -> None:
    """A vendor writes the patient's name into an attribute the policy keeps: refused."""
    ds = make_mammogram(rows=32, cols=32)
    ds.PatientName = "Sæther^Ingrid"
    ds.ManufacturerModelName = "Selenia Dimensions (Sæther)"
    src = save(ds, tmp_path / "in.dcm")
    d = engine(no_pixel_policy(tmp_path), keys)
    with pytest.raises(PolicyRefused) as ei:
        d.deidentify(src)
    assert ei.value.code == "identity-survived"
    assert "ManufacturerModelName" in ei.value.reason and "Sæther" not in ei.value.reason
    # a surname that is also a code meaning word is terminology, not a leak
    ds.ManufacturerModelName = "Selenia Dimensions"
    ds.PatientName = "Breast^Ingrid"
    src = save(ds, tmp_path / "in2.dcm")
    out = d.deidentify(src).dataset
    assert out.AnatomicRegionSequence[0].CodeMeaning == "Breast"
