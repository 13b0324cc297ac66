"""Plant identifying values in every place de-identifiers are known to leak them.

Each location in /work/shared/docs/deid-hard-cases.md (headers, items 1-16) gets a value, so a
test can de-identify the data set and prove every planted value gone, from the data set and from
the raw bytes of the output file, in both UTF-8 and ISO 8859-1 spellings. The values are invented
and Norwegian-shaped (Æ Ø Å), long enough that no chance byte pattern matches them.

``plant_phi`` returns the planted values that must not survive de-identification. Times of day
(TM) are planted too but not returned: the gateway keeps them (see workers/deid/dates.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

CREATOR = "ACME HOSPITAL PACS 1.0"


@dataclass(frozen=True)
class Phi:
    name: str = "Bjørnstad-Ødegård^Åse Kristine"
    other_name: str = "Sæthersen^Ærlinn"
    birth_name: str = "Håkonsdatter^Åse"
    mother_name: str = "Bjørnstad^Sølvi"
    patient_id: str = "31125847392"
    other_id: str = "HUSNR774412093"
    issuer: str = "ØSTFOLD-HF-PAS"
    accession: str = "BSN2403159944"
    requested_procedure_id: str = "RQP-7731994"
    scheduled_step_id: str = "SPS-5590213"
    birth_date: str = "19311224"
    study_date: str = "20240315"
    series_date: str = "20240316"
    menstrual_date: str = "20240219"
    calibration_date: str = "20231107"
    creation_date: str = "20240317"
    acquisition_datetime: str = "20240315093512.123456+0100"
    content_datetime: str = "20240314081122.5-0500"
    time: str = "093512.250000"
    age: str = "095Y"
    institution: str = "Sykehuset Østfold Kalnes Brystsenter"
    institution_address: str = "Kalnesveien 300, 1714 Grålum"
    department: str = "Mammografiseksjon Ø2"
    station: str = "MAMMOKALNES7"
    serial: str = "SNQX77310042"
    detector: str = "DETQX5512098"
    referring: str = "Wærnes^Torstein"
    referring_address: str = "Legesenteret Rådhusgata 12, 1530 Moss"
    phone: str = "+47 69 86 00 00"
    mobile: str = "+4791234567"
    operator: str = "Kjærstad^Liv"
    performing: str = "Åmodt^Hallgeir"
    verifying: str = "Thorsæter^Gunnhild"
    patient_address: str = "Storgata 117, 1607 Fredrikstad"
    telecom: str = "aase.odegaard@example.no"
    comment_word: str = "Fjellstuen"
    source_ae: str = "KALNES_MG_AWS"
    sending_ae: str = "KALNES_PACS01"
    receiving_ae: str = "KALNES_DEIDGW"
    impl_version: str = "KALNES_SECTRA7"
    uid_root: str = "1.2.578.1.9"


def _uid(phi: Phi, *parts: str) -> str:
    digits = "".join(ch for p in parts for ch in p if ch.isdigit())
    return UID(f"{phi.uid_root}.{digits}"[:64])


def _item(**kw: object) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def plant_phi(ds: Dataset, phi: Phi | None = None) -> list[str]:
    """Plant ``phi`` everywhere in ``ds`` (in place); return the values that must vanish."""
    p = phi or Phi()
    study_uid = _uid(p, p.study_date, p.accession)  # item 6: UIDs built from date + accession
    series_uid = _uid(p, p.series_date, p.patient_id)
    sop_uid = _uid(p, p.creation_date, p.accession, str(ds.get("InstanceNumber", "") or "7"))
    frame_uid = _uid(p, p.study_date, p.patient_id, "3")
    event_uid = _uid(p, p.acquisition_datetime[:14], "5")
    prior_uid = _uid(p, p.series_date, p.other_id)
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study_uid, series_uid, sop_uid
    ds.FrameOfReferenceUID = frame_uid
    ds.IrradiationEventUID = event_uid
    meta = getattr(ds, "file_meta", None)
    if meta is not None:  # item 5
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.SourceApplicationEntityTitle = p.source_ae
        meta.SendingApplicationEntityTitle = p.sending_ae
        meta.ReceivingApplicationEntityTitle = p.receiving_ae
        meta.ImplementationVersionName = p.impl_version

    # item 2, 13: the patient
    ds.PatientName = p.name
    ds.PatientID = p.patient_id
    ds.IssuerOfPatientID = p.issuer
    ds.PatientBirthDate = p.birth_date
    ds.PatientAge = p.age
    ds.OtherPatientIDs = p.other_id
    ds.OtherPatientNames = p.other_name
    ds.PatientBirthName = p.birth_name
    ds.PatientMotherBirthName = p.mother_name
    ds.OtherPatientIDsSequence = Sequence(
        [_item(PatientID=p.other_id, IssuerOfPatientID=p.issuer, TypeOfPatientID="TEXT")])
    ds.PatientAddress = p.patient_address
    ds.PatientTelephoneNumbers = p.mobile
    ds.PatientTelecomInformation = p.telecom
    ds.LastMenstrualDate = p.menstrual_date  # item 12 (mammography)
    ds.PatientComments = f"{p.comment_word} pasient, ring {p.mobile}"
    ds.AdditionalPatientHistory = f"Mother {p.mother_name} had breast cancer, seen {p.series_date}"

    # item 11, 12: institution, device, staff, dates
    ds.AccessionNumber = p.accession
    ds.StudyDate, ds.SeriesDate, ds.AcquisitionDate = p.study_date, p.series_date, p.study_date
    ds.ContentDate, ds.InstanceCreationDate = p.study_date, p.creation_date
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = p.time
    ds.AcquisitionDateTime = p.acquisition_datetime
    ds.DateOfLastDetectorCalibration = p.calibration_date
    ds.InstitutionName = p.institution
    ds.InstitutionAddress = p.institution_address
    ds.InstitutionalDepartmentName = p.department
    ds.StationName = p.station
    ds.DeviceSerialNumber = p.serial
    ds.DetectorID = p.detector
    ds.ReferringPhysicianName = p.referring
    ds.ReferringPhysicianAddress = p.referring_address
    ds.ReferringPhysicianTelephoneNumbers = p.phone
    ds.OperatorsName = p.operator
    ds.PerformingPhysicianName = p.performing

    # item 10: free text and descriptors (safe vocabulary must survive, the rest must not)
    ds.StudyDescription = f"Screening Mammography Bilateral {p.comment_word}"
    ds.SeriesDescription = f"L CC {p.name.split('^')[0]}"
    ds.ProtocolName = f"R MLO {p.station}"
    ds.PerformedProcedureStepDescription = f"Mammo {p.operator.split('^')[0]} {p.study_date}"
    ds.ImageComments = f"Taken 15.03.2024 by {p.operator.replace('^', ' ')}, tel {p.phone}"
    ds.StudyComments = f"Patient {p.name.replace('^', ' ')} born {p.birth_date}"
    ds.RequestedProcedureComments = f"Ref {p.referring.replace('^', ' ')}"

    # item 3: request attributes
    ds.RequestAttributesSequence = Sequence([_item(
        RequestedProcedureID=p.requested_procedure_id, ScheduledProcedureStepID=p.scheduled_step_id,
        AccessionNumber=p.accession, RequestedProcedureDescription=f"Mammo {p.comment_word}",
    )])

    # item 4: references whose UIDs must be remapped exactly like the top-level ones
    ds.ReferencedPatientSequence = Sequence([_item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.1.1", ReferencedSOPInstanceUID=prior_uid)])
    ds.ReferencedStudySequence = Sequence([_item(
        ReferencedSOPClassUID="1.2.840.10008.3.1.2.3.1", ReferencedSOPInstanceUID=study_uid)])
    ds.ReferencedImageSequence = Sequence([_item(
        ReferencedSOPClassUID=ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.2"),
        ReferencedSOPInstanceUID=sop_uid)])
    ds.SourceImageSequence = Sequence([_item(
        ReferencedSOPClassUID=ds.get("SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.2.1"),
        ReferencedSOPInstanceUID=prior_uid)])
    ds.RelatedSeriesSequence = Sequence([_item(
        StudyInstanceUID=study_uid, SeriesInstanceUID=prior_uid,
        PurposeOfReferenceCodeSequence=Sequence([]))])

    # item 1: private elements of any VR, UN raw bytes, private sequences holding standard ones
    block = ds.private_block(0x0009, CREATOR, create=True)
    block.add_new(0x01, "LO", p.name.replace("^", " "))
    block.add_new(0x02, "UN", f"ID={p.patient_id};ACC={p.accession}".encode())
    block.add_new(0x03, "SQ", Sequence([_item(
        PatientName=p.other_name, PatientID=p.other_id, StudyInstanceUID=study_uid,
        InstitutionName=p.institution)]))
    block.add_new(0x04, "DA", p.birth_date)
    tail = ds.private_block(0x7FE1, CREATOR, create=True)  # after the pixel data
    tail.add_new(0x01, "LO", p.institution)

    # item 7: overlays and curves
    rows, cols = int(ds.get("Rows", 16)), int(ds.get("Columns", 16))
    ds.add_new(0x60000010, "US", rows)
    ds.add_new(0x60000011, "US", cols)
    ds.add_new(0x60000040, "CS", "G")
    ds.add_new(0x60000050, "SS", [1, 1])
    ds.add_new(0x60000100, "US", 1)
    ds.add_new(0x60000102, "US", 0)
    ds.add_new(0x60000022, "LO", f"Overlay {p.name.split('^')[0]}")
    overlay = (p.name.encode() * (rows * cols // 8 // len(p.name.encode()) + 1))[: rows * cols // 8]
    ds.add_new(0x60003000, "OW", overlay + b"\x00" * (len(overlay) % 2))
    ds.add_new(0x60004000, "LT", f"Annotated by {p.operator} {p.study_date}")
    ds.add_new(0x50000005, "US", 1)
    ds.add_new(0x50002500, "LO", f"Curve {p.performing.split('^')[0]}")
    ds.add_new(0x50003000, "OB", p.patient_id.encode() + b"\x00")

    # item 8: icon image with the name in its pixels
    ds.IconImageSequence = Sequence([_item(
        SamplesPerPixel=1, PhotometricInterpretation="MONOCHROME2", Rows=8, Columns=8,
        BitsAllocated=8, BitsStored=8, HighBit=7, PixelRepresentation=0,
        PixelData=(p.name.encode() * 4)[:64])])

    # item 9: structured content several levels deep; acquisition context
    text_item = _item(RelationshipType="CONTAINS", ValueType="TEXT",
                      ConceptNameCodeSequence=Sequence([_code("121106", "Comment")]),
                      TextValue=f"Seen by {p.verifying.replace('^', ' ')} on {p.study_date}")
    pname_item = _item(RelationshipType="HAS OBS CONTEXT", ValueType="PNAME",
                       ConceptNameCodeSequence=Sequence([_code("121008", "Person Observer Name")]),
                       PersonName=p.verifying)
    dt_item = _item(RelationshipType="CONTAINS", ValueType="DATETIME",
                    ConceptNameCodeSequence=Sequence([_code("111526", "DateTime Started")]),
                    DateTime=p.content_datetime)
    level3 = _item(RelationshipType="CONTAINS", ValueType="CONTAINER",
                   ContinuityOfContent="SEPARATE",
                   ConceptNameCodeSequence=Sequence([_code("111028", "Image Library")]),
                   ContentSequence=Sequence([text_item, pname_item, dt_item]))
    level2 = _item(RelationshipType="CONTAINS", ValueType="CONTAINER",
                   ContinuityOfContent="SEPARATE",
                   ConceptNameCodeSequence=Sequence([_code("111029", "Image Library Group")]),
                   ContentSequence=Sequence([level3]))
    ds.ContentSequence = Sequence([level2])
    ds.VerifyingObserverSequence = Sequence([_item(
        VerifyingObserverName=p.verifying, VerificationDateTime=p.acquisition_datetime,
        VerifyingOrganization=p.institution)])
    ds.AcquisitionContextSequence = Sequence([
        _item(ValueType="PNAME",
              ConceptNameCodeSequence=Sequence([_code("121008", "Person Observer Name")]),
              PersonName=p.performing),
        _item(ValueType="TEXT",
              ConceptNameCodeSequence=Sequence([_code("121106", "Comment")]),
              TextValue=f"{p.institution} {p.department}"),
    ])

    # item 14: values before a correction
    modified = _item(PatientName=p.birth_name, PatientID=p.other_id, PatientBirthDate=p.birth_date,
                     AccessionNumber=p.accession)
    ds.OriginalAttributesSequence = Sequence([_item(
        ModifiedAttributesSequence=Sequence([modified]),
        AttributeModificationDateTime=p.acquisition_datetime, ModifyingSystem=p.station,
        SourceOfPreviousValues=p.institution, ReasonForTheAttributeModification="COERCE")])
    ds.add_new(0x04000550, "SQ", Sequence([_item(PatientName=p.other_name,
                                                 PatientID=p.patient_id)]))

    # item 15: documents, photos, signatures
    ds.EncapsulatedDocument = b"%PDF-1.4 " + p.name.encode() + b" " + p.patient_id.encode() + b"\n"
    ds.ReferencedPatientPhotoSequence = Sequence([_item(
        StudyInstanceUID=study_uid, SeriesInstanceUID=prior_uid,
        ReferencedSOPSequence=Sequence([_item(
            ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.77.1.4",
            ReferencedSOPInstanceUID=prior_uid)]))])
    ds.DigitalSignaturesSequence = Sequence([_item(
        MACIDNumber=1, DigitalSignatureUID=_uid(p, p.study_date, "99"),
        DigitalSignatureDateTime=p.acquisition_datetime, CertificateType="X509_1993_SIG",
        CertificateOfSigner=f"CN={p.performing}".encode(), Signature=p.patient_id.encode())])

    planted = [
        p.name, p.other_name, p.birth_name, p.mother_name, p.patient_id, p.other_id, p.issuer,
        p.accession, p.requested_procedure_id, p.scheduled_step_id, p.birth_date, p.study_date,
        p.series_date, p.menstrual_date, p.calibration_date, p.creation_date,
        p.acquisition_datetime[:14], p.content_datetime[:14], p.age, p.institution,
        p.institution_address, p.department, p.station, p.serial, p.detector, p.referring,
        p.referring_address, p.phone, p.mobile, p.operator, p.performing, p.verifying,
        p.patient_address, p.telecom, p.comment_word, p.source_ae, p.sending_ae, p.receiving_ae,
        p.impl_version, study_uid, series_uid, sop_uid, frame_uid, event_uid, prior_uid,
        "15.03.2024", CREATOR,
    ]
    # name parts on their own (a leak of "Ødegård" alone is still a leak)
    for pn in (p.name, p.other_name, p.birth_name, p.mother_name, p.referring, p.operator,
               p.performing, p.verifying):
        planted.extend(part for part in pn.replace("^", " ").split() if len(part) >= 4)
    return list(dict.fromkeys(planted))
