"""Every hard case of deid-hard-cases.md (headers 1-16): planted, de-identified, proven gone.

The default policy (mammography-screening, pixel stage on) runs on a synthetic mammogram carrying
PHI in every known leak location, in ISO_IR 192 and ISO_IR 100. Each planted value must be absent
from the de-identified data set and from the raw output bytes in both encodings, while the
attributes screening research needs survive and linkage holds across views, exams and runs.
"""

from __future__ import annotations

import contextlib
import datetime as dt
from dataclasses import replace
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset

from service.core.keys import SiteKeys
from synthetic.exam import make_exam
from synthetic.identity import ExamIdentity
from synthetic.mammogram import make_mammogram
from synthetic.phi import Phi, plant_phi
from tests.deid.support import KEY_B, all_elements, dcmdump_ok, engine, keys, run, save

__all__ = ["keys"]  # the fixture, imported for pytest

MG = "1.2.840.10008.5.1.4.1.1.1.2"


def _encodings(value: str) -> list[bytes]:
    out = [value.encode("utf-8")]
    with contextlib.suppress(UnicodeEncodeError):
        out.append(value.encode("latin-1"))
    return out


def _identity_values(ident: ExamIdentity) -> list[str]:
    return [ident.patient_id, ident.accession_number, ident.institution_name,
            ident.institution_address, ident.department, ident.station_name,
            ident.device_serial_number, ident.detector_id, ident.birth_date, ident.study_date,
            ident.patient_name, *ident.patient_name.replace("^", " ").split()[:1]]


def _string_values(ds: Dataset) -> list[str]:
    out = []
    for elem in all_elements(ds):
        if elem.VR == "SQ":
            continue
        v = elem.value
        if isinstance(v, bytes):
            out.append(v.decode("latin-1"))
        out.append(str(v))
    return out


@pytest.fixture(scope="module", params=["ISO_IR 192", "ISO_IR 100"])
def planted(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
            keys: SiteKeys) -> dict:
    charset = request.param
    tmp = tmp_path_factory.mktemp("hard")
    ident = ExamIdentity(charset=charset)
    ds = make_mammogram(identity=ident, laterality="L", view="CC")
    ds.SpecificCharacterSet = charset
    original = Dataset(ds)  # shallow copy of the synthetic header before planting
    values = plant_phi(ds)
    src = save(ds, tmp / "in.dcm")
    source_bytes = src.read_bytes()
    for v in values[:5]:  # the planting itself is real: values are in the input bytes
        assert any(e in source_bytes for e in _encodings(v)), v
    d = engine("mammography-screening", keys)
    outcome, out, raw = run(d, src, tmp / "out.dcm")
    return {"charset": charset, "values": values + _identity_values(ident), "src": src,
            "out": out, "raw": raw, "outcome": outcome, "path": tmp / "out.dcm",
            "source": pydicom.dcmread(src), "original": original}


def test_every_planted_value_is_gone_from_dataset_and_bytes(planted: dict) -> None:
    strings = _string_values(planted["out"]) + _string_values(planted["out"].file_meta)
    raw = planted["raw"]
    leaks = []
    for value in planted["values"]:
        if any(value in s for s in strings):
            leaks.append(("dataset", value))
        for enc in _encodings(value):
            if enc in raw:
                leaks.append(("bytes", value))
    assert not leaks, f"{len(leaks)} leaks in {planted['charset']}: {leaks}"


