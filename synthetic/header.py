"""The header a Hologic-like unit writes for one mammogram (identity, acquisition, detector,
view codes): realistic MG attributes for de-identification and the pixel scrubber to face."""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from synthetic.spec import ViewSpec

MG_FOR_PRESENTATION = UID("1.2.840.10008.5.1.4.1.1.1.2")
MG_FOR_PROCESSING = UID("1.2.840.10008.5.1.4.1.1.1.2.1")
BREAST_TOMOSYNTHESIS = UID("1.2.840.10008.5.1.4.1.1.13.1.3")

# SNOMED CT view codes (CID 4014) as modern units write them.
_VIEW_CODES = {
    "CC": ("399162004", "cranio-caudal"),
    "MLO": ("399368009", "medio-lateral oblique"),
}


def mg_header(spec: ViewSpec, series_uid: UID) -> Dataset:
    """The dataset of one view without its pixel data (file meta and pixels are added by
    ``synthetic.mammogram``)."""
    identity, view, laterality, frames = spec.identity, spec.view, spec.laterality, spec.frames
    rows, cols = spec.shape
    bits_stored, photometric, for_processing = spec.bits_stored, spec.photometric, \
        spec.for_processing
    instance = spec.instance
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
