"""What the edge accepts: every storage SOP class a sender proposes (standard, private or unknown,
as ``storescp --promiscuous``), and the transfer syntaxes kept exactly as they arrive (the
listener never decompresses; pixel work happens in the workers).

Everything a PACS holds in a study is accepted so that the policy, not the network layer,
decides to refuse it (with a recorded reason, in quarantine) rather than the PACS seeing a
failed move. ``MAMMOGRAPHY`` and ``OTHER_STORAGE`` are the classes a screening PACS commonly
sends (C-GET proposes those: it can name at most 128 contexts).
"""

from __future__ import annotations

from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

MAMMOGRAPHY: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1.2": "Digital Mammography X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.2.1": "Digital Mammography X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.13.1.3": "Breast Tomosynthesis Image Storage",
    "1.2.840.10008.5.1.4.1.1.13.1.4": "Breast Projection X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.13.1.5": "Breast Projection X-Ray Image Storage - For Processing",
}

#: The Modality (0008,0060) a series of these classes carries: how a policy that accepts a list
#: of classes becomes a SERIES-level filter (every breast imaging class is "MG").
MODALITY_OF: dict[str, str] = dict.fromkeys(MAMMOGRAPHY, "MG")

OTHER_STORAGE: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.22": "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.34": "Comprehensive 3D SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.50": "Mammography CAD SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
    "1.2.840.10008.5.1.4.1.1.88.67": "X-Ray Radiation Dose SR Storage",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
}

STORAGE: dict[str, str] = {**MAMMOGRAPHY, **OTHER_STORAGE}

#: Classes whose instances must carry Pixel Data (checked cheaply on receive).
IMAGE_CLASSES: frozenset[str] = frozenset(
    uid for uid in STORAGE if not uid.startswith(("1.2.840.10008.5.1.4.1.1.88.",
                                                  "1.2.840.10008.5.1.4.1.1.11.",
                                                  "1.2.840.10008.5.1.4.1.1.104."))
)

#: Accepted as-is, in preference order (uncompressed first: what a PACS usually stores).
TRANSFER_SYNTAXES: list[str] = [
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEG2000,
    JPEGLSLossless,
    JPEGLSNearLossless,
    JPEGLosslessSV1,
    JPEGLossless,
    RLELossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    DeflatedExplicitVRLittleEndian,
]

VERIFICATION = "1.2.840.10008.1.1"
STORAGE_SERVICE = "1.2.840.10008.4.2"  # the Storage Service Class UID (PS3.4 B)


def _standard_storage() -> frozenset[str]:
    from pynetdicom import AllStoragePresentationContexts

    return frozenset(str(cx.abstract_syntax) for cx in AllStoragePresentationContexts)


#: Every standard storage SOP class pynetdicom knows (its storage service class runs them).
STANDARD_STORAGE: frozenset[str] = _standard_storage() | frozenset(STORAGE)


def storage_like(uid: str) -> bool:
    """A proposed abstract syntax the listener treats as storage, as pynetdicom's unrestricted
    storage does: a standard storage class, a private UID, or a public one it does not know
    (a class newer than the library). Known non-storage services (Q/R, print) are not."""
    from pynetdicom import sop_class

    u = UID(uid)
    return (uid in STANDARD_STORAGE or u.is_private
            or not hasattr(sop_class, u.keyword or "_no_keyword_"))


def readable_syntax(ts: str) -> bool:
    """A transfer syntax whose data set encoding the header check reads: Explicit VR Little
    Endian with native or encapsulated pixel data (every JPEG, JPEG 2000, HTJ2K, JPEG XL, MPEG
    and RLE syntax). Big endian and private syntaxes are not offered back."""
    u = UID(ts)
    try:
        return bool(u.is_transfer_syntax and u.is_little_endian and not u.is_implicit_VR
                    and not u.is_deflated)
    except ValueError:  # not a transfer syntax pydicom knows
        return False
