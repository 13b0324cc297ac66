"""Attribute Types (1, 2, 3) in the IODs this gateway meets, to resolve PS3.15 combined actions.

PS3.15 writes X/Z, X/D, X/Z/D, Z/D and X/Z/U* where the right action depends on whether the
attribute is Type 1 (must have a value), Type 2 (must be present, may be empty) or Type 3
(optional) in the object's IOD. Only top-level attributes of a known IOD get a type; anything else
(an unknown SOP class, an attribute inside a sequence) resolves to the most conformant
alternative that still removes the information (see ``resolve``).

The table lists the Type 1 and Type 2 attributes of the modules of the mammography, digital X-ray,
breast tomosynthesis, breast projection, secondary capture and structured report IODs
(PS3.3 Part A; conditional types 1C/2C are counted as 1/2 because the gateway cannot evaluate the
condition and the conformant choice is the safer one). Anything not listed in a known IOD is Type 3.
"""

from __future__ import annotations

from pydicom.datadict import tag_for_keyword

from workers.deid.vocabulary import Action

_PATIENT_2 = ["PatientName", "PatientID", "PatientBirthDate", "PatientSex"]
_STUDY_1 = ["StudyInstanceUID"]
_STUDY_2 = ["StudyDate", "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber"]
_SERIES_1 = ["Modality", "SeriesInstanceUID"]
_SERIES_2 = ["SeriesNumber", "Laterality"]
_EQUIP_2 = ["Manufacturer"]
_ENH_EQUIP_1 = ["Manufacturer", "ManufacturerModelName", "DeviceSerialNumber", "SoftwareVersions"]
_IMAGE_2 = ["InstanceNumber", "PatientOrientation", "ContentDate", "ContentTime"]
_PIXEL_1 = [
    "SamplesPerPixel", "PhotometricInterpretation", "Rows", "Columns", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "PixelData",
]  # fmt: skip
_SOP_1 = ["SOPClassUID", "SOPInstanceUID"]
_DX_1 = [
    "ImageType", "PresentationIntentType", "PixelIntensityRelationship",
    "PixelIntensityRelationshipSign", "RescaleIntercept", "RescaleSlope", "RescaleType",
    "PresentationLUTShape", "LossyImageCompression", "BurnedInAnnotation", "ImageLaterality",
]  # fmt: skip
_DX_2 = ["ViewPosition", "AnatomicRegionSequence", "DetectorType", "ImagerPixelSpacing",
         "PositionerType", "ViewCodeSequence", "ReferencedPerformedProcedureStepSequence"]
_MG_1 = ["ImageLaterality", "ViewCodeSequence", "AnatomicRegionSequence", "BreastImplantPresent"]
_MG_2 = ["PositionerPrimaryAngle", "OrganExposed", "PartialView"]
_ENH_IMG_1 = [
    "ImageType", "InstanceNumber", "ContentDate", "ContentTime", "AcquisitionDateTime",
    "BurnedInAnnotation", "LossyImageCompression", "PresentationLUTShape", "NumberOfFrames",
    "FrameOfReferenceUID", "DimensionOrganizationSequence", "SharedFunctionalGroupsSequence",
    "PerFrameFunctionalGroupsSequence", "ImageLaterality",
]  # fmt: skip
_SC_1 = ["ConversionType"]
_SR_1 = ["InstanceNumber", "CompletionFlag", "VerificationFlag", "ContentDate", "ContentTime",
         "ValueType", "SeriesNumber"]
_SR_2 = ["ReferencedPerformedProcedureStepSequence", "PerformedProcedureCodeSequence"]

