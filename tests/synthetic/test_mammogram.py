"""The synthetic mammograms look like what a Hologic unit writes, and round-trip through pydicom
and dcmtk in every transfer syntax the gateway must handle."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.uid import ExplicitVRLittleEndian

from synthetic.exam import make_exam, write_exam
from synthetic.font import render_text
from synthetic.header import MG_FOR_PRESENTATION
from synthetic.identity import ExamIdentity, default_identity
from synthetic.mammogram import make_mammogram, make_mammogram_with_truth

J2K, JLS, RLE = "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.5"


def roundtrip(ds: pydicom.Dataset) -> pydicom.Dataset:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return pydicom.dcmread(io.BytesIO(buf.getvalue()))


def test_header_has_the_mammography_attributes_screening_research_needs() -> None:
    ds = roundtrip(make_mammogram(view="MLO", laterality="R", burned_in_text="ÅSE"))
    assert ds.SOPClassUID == MG_FOR_PRESENTATION
    assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert (ds.Modality, ds.ImageLaterality, ds.ViewPosition) == ("MG", "R", "MLO")
    assert ds.PresentationIntentType == "FOR PRESENTATION"
    assert ds.ViewCodeSequence[0].CodeValue == "399368009"
    assert ds.ViewCodeSequence[0].CodingSchemeDesignator == "SCT"
    assert ds.BurnedInAnnotation == "NO"  # even though text is burned in
    for kw in ("KVP", "ExposureTime", "CompressionForce", "BodyPartThickness",
               "BreastImplantPresent", "Manufacturer", "ManufacturerModelName", "DetectorID",
               "WindowCenter", "WindowWidth", "PixelSpacing", "ImagerPixelSpacing",
               "PatientName", "PatientID", "PatientBirthDate", "AccessionNumber",
               "InstitutionName", "DeviceSerialNumber", "AnatomicRegionSequence"):
        assert kw in ds, kw
    assert (ds.BitsAllocated, ds.BitsStored, ds.HighBit) == (16, 12, 11)
    assert ds.pixel_array.shape == (512, 416)


def test_norwegian_names_survive_both_character_sets() -> None:
    for charset in ("ISO_IR 192", "ISO_IR 100"):
        ident = ExamIdentity(patient_name="Ødegård^Åse Kjærstad", charset=charset)
        ds = roundtrip(make_mammogram(identity=ident))
        assert str(ds.PatientName) == "Ødegård^Åse Kjærstad"


def test_breast_against_chest_wall_and_dark_background() -> None:
    ds, truth = make_mammogram_with_truth(laterality="L")
    img = ds.pixel_array
    assert truth.breast_mask[:, 0].mean() > 0.7  # left breast: chest wall on the left
    assert not truth.breast_mask[:, -1].any()
    assert img[~truth.breast_mask].max() < 10
    assert img[truth.breast_mask].mean() > 1000
    right, rtruth = make_mammogram_with_truth(laterality="R")
    assert rtruth.breast_mask[:, -1].mean() > 0.7
    assert right.PatientOrientation == ["P", "L"]
    inv, itruth = make_mammogram_with_truth(photometric="MONOCHROME1")
    assert inv.PresentationLUTShape == "INVERSE"
    assert inv.pixel_array[~itruth.breast_mask].min() > 4080


@pytest.mark.parametrize("corner", ["tl", "tr", "bl", "br", "edge", "auto"])
def test_text_lands_where_asked_outside_the_breast(corner: str) -> None:
    ds, truth = make_mammogram_with_truth(burned_in_text="ID 17", text_height=20,
                                          text_corner=corner)  # type: ignore[arg-type]
    (r0, c0, r1, c1), = truth.text_boxes
    assert truth.text_mask is not None
    assert truth.text_mask.sum() > 100
    assert not (truth.text_mask & truth.breast_mask).any()
    assert 18 <= r1 - r0 <= 24 and c1 - c0 > 60
    assert np.all(ds.pixel_array[truth.text_mask] == 4095)


def test_font_scales_and_has_norwegian_letters() -> None:
    assert render_text("ÆØÅ", 21).shape == (21, 3 * 15 + 2 * 3)
    assert not np.array_equal(render_text("Ø", 7), render_text("O", 7))
    assert not np.array_equal(render_text("Å", 7), render_text("A", 7))


@pytest.mark.parametrize("ts", [J2K, JLS, RLE])
def test_compressed_syntaxes_decode_to_the_same_pixels(ts: str) -> None:
    ds, truth = make_mammogram_with_truth(transfer_syntax=ts, burned_in_text="KARI")
    back = roundtrip(ds)
    assert back.file_meta.TransferSyntaxUID == ts
    assert back.LossyImageCompression == "00"
    assert truth.pixels is not None
    assert np.array_equal(back.pixel_array, truth.pixels)


def test_multi_frame_tomosynthesis() -> None:
    ds = roundtrip(make_mammogram(frames=3))
    assert ds.NumberOfFrames == 3
    assert ds.pixel_array.shape == (3, 512, 416)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.13.1.3"


def test_exam_has_four_views_of_one_study() -> None:
    views = make_exam(identity=default_identity(3))
    assert {(v.ImageLaterality, v.ViewPosition) for v in views} == {
        ("L", "CC"), ("R", "CC"), ("L", "MLO"), ("R", "MLO")}
    assert len({v.StudyInstanceUID for v in views}) == 1
    assert len({v.SOPInstanceUID for v in views}) == 4
    assert len({v.PatientID for v in views}) == 1
    other = make_exam(identity=default_identity(4))
    assert other[0].PatientID != views[0].PatientID
    assert other[0].StudyInstanceUID != views[0].StudyInstanceUID
    again = make_exam(identity=default_identity(3))
    assert [v.SOPInstanceUID for v in again] == [v.SOPInstanceUID for v in views]


def test_write_exam_names_files_by_uid_only_and_dcmtk_reads_them(tmp_path: Path) -> None:
    ident = default_identity(0)
    paths = write_exam(tmp_path / "exam", identity=ident, burned_in_text="X").files
    assert len(paths) == 4
    for p in paths:
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        assert p.name == f"{ds.SOPInstanceUID}.dcm"
        for phi in (ident.patient_id, ident.accession_number, "Ødegård", "Aarø"):
            assert phi not in str(p)
    run = subprocess.run(["dcmdump", "-q", str(paths[0])], capture_output=True, text=True,
                         check=False)
    assert run.returncode == 0, run.stderr
    assert "MG" in run.stdout


def test_full_size_is_hologic_sized() -> None:
    ds, truth = make_mammogram_with_truth(full_size=True, burned_in_text="ÅSE", bits_stored=14)
    assert (ds.Rows, ds.Columns) == (4096, 3328)
    assert len(ds.PixelData) == 4096 * 3328 * 2  # 27 MB
    (r0, _, r1, _), = truth.text_boxes
    assert 20 <= r1 - r0 <= 60
    assert ds.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