def test_no_private_no_removed_sequences_no_overlays_or_curves(planted: dict) -> None:
    out = planted["out"]
    tags = [int(e.tag) for e in all_elements(out)]
    assert not [t for t in tags if (t >> 16) % 2 == 1], "private elements left"
    assert not [t for t in tags if 0x5000 <= t >> 16 <= 0x60FF], "curve/overlay elements left"
    for kw in ("OtherPatientIDsSequence", "OriginalAttributesSequence", "EncapsulatedDocument",
               "ReferencedPatientPhotoSequence", "DigitalSignaturesSequence", "IconImageSequence",
               "PatientBirthDate", "OtherPatientNames", "PatientAddress", "InstitutionName",
               "InstitutionAddress", "StationName", "DeviceSerialNumber", "DetectorID",
               "OperatorsName", "PerformingPhysicianName", "ReferencedPatientSequence"):
        assert kw not in out, kw
    assert 0x04000550 not in out  # ModifiedAttributesSequence
    # RequestAttributesSequence: X, but C under clean-descriptors: kept, every item cleaned
    for item in out.get("RequestAttributesSequence", []):
        assert "RequestedProcedureID" not in item and "ScheduledProcedureStepID" not in item
        assert item.AccessionNumber == out.AccessionNumber  # same keyed pseudonym as top level
        assert item.RequestedProcedureDescription == "Mammo"


def test_must_survive_attributes_survive(planted: dict) -> None:
    out, src = planted["out"], planted["source"]
    for kw in ("Modality", "SOPClassUID", "ImageLaterality", "ViewPosition",
               "PresentationIntentType", "PhotometricInterpretation", "Rows", "Columns",
               "BitsAllocated", "BitsStored", "HighBit", "PixelRepresentation", "Manufacturer",
               "ManufacturerModelName", "KVP", "CompressionForce", "BodyPartThickness",
               "BreastImplantPresent", "PatientSex", "WindowCenter", "WindowWidth",
               "ViewCodeSequence"):
        assert kw in src, f"synthetic header lacks {kw}"
        assert out[kw].value == src[kw].value, kw
    assert out.PatientAge == "090Y"  # 095Y capped
    assert out.StudyDescription == "Screening Mammography Bilateral"
    assert out.SeriesDescription == "L CC"
    assert out.ProtocolName == "R MLO"
    assert out.PixelData == src.PixelData
    assert planted["outcome"].pixel.action == "unchanged"


def test_file_meta_is_new(planted: dict) -> None:
    out = planted["out"]
    meta = out.file_meta
    assert meta.MediaStorageSOPInstanceUID == out.SOPInstanceUID
    assert meta.MediaStorageSOPClassUID == out.SOPClassUID == MG
    assert meta.ImplementationClassUID == "2.25.99370533180154640466128434406493327489"
    assert meta.ImplementationVersionName == "DEIDGATE_010"
    for kw in ("SourceApplicationEntityTitle", "SendingApplicationEntityTitle",
               "ReceivingApplicationEntityTitle"):
        assert kw not in meta
    dcmdump_ok(planted["path"], planted["src"])


def test_deidentification_is_declared(planted: dict) -> None:
    out = planted["out"]
    assert out.PatientIdentityRemoved == "YES"
    assert "mammography-screening" in out.DeidentificationMethod
    seq = out.DeidentificationMethodCodeSequence
    codes = {(c.CodeValue, c.CodingSchemeDesignator) for c in seq}
    assert codes == {(v, "DCM") for v in
                     ("113100", "113107", "113108", "113105", "113104", "113103", "113101")}
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"


def test_uids_remapped_and_references_consistent(planted: dict) -> None:
    out, src = planted["out"], planted["source"]
    for kw in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "FrameOfReferenceUID",
               "IrradiationEventUID"):
        assert out[kw].value.startswith("2.25.") and out[kw].value != src[kw].value
    # RelatedSeriesSequence survives (Type 3 but not removed by the table): its study UID is the
    # same original, so it must map to the same new one.
    assert out.RelatedSeriesSequence[0].StudyInstanceUID == out.StudyInstanceUID
    outcome = planted["outcome"]
    assert outcome.sop_instance_uid == out.SOPInstanceUID
    kinds = {m.kind: m for m in outcome.mappings}
    assert kinds["patient"].pseudonym == out.PatientID == outcome.patient_pseudonym
    assert kinds["study"].original == src.StudyInstanceUID
    assert "original" not in repr(kinds["patient"]) and src.PatientID not in repr(outcome)


