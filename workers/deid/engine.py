"""The de-identification engine: one instance in, a de-identified instance (or a refusal) out.

Fast path: the header is parsed without the pixel data (source.py), the policy is applied to the
header at every depth (actions.py), the pixel stage looks at a zero-copy view of the pixel value
(pixels.py), and ``write`` (writer.py) emits preamble + new file meta + header + the original
pixel element bytes copied kernel-side from the source file when the pixels are unchanged. So
the cost over a plain copy is the header work only, whatever the image size.

``write`` needs the source file until it returns (the pipeline deletes the identified copy after
the write and the audit commit, which is that order anyway).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import UID

from service.audit.types import Mapping, MappingKind
from service.core import logs
from service.core.errors import (
    PixelRefused,
    PolicyRefused,
    Rejected,
    UnsupportedSopClass,
    transient,
)
from service.core.keys import SiteKeys
from service.dicom.elements import tag_text
from workers.deid import pixels
from workers.deid.actions import Context, ExplainRow, walk
from workers.deid.outcome import DeidOutcome, PixelDecision
from workers.deid.policy import Policy
from workers.deid.pseudonym import Pseudonymizer
from workers.deid.source import Source, map_pixels, read_source
from workers.deid.text import TextCleaner, phi_tokens
from workers.deid.verify import find_survivor, identity_needles, person_name_tokens
from workers.deid.vocabulary import CID7050, Option
from workers.deid.writer import write_outcome

STORAGE_ROOT = "1.2.840.10008.5.1.4."


def _protect_logs() -> None:
    """pydicom quotes element values in its warnings: the PHI filters of ``service.core.logs``
    go on the handlers that write them (the process's start installs them too; this covers a
    process that only imports the engine)."""
    logs.protect_all()
    # the same messages also go out as warnings (stderr); the logged copy suffices
    warnings.filterwarnings("ignore", message=r"(?s).*(Invalid value|is not valid for elements)",
                            category=UserWarning)


_protect_logs()


@dataclass
class _Prepared:
    src: Source
    ctx: Context
    original: dict[str, str]
    needles: frozenset[str]


class Deidentifier:
    """Apply one policy with one set of site keys; safe to reuse for many instances."""

    def __init__(self, policy: Policy, keys: SiteKeys, *, project: str = "default") -> None:
        self.policy = policy
        self.keys = keys
        self.project = project
        ident = policy.identity
        self.pseudo = Pseudonymizer(keys, project, prefix=ident.patient_id_prefix,
                                    chars=ident.patient_id_chars,
                                    name_prefix=ident.patient_name_prefix)
        self.cleaner = TextCleaner(policy.text.vocabulary)
        self.rules = policy.matcher

    def __repr__(self) -> str:
        return f"Deidentifier(policy={self.policy.name!r}, project={self.project!r})"

    # ------------------------------------------------------------------ public API

    def deidentify(self, src: Path) -> DeidOutcome:
        prep = self._prepare(Path(src))
        ds, ctx = prep.src.dataset, prep.ctx
        ctx.rows = []  # names and actions only, for the auditors' per-instance record
        try:
            walk(ds, ctx)
        except Rejected:
            raise
        except Exception as exc:  # fail closed: never half-cleaned output
            if transient(exc):  # the machine's fault, not the input's: the base task retries
                raise
            raise PolicyRefused(f"policy could not be applied ({type(exc).__name__})",
                                code="engine-error") from None
        survivor = find_survivor(ds, prep.needles, ctx.generated)
        if survivor is not None:
            raise PolicyRefused(f"an identifying value of the patient survived in {survivor}",
                                code="identity-survived")
        self._mark(ds)
        for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            if not str(ds.get(kw, "") or ""):  # cannot be filed or linked: refuse, never guess
                raise PolicyRefused(f"instance has no {kw} after de-identification",
                                    code="missing-uid")
        pixel = self._pixels(prep.src, ds)
        ds.file_meta = self._file_meta(ds, prep.src, pixel)
        patient = ctx.patient_pseudonym
        mappings = [Mapping("patient", prep.original["patient"], patient)]
        for kind, kw in _UID_MAPPINGS:
            if prep.original.get(kind):
                mappings.append(Mapping(kind, prep.original[kind], str(ds.get(kw, ""))))
        acc_new = str(ds.get("AccessionNumber", "") or "")
        if prep.original.get("accession") and acc_new:
            mappings.append(Mapping("accession", prep.original["accession"], acc_new))
        outcome = DeidOutcome(
            dataset=ds,
            sop_class_uid=str(ds.get("SOPClassUID", "")),
            sop_instance_uid=str(ds.get("SOPInstanceUID", "")),
            study_instance_uid=str(ds.get("StudyInstanceUID", "")),
            series_instance_uid=str(ds.get("SeriesInstanceUID", "")),
            patient_pseudonym=patient,
            mappings=mappings,
            pixel=pixel,
            policy_name=self.policy.name,
            policy_version=self.policy.version,
            action_counts=dict(ctx.counts),
            explain=ctx.rows,
            source=prep.src,
        )
        return outcome

    def explain(self, src: Path) -> list[ExplainRow]:
        """Per element path: the rule that matched and the action it would take. Writes nothing."""
        prep = self._prepare(Path(src))
        rows: list[ExplainRow] = []
        for elem in prep.src.dataset.file_meta:
            rows.append(ExplainRow(elem.keyword or str(elem.tag), tag_text(int(elem.tag)),
                                   elem.keyword, str(elem.VR), "file meta", "rewrite",
                                   "replaced" if elem.keyword in _META_KEPT else "remove",
                                   "new file meta information"))
        prep.ctx.rows = rows
        walk(prep.src.dataset, prep.ctx)
        if prep.src.pixel is not None:
            stage = "pixel stage" if self.policy.pixels_enabled else "copied unchanged"
            rows.append(ExplainRow("PixelData", tag_text(prep.src.pixel.tag), "PixelData",
                                   prep.src.pixel.vr, "pixels", stage, stage,
                                   Option.CLEAN_PIXEL_DATA.value if self.policy.pixels_enabled
                                   else "clean-pixel-data off"))
        return rows

    def write(self, outcome: DeidOutcome, dest: Path) -> None:
        """Durable write of ``outcome`` to ``dest`` (writer.py); the source must still exist."""
        write_outcome(outcome, dest)

    # ------------------------------------------------------------------ stages

    def _prepare(self, path: Path) -> _Prepared:
        src = read_source(path)
        ds = src.dataset
        sop_class = str(ds.get("SOPClassUID", "") or "")
        self._check_sop_class(sop_class)
        tokens = person_name_tokens(ds)
        pid = str(ds.get("PatientID", "") or "").strip()
        if not pid:
            # No PatientID: key the pseudonym on name + birth date, else on the study, so the
            # instance still gets a stable, keyed identity (never an empty shared one).
            name = str(ds.get("PatientName", "") or "").strip()
            birth = str(ds.get("PatientBirthDate", "") or "").strip()
            pid = f"name:{name}|{birth}" if name else f"study:{ds.get('StudyInstanceUID', '')}"
        pseudonym = self.pseudo.patient_id(pid)
        dates = self.policy.dates
        ctx = Context(
            policy=self.policy, rules=self.rules, pseudo=self.pseudo, cleaner=self.cleaner,
            sop_class=sop_class, patient_pseudonym=pseudonym,
            day_offset=self.pseudo.day_offset(pid, dates.shift_min_days, dates.shift_max_days),
            phi=phi_tokens(tokens),
        )
        original = {
            "patient": pid,
            "study": str(ds.get("StudyInstanceUID", "") or ""),
            "series": str(ds.get("SeriesInstanceUID", "") or ""),
            "instance": str(ds.get("SOPInstanceUID", "") or ""),
            "accession": str(ds.get("AccessionNumber", "") or ""),
        }
        try:
            needles = identity_needles(ds)
        except Exception as exc:
            if transient(exc):
                raise
            raise PolicyRefused(f"data set cannot be parsed ({type(exc).__name__})",
                                code="malformed-element") from None
        return _Prepared(src, ctx, original, needles)

    def _check_sop_class(self, sop_class: str) -> None:
        sc = self.policy.sop_classes
        for r in sc.refuse:
            if r.uid == sop_class:
                raise UnsupportedSopClass(f"SOP class {sop_class} refused: {r.reason}")
        if not sop_class:
            raise UnsupportedSopClass("instance has no SOPClassUID")
        if sc.accept == "any":
            return
        if sc.accept == "any-storage":
            if not sop_class.startswith(STORAGE_ROOT):
                raise UnsupportedSopClass(f"SOP class {sop_class} is not a standard storage class")
            return
        if sop_class not in sc.accept:
            name = UID(sop_class).name
            raise UnsupportedSopClass(f"SOP class {sop_class} ({name}): {sc.reason}")

    def _mark(self, ds: Dataset) -> None:
        """PatientIdentityRemoved, DeidentificationMethod(+codes), LongitudinalTemporal..."""
        m = self.policy.marking
        if not m.enabled:
            return
        opts = self.policy.options
        ds.PatientIdentityRemoved = "YES"
        method = m.method or f"deidgate {self.policy.name} {self.policy.version}"
        ds.DeidentificationMethod = method[:64]
        codes = [CID7050["basic"]] + [
            CID7050[o.value] for o in Option
            if o in opts and (o is not Option.CLEAN_PIXEL_DATA or self.policy.pixels_enabled)
        ]
        seq = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            seq.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(seq)
        if Option.RETAIN_LONGITUDINAL_MODIFIED_DATES in opts:
            ds.LongitudinalTemporalInformationModified = "MODIFIED"
        elif Option.RETAIN_LONGITUDINAL_FULL_DATES in opts:
            ds.LongitudinalTemporalInformationModified = "UNMODIFIED"
        else:
            ds.LongitudinalTemporalInformationModified = "REMOVED"

    def _pixels(self, src: Source, header: Dataset) -> PixelDecision:
        if src.pixel is None:
            return PixelDecision(action="no-pixels")
        if not self.policy.pixels_enabled:
            return PixelDecision(action="unchanged", detail="clean-pixel-data not selected")
        mm, view = map_pixels(src)
        try:
            return pixels.clean_pixels(header, view if view is not None else b"",
                                       transfer_syntax=str(src.transfer_syntax),
                                       options=self.policy.pixel_options())
        except Rejected:
            raise
        except Exception as exc:
            if transient(exc):
                raise
            raise PixelRefused(f"pixel stage failed ({type(exc).__name__})") from None
        finally:
            if view is not None:
                view.release()
            if mm is not None:
                mm.close()

    def _file_meta(self, ds: Dataset, src: Source, pixel: PixelDecision) -> FileMetaDataset:
        meta = FileMetaDataset()
        meta.FileMetaInformationVersion = b"\x00\x01"
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = UID(pixel.new_transfer_syntax or str(src.transfer_syntax))
        meta.ImplementationClassUID = UID(self.policy.file_meta.implementation_class_uid)
        meta.ImplementationVersionName = self.policy.file_meta.implementation_version_name
        return meta


_UID_MAPPINGS: tuple[tuple[MappingKind, str], ...] = (
    ("study", "StudyInstanceUID"), ("series", "SeriesInstanceUID"), ("instance", "SOPInstanceUID"))
_META_KEPT = {"FileMetaInformationVersion", "MediaStorageSOPClassUID",
              "MediaStorageSOPInstanceUID", "TransferSyntaxUID", "ImplementationClassUID",
              "ImplementationVersionName"}