_IODS: dict[str, tuple[list[str], list[str]]] = {
    "mammography": (
        _STUDY_1 + _SERIES_1 + _PIXEL_1 + _SOP_1 + _DX_1 + _MG_1,
        _PATIENT_2 + _STUDY_2 + _SERIES_2 + _EQUIP_2 + _IMAGE_2 + _DX_2 + _MG_2,
    ),
    "dx": (
        _STUDY_1 + _SERIES_1 + _PIXEL_1 + _SOP_1 + _DX_1,
        _PATIENT_2 + _STUDY_2 + _SERIES_2 + _EQUIP_2 + _IMAGE_2 + _DX_2,
    ),
    "breast-tomosynthesis": (
        _STUDY_1 + _SERIES_1 + _PIXEL_1 + _SOP_1 + _ENH_EQUIP_1 + _ENH_IMG_1 + ["PositionerType"],
        _PATIENT_2 + _STUDY_2 + _SERIES_2 + ["ReferencedPerformedProcedureStepSequence"],
    ),
    "breast-projection": (
        _STUDY_1 + _SERIES_1 + _PIXEL_1 + _SOP_1 + _ENH_EQUIP_1 + _ENH_IMG_1 + ["PositionerType"],
        _PATIENT_2 + _STUDY_2 + _SERIES_2 + ["ReferencedPerformedProcedureStepSequence"],
    ),
    "secondary-capture": (
        _STUDY_1 + _SERIES_1 + _PIXEL_1 + _SOP_1 + _SC_1,
        _PATIENT_2 + _STUDY_2 + _SERIES_2 + _IMAGE_2,
    ),
    "structured-report": (
        _STUDY_1 + _SERIES_1 + _SOP_1 + _SR_1,
        _PATIENT_2 + _STUDY_2 + _EQUIP_2 + _SR_2,
    ),
}

SOP_CLASS_IOD: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.2": "mammography",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "mammography",
    "1.2.840.10008.5.1.4.1.1.1.1": "dx",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "dx",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "breast-tomosynthesis",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "breast-projection",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "breast-projection",
    "1.2.840.10008.5.1.4.1.1.7": "secondary-capture",
    "1.2.840.10008.5.1.4.1.1.7.1": "secondary-capture",
    "1.2.840.10008.5.1.4.1.1.7.2": "secondary-capture",
    "1.2.840.10008.5.1.4.1.1.7.3": "secondary-capture",
    "1.2.840.10008.5.1.4.1.1.7.4": "secondary-capture",
    "1.2.840.10008.5.1.4.1.1.88.11": "structured-report",
    "1.2.840.10008.5.1.4.1.1.88.22": "structured-report",
    "1.2.840.10008.5.1.4.1.1.88.33": "structured-report",
    "1.2.840.10008.5.1.4.1.1.88.34": "structured-report",
    "1.2.840.10008.5.1.4.1.1.88.50": "structured-report",
    "1.2.840.10008.5.1.4.1.1.88.67": "structured-report",
    "1.2.840.10008.5.1.4.1.1.88.71": "structured-report",
}


def _compile() -> dict[str, dict[int, int]]:
    out: dict[str, dict[int, int]] = {}
    for iod, (t1, t2) in _IODS.items():
        table: dict[int, int] = {}
        for kw in t2:
            table[int(tag_for_keyword(kw))] = 2  # type: ignore[arg-type]
        for kw in t1:
            table[int(tag_for_keyword(kw))] = 1  # type: ignore[arg-type]
        out[iod] = table
    return out


_TYPES = _compile()


def attribute_type(sop_class_uid: str | None, tag: int) -> int | None:
    """1, 2 or 3 for a top-level attribute of a known IOD; None when the IOD is unknown."""
    iod = SOP_CLASS_IOD.get(sop_class_uid or "")
    if iod is None:
        return None
    return _TYPES[iod].get(tag, 3)


# (Type 1, Type 2, Type 3, unknown) -> concrete action. Unknown takes the most conformant
# alternative that still removes the information: X/Z -> Z, X/D -> D, X/Z/D -> D, Z/D -> D,
# X/Z/U* -> U (the sequence stays and every UID inside it is remapped).
_COMBINED: dict[Action, tuple[Action, Action, Action, Action]] = {
    Action.X_Z: (Action.EMPTY, Action.EMPTY, Action.REMOVE, Action.EMPTY),
    Action.X_D: (Action.DUMMY, Action.DUMMY, Action.REMOVE, Action.DUMMY),
    Action.X_Z_D: (Action.DUMMY, Action.EMPTY, Action.REMOVE, Action.DUMMY),
    Action.Z_D: (Action.DUMMY, Action.EMPTY, Action.EMPTY, Action.DUMMY),
    Action.X_Z_U: (Action.UID, Action.EMPTY, Action.REMOVE, Action.UID),
}


def resolve(action: Action, attr_type: int | None) -> Action:
    """A concrete action for a combined one, given the attribute's Type (None = unknown)."""
    if not action.combined:
        return action
    choices = _COMBINED[action]
    index = {1: 0, 2: 1, 3: 2}.get(attr_type or 0, 3)
    return choices[index]