def test_dates_shifted_with_precision_and_offsets(planted: dict) -> None:
    out, src = planted["out"], planted["source"]
    f = "%Y%m%d"

    def delta(a: str, b: str) -> int:
        return (dt.datetime.strptime(a, f) - dt.datetime.strptime(b, f)).days

    shift = delta(out.StudyDate, src.StudyDate)
    assert shift != 0 and -3650 <= shift <= -30
    for kw in ("SeriesDate", "LastMenstrualDate", "InstanceCreationDate", "ContentDate"):
        assert delta(out[kw].value, src[kw].value) == shift, kw
    assert out.AcquisitionDateTime.endswith("093512.123456+0100")
    assert delta(out.AcquisitionDateTime[:8], src.AcquisitionDateTime[:8]) == shift
    assert out.StudyTime == src.StudyTime  # TM kept (documented)
    # the structured content three levels deep
    level3 = out.ContentSequence[0].ContentSequence[0].ContentSequence
    by_type = {item.ValueType: item for item in level3}
    assert by_type["DATETIME"].DateTime.endswith("081122.5-0500")
    assert delta(by_type["DATETIME"].DateTime[:8], "20240314") == shift
    assert str(by_type["PNAME"].PersonName) == "ANONYMIZED"
    assert by_type["TEXT"].TextValue in ("", "by on")  # only vocabulary words may remain


def _exam(tmp: Path, ident: ExamIdentity, keys: SiteKeys, key_name: str = "a",
          project: str = "test") -> list[Dataset]:
    out = []
    d = engine("mammography-screening", keys, project=project)
    for i, ds in enumerate(make_exam(identity=ident, rows=64, cols=48)):
        src = save(ds, tmp / f"{ident.accession_number}-{i}.dcm")
        dest = tmp / "out" / key_name / project / f"{ident.accession_number}-{i}.dcm"
        _, res, _ = run(d, src, dest)
        out.append(res)
    return out


def _day(da: str) -> dt.date:
    return dt.date(int(da[:4]), int(da[4:6]), int(da[6:]))


def test_linkage_across_views_exams_and_runs(tmp_path: Path, keys: SiteKeys) -> None:
    first = ExamIdentity(study_date="20220310", accession_number="BSN22031000001")
    second = replace(first, study_date="20240312", accession_number="BSN24031200002", seed=7)
    a = _exam(tmp_path, first, keys)
    b = _exam(tmp_path, second, keys)
    assert len({v.StudyInstanceUID for v in a}) == 1 and len({v.SeriesInstanceUID for v in a}) == 1
    assert len({v.SOPInstanceUID for v in a}) == 4
    assert a[0].StudyInstanceUID != b[0].StudyInstanceUID
    assert {v.PatientID for v in a} == {v.PatientID for v in b}
    assert str(a[0].PatientName) == f"ANON^{a[0].PatientID}"
    days = _day(b[0].StudyDate) - _day(a[0].StudyDate)
    assert days.days == (dt.date(2024, 3, 12) - dt.date(2022, 3, 10)).days
    # a second run (fresh engine, same key) gives the same pseudonyms and UIDs
    again = _exam(tmp_path, first, SiteKeys.from_master(bytes(range(1, 33))), key_name="again")
    assert [v.SOPInstanceUID for v in again] == [v.SOPInstanceUID for v in a]
    assert again[0].PatientID == a[0].PatientID
    # another key or another project: unlinkable
    other_key = _exam(tmp_path, first, SiteKeys.from_master(KEY_B), key_name="b")
    assert other_key[0].PatientID != a[0].PatientID
    assert other_key[0].StudyInstanceUID != a[0].StudyInstanceUID
    other_project = _exam(tmp_path, first, keys, project="other")
    assert other_project[0].PatientID != a[0].PatientID


def test_different_women_get_different_pseudonyms(tmp_path: Path, keys: SiteKeys) -> None:
    d = engine("mammography-screening", keys)
    seen = set()
    for n in range(6):
        phi = replace(Phi(), patient_id=f"{31125847392 + n:011d}")
        ds = make_mammogram(rows=48, cols=32)
        plant_phi(ds, phi)
        o = d.deidentify(save(ds, tmp_path / f"w{n}.dcm"))
        seen.add(o.patient_pseudonym)
    assert len(seen) == 6
