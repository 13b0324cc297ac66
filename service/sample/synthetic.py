"""Synthetic screening mammograms with realistic MG headers, made on the spot (no downloads).

Real screening exams cannot leave the hospital, yet every stage (de-identification, pixel
scrubbing, benchmarks, the demo PACS) needs images that look like what a Hologic or GE unit
writes: a 4096 x 3328 (full size) 16-bit image with 12-14 bits stored, a bright breast against the
chest wall, a near-black background, and sometimes the patient's name burned into a corner while
the header still says ``BurnedInAnnotation = NO``. Identity values are synthetic but shaped like
the real thing (Norwegian names with Æ Ø Å, 11-digit national ID numbers).

``make_mammogram`` builds one view, ``make_exam`` four views (L/R x CC/MLO) of one study and
``write_exam`` stores them under names made from UIDs only (never from names or IDs).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from service.sample.font import render_lines

MG_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
MG_FOR_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.2.1")
BREAST_TOMOSYNTHESIS = UID("1.2.840.10008.5.1.4.1.1.13.1.3")

View = Literal["CC", "MLO"]
Laterality = Literal["L", "R"]
Corner = Literal["auto", "tl", "tr", "bl", "br", "edge"]

FULL_ROWS, FULL_COLS = 4096, 3328
_SMALL_ROWS, _SMALL_COLS = 512, 416

# SNOMED CT view codes (CID 4014) as modern units write them.
_VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}
_ENCODER_PLUGIN = {
    JPEG2000Lossless: "pylibjpeg",
    JPEGLSLossless: "pyjpegls",
    RLELossless: "pylibjpeg",
}


@dataclass(frozen=True)
class ExamIdentity:
    """Who and where, for one synthetic exam. Defaults are invented, Norwegian-shaped values."""

    patient_name: str = "Ødegård^Åse Kristine"
    patient_id: str = "12057847391"
    issuer_of_patient_id: str = "NO-FNR"
    birth_date: str = "19580512"
    patient_age: str = "065Y"
    accession_number: str = "BSN24031500417"
    study_id: str = "4417"
    study_date: str = "20240315"
    study_time: str = "093512.250000"
    institution_name: str = "Brystdiagnostisk senter Tromsø"
    institution_address: str = "Hansine Hansens veg 67, 9019 Tromsø"
    department: str = "Mammografiseksjonen"
    station_name: str = "MAMMO-TRO-2"
    referring_physician: str = "Bjørnstad^Æsa"
    operator_name: str = "Lægreid^Kåre"
    device_serial_number: str = "SDM17042281"
    detector_id: str = "D-88231-Ø"
    manufacturer: str = "HOLOGIC, Inc."
    model_name: str = "Selenia Dimensions"
    charset: str = "ISO_IR 192"
    seed: int = 1
    uid_root: str | None = None

    def uid(self, *parts: object) -> UID:
        """A deterministic UID for this exam; under ``uid_root`` when one is given."""
        digest = hashlib.sha256(repr((self.seed, self.patient_id, self.accession_number,
                                      *parts)).encode()).digest()
        number = int.from_bytes(digest[:15], "big")
        if self.uid_root:
            return UID(f"{self.uid_root.rstrip('.')}.{number}"[:64])
        return UID(f"2.25.{number}")


@dataclass
class Truth:
    """What the generator put where, so tests can check the scrubber against it."""

    breast_mask: np.ndarray = field(repr=False)
    text_boxes: list[tuple[int, int, int, int]] = field(default_factory=list)
    text_mask: np.ndarray | None = field(default=None, repr=False)
    pixels: np.ndarray | None = field(default=None, repr=False)


def _smooth_noise(rng: np.random.Generator, rows: int, cols: int, cell: int) -> np.ndarray:
    """Band-limited noise: a coarse random grid interpolated bilinearly (two small matmuls)."""
    gr, gc = rows // cell + 2, cols // cell + 2
    grid = rng.normal(0.0, 1.0, (gr, gc)).astype(np.float32)

    def interp_matrix(n: int, g: int) -> np.ndarray:
        pos = np.linspace(0, g - 1.001, n, dtype=np.float32)
        lo = np.floor(pos).astype(int)
        w = pos - lo
        m = np.zeros((n, g), dtype=np.float32)
        m[np.arange(n), lo] = 1 - w
        m[np.arange(n), lo + 1] = w
        return m

    return interp_matrix(rows, gr) @ grid @ interp_matrix(cols, gc).T


def _breast(
    rng: np.random.Generator, rows: int, cols: int, view: str, laterality: str, max_value: int
) -> tuple[np.ndarray, np.ndarray]:
    """Tissue intensities (float, 0 outside) and the tissue mask, chest wall on the left."""
    y = (np.arange(rows, dtype=np.float32) + 0.5) / rows
    x = (np.arange(cols, dtype=np.float32) + 0.5) / cols
    if view == "CC":
        cy, ry, rx = 0.5, 0.40, 0.62
    else:
        cy, ry, rx = 0.45, 0.47, 0.66
    r2 = ((y[:, None] - cy) / ry) ** 2 + (x[None, :] / rx) ** 2
    mask = r2 < 1.0
    # Thicker in the middle, thinning toward the skin line: intensity falls off near the edge.
    profile = np.clip(1.0 - r2, 0, 1) ** 0.35
    texture = (
        0.55 * _smooth_noise(rng, rows, cols, max(8, rows // 12))
        + 0.30 * _smooth_noise(rng, rows, cols, max(4, rows // 48))
    )
    tissue = 0.35 + 0.32 * profile + 0.08 * texture
    if view == "MLO":
        # Pectoral muscle: a brighter triangle in the upper chest-wall corner.
        pect = (x[None, :] / 0.28 + y[:, None] / 0.55) < 1.0
        tissue = np.where(pect & mask, tissue + 0.12, tissue)
    fine = rng.normal(0.0, 0.012, (rows, cols)).astype(np.float32)
    value = np.where(mask, np.clip(tissue + fine, 0.05, 0.95) * max_value, 0.0)
    return value.astype(np.float32), mask


def _text_origin(
    corner: Corner | tuple[int, int], shape: tuple[int, int], text_shape: tuple[int, int],
    chest_wall_right: bool,
) -> tuple[int, int]:
    rows, cols = shape
    th, tw = text_shape
    margin_r, margin_c = max(4, rows // 50), max(4, cols // 50)
    if isinstance(corner, tuple):
        return corner
    if corner == "auto":
        # Units burn identity text into the upper corner away from the chest wall.
        corner = "tl" if chest_wall_right else "tr"
    if corner == "edge":
        c0 = margin_c if chest_wall_right else cols - margin_c - tw
        return (rows - th) // 2, c0
    r0 = margin_r if corner[0] == "t" else rows - margin_r - th
    c0 = margin_c if corner[1] == "l" else cols - margin_c - tw
    return r0, c0


def render_image(
    *,
    view: View = "CC",
    laterality: Laterality = "L",
    rows: int = _SMALL_ROWS,
    cols: int = _SMALL_COLS,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    burned_in_text: str | None = None,
    text_height: int | None = None,
    text_corner: Corner | tuple[int, int] = "auto",
    text_value: int | None = None,
    seed: int = 1,
) -> tuple[np.ndarray, Truth]:
    """The pixel array (uint16) and where the breast and the text are."""
    rng = np.random.default_rng(seed)
    max_value = (1 << bits_stored) - 1
    value, mask = _breast(rng, rows, cols, view, laterality, max_value)
    # Detector background: near zero, a few counts of noise.
    background = rng.integers(0, max(2, max_value // 800), (rows, cols), dtype=np.uint16)
    img = np.where(mask, value.astype(np.uint16), background)
    chest_wall_right = laterality == "R"
    if chest_wall_right:
        img = img[:, ::-1]
        mask = mask[:, ::-1]
    truth = Truth(breast_mask=np.ascontiguousarray(mask))
    if burned_in_text:
        height = text_height or max(20, min(60, rows // 80))
        ink = render_lines(burned_in_text.split("\n"), height)
        r0, c0 = _text_origin(text_corner, (rows, cols), ink.shape, chest_wall_right)
        r1, c1 = min(rows, r0 + ink.shape[0]), min(cols, c0 + ink.shape[1])
        ink = ink[: r1 - r0, : c1 - c0]
        white = max_value if text_value is None else text_value
        img = np.ascontiguousarray(img)
        img[r0:r1, c0:c1][ink] = white
        tm = np.zeros((rows, cols), dtype=bool)
        tm[r0:r1, c0:c1] = ink
        truth.text_mask = tm
        truth.text_boxes.append((r0, c0, r1, c1))
    img = np.ascontiguousarray(img, dtype=np.uint16)
    if photometric == "MONOCHROME1":
        img = (max_value - img).astype(np.uint16)
    truth.pixels = img
    return img, truth


def _header(
    identity: ExamIdentity, *, view: str, laterality: str, rows: int, cols: int, frames: int,
    bits_stored: int, photometric: str, instance: int, series_uid: UID, for_processing: bool,
) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = identity.charset
    if frames > 1:
        sop_class = BREAST_TOMOSYNTHESIS
        ds.ImageType = ["ORIGINAL", "PRIMARY", "TOMOSYNTHESIS", "NONE"]
    else:
        sop_class = MG_FOR_PROCESSING if for_processing else MG_FOR_PRESENTATION
        ds.ImageType = ["ORIGINAL", "PRIMARY", ""]
    sop_uid = identity.uid("sop", view, laterality, instance, frames)
    date, time = identity.study_date, identity.study_time
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop_uid
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
    ds.AcquisitionDateTime = f"{date}{time}+0100"
    ds.AccessionNumber = identity.accession_number
    ds.Modality = "MG"
    ds.PresentationIntentType = "FOR PROCESSING" if for_processing else "FOR PRESENTATION"
    ds.Manufacturer = identity.manufacturer
    ds.InstitutionName = identity.institution_name
    ds.InstitutionAddress = identity.institution_address
    ds.ReferringPhysicianName = identity.referring_physician
    ds.StationName = identity.station_name
    ds.StudyDescription = "Mammografi screening bilateral"
    ds.SeriesDescription = f"{laterality} {view}"
    ds.InstitutionalDepartmentName = identity.department
    ds.OperatorsName = identity.operator_name
    ds.ManufacturerModelName = identity.model_name
    ds.PatientName = identity.patient_name
    ds.PatientID = identity.patient_id
    ds.IssuerOfPatientID = identity.issuer_of_patient_id
    ds.PatientBirthDate = identity.birth_date
    ds.PatientSex = "F"
    ds.PatientAge = identity.patient_age
    ds.BodyPartExamined = "BREAST"
    ds.KVP = "29" if view == "CC" else "31"
    ds.DeviceSerialNumber = identity.device_serial_number
    ds.SoftwareVersions = ["1.11.2.7", "AWS:MAMMODROC_1_11_2_7"]
    ds.DistanceSourceToDetector = "700"
    ds.DistanceSourceToPatient = "655"
    ds.ExposureTime = "1196" if view == "CC" else "1342"
    ds.XRayTubeCurrent = "150"
    ds.Exposure = "179" if view == "CC" else "201"
    ds.ExposureInuAs = "179400" if view == "CC" else "201300"
    ds.FilterType = "FLAT"
    ds.ImagerPixelSpacing = ["0.07", "0.07"]
    ds.PixelSpacing = ["0.065", "0.065"]
    ds.EstimatedRadiographicMagnificationFactor = "1.07"
    ds.Grid = ["IN", "FOCUSED"]
    ds.FocalSpots = "0.3"
    ds.AnodeTargetMaterial = "TUNGSTEN"
    ds.BodyPartThickness = "52" if view == "CC" else "58"
    ds.CompressionForce = "118" if view == "CC" else "134"
    ds.PaddleDescription = "24X29 STANDARD"
    ds.DetectorTemperature = "30.1"
    ds.DetectorType = "DIRECT"
    ds.DetectorConfiguration = "AREA"
    ds.DetectorID = identity.detector_id
    ds.DateOfLastDetectorCalibration = "20240301"
    ds.DetectorBinning = ["1", "1"]
    ds.DetectorElementPhysicalSize = ["0.07", "0.07"]
    ds.DetectorElementSpacing = ["0.07", "0.07"]
    ds.DetectorActiveShape = "RECTANGLE"
    ds.DetectorActiveDimensions = [f"{rows * 0.07:.1f}", f"{cols * 0.07:.1f}"]
    ds.FieldOfViewShape = "RECTANGLE"
    ds.FieldOfViewDimensions = [f"{rows * 0.07:.0f}", f"{cols * 0.07:.0f}"]
    ds.ExposureControlMode = "AUTOMATIC"
    ds.ExposureControlModeDescription = "AEC"
    ds.ExposureStatus = "NORMAL"
    ds.FilterMaterial = "RHODIUM" if view == "CC" else "SILVER"
    ds.FilterThicknessMinimum = "0.05"
    ds.FilterThicknessMaximum = "0.05"
    ds.ViewPosition = view
    ds.PositionerType = "MAMMOGRAPHIC"
    ds.PositionerPrimaryAngle = "0" if view == "CC" else ("45" if laterality == "R" else "-45")
    ds.RelativeXRayExposure = "1412"
    ds.OrganDose = "1.21" if view == "CC" else "1.38"
    ds.EntranceDoseInmGy = "6.02" if view == "CC" else "6.88"
    ds.BreastImplantPresent = "NO"
    ds.PartialView = "NO"
    ds.StudyInstanceUID = identity.uid("study")
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = identity.study_id
    ds.SeriesNumber = 71300 if not for_processing else 71200
    ds.AcquisitionNumber = 1
    ds.InstanceNumber = instance
    if laterality == "R":
        ds.PatientOrientation = ["P", "L"] if view == "CC" else ["P", "FL"]
    else:
        ds.PatientOrientation = ["A", "R"] if view == "CC" else ["A", "FR"]
    ds.ImageLaterality = laterality
    ds.FrameOfReferenceUID = identity.uid("for", laterality)
    ds.PositionReferenceIndicator = ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    if frames > 1:
        ds.NumberOfFrames = frames
    ds.Rows, ds.Columns = rows, cols
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelRepresentation = 0
    ds.BurnedInAnnotation = "NO"  # what real units say, text or not: never trust it
    ds.RecognizableVisualFeatures = "NO"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    max_value = (1 << bits_stored) - 1
    ds.WindowCenter = [str(max_value * 55 // 100), str(max_value * 55 // 100)]
    ds.WindowWidth = [str(max_value * 60 // 100), str(max_value * 80 // 100)]
    ds.WindowCenterWidthExplanation = ["NORMAL", "HARDER"]
    ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = "0", "1", "US"
    ds.LossyImageCompression = "00"
    ds.QualityControlImage = "NO"
    ds.PresentationLUTShape = "INVERSE" if photometric == "MONOCHROME1" else "IDENTITY"
    ds.AcquisitionDeviceProcessingDescription = "LORAD FFDM" if view == "CC" else "LORAD FFDM MLO"
    anatomic = Dataset()
    anatomic.CodeValue, anatomic.CodingSchemeDesignator = "76752008", "SCT"
    anatomic.CodeMeaning = "Breast"
    ds.AnatomicRegionSequence = Sequence([anatomic])
    view_code = Dataset()
    view_code.CodeValue, view_code.CodeMeaning = _VIEW_CODES[view]
    view_code.CodingSchemeDesignator = "SCT"
    view_code.ViewModifierCodeSequence = Sequence()
    ds.ViewCodeSequence = Sequence([view_code])
    if frames > 1:
        measures = Dataset()
        measures.PixelSpacing = ["0.1", "0.1"]
        measures.SliceThickness = "1"
        shared = Dataset()
        shared.PixelMeasuresSequence = Sequence([measures])
        ds.SharedFunctionalGroupsSequence = Sequence([shared])
    return ds


def make_mammogram_with_truth(
    *,
    view: View = "CC",
    laterality: Laterality = "L",
    rows: int | None = None,
    cols: int | None = None,
    full_size: bool = False,
    bits_stored: int = 12,
    photometric: str = "MONOCHROME2",
    burned_in_text: str | None = None,
    text_height: int | None = None,
    text_corner: Corner | tuple[int, int] = "auto",
    text_value: int | None = None,
    frames: int = 1,
    transfer_syntax: str = ExplicitVRLittleEndian,
    identity: ExamIdentity | None = None,
    instance: int = 1,
    series_uid: UID | None = None,
    for_processing: bool = False,
) -> tuple[FileDataset, Truth]:
    """One view plus the ground truth (breast mask, text boxes, frame-0 pixels)."""
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError("photometric must be MONOCHROME1 or MONOCHROME2")
    if not 8 < bits_stored <= 16:
        raise ValueError("bits_stored must be 9..16 (16 bits allocated)")
    identity = identity or ExamIdentity()
    if full_size:
        rows, cols = FULL_ROWS, FULL_COLS
    rows, cols = rows or _SMALL_ROWS, cols or _SMALL_COLS
    seed = identity.seed * 1009 + instance * 31 + (view == "MLO") * 7 + (laterality == "R")
    planes = []
    truth: Truth | None = None
    for f in range(frames):
        img, t = render_image(
            view=view, laterality=laterality, rows=rows, cols=cols, bits_stored=bits_stored,
            photometric=photometric, burned_in_text=burned_in_text, text_height=text_height,
            text_corner=text_corner, text_value=text_value, seed=seed + f,
        )
        truth = truth or t
        planes.append(img)
    assert truth is not None
    series_uid = series_uid or identity.uid("series", view, laterality, frames)
    ds = _header(
        identity, view=view, laterality=laterality, rows=rows, cols=cols, frames=frames,
        bits_stored=bits_stored, photometric=photometric, instance=instance,
        series_uid=series_uid, for_processing=for_processing,
    )
    arr = planes[0] if frames == 1 else np.stack(planes)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = UID("1.2.840.113681.1.1")
    meta.ImplementationVersionName = "HOLOGIC_AWS_1"
    meta.SourceApplicationEntityTitle = "MAMMO_TRO_AWS"
    fds = FileDataset("", ds, file_meta=meta, preamble=b"\0" * 128)
    fds.PixelData = arr.tobytes()
    fds["PixelData"].VR = "OW"
    ts = UID(transfer_syntax)
    if ts != ExplicitVRLittleEndian:
        if ts not in _ENCODER_PLUGIN:
            raise ValueError("unsupported transfer syntax for the synthetic generator")
        fds.compress(ts, arr, encoding_plugin=_ENCODER_PLUGIN[ts], generate_instance_uid=False)
        fds.LossyImageCompression = "00"
    return fds, truth


def make_mammogram(**kwargs: object) -> FileDataset:
    """One synthetic view; see ``make_mammogram_with_truth`` for the parameters."""
    ds, _ = make_mammogram_with_truth(**kwargs)  # type: ignore[arg-type]
    return ds


def make_exam(
    *,
    identity: ExamIdentity | None = None,
    burned_in_text: str | None = None,
    **kwargs: object,
) -> list[FileDataset]:
    """Four views (R CC, L CC, R MLO, L MLO) of one screening exam: one study, one series."""
    identity = identity or ExamIdentity()
    series_uid = identity.uid("series", "exam")
    views: list[FileDataset] = []
    for n, (view, lat) in enumerate([("CC", "R"), ("CC", "L"), ("MLO", "R"), ("MLO", "L")], 1):
        ds, _ = make_mammogram_with_truth(
            view=view, laterality=lat, identity=identity, instance=n,  # type: ignore[arg-type]
            series_uid=series_uid, burned_in_text=burned_in_text, **kwargs,  # type: ignore[arg-type]
        )
        views.append(ds)
    return views


def write_exam(folder: Path, **kwargs: object) -> list[Path]:
    """Write one exam; files are named ``<SOPInstanceUID>.dcm`` (never from names or IDs)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for ds in make_exam(**kwargs):  # type: ignore[arg-type]
        path = folder / f"{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def default_identity(n: int) -> ExamIdentity:
    """The n-th of a family of distinct synthetic women (for demos and benchmarks)."""
    first = ["Åse", "Kari", "Ingrid", "Sølvi", "Bjørg", "Ragnhild", "Æsa", "Tove"][n % 8]
    last = ["Ødegård", "Nordmann", "Håland", "Sæther", "Bjørnstad", "Løvås", "Aarø"][n % 7]
    base = ExamIdentity()
    return replace(
        base,
        patient_name=f"{last}^{first}",
        patient_id=f"{(12057847391 + 7919 * n) % 10**11:011d}",
        accession_number=f"BSN2403{15 + n % 10:02d}{417 + n:05d}",
        seed=n + 1,
    )
