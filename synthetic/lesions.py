"""Synthetic lesions planted inside the breast of synthetic mammograms, with the ground truth.

The demo model must prove that the scoring machinery learns, not the medicine, so the task is made
just hard enough that no one-number brightness rule solves it:

- **masses**: an irregular blob (lobulated margin) with 5-12 spicules radiating out of it, 8-16 %
  of the full scale brighter than the tissue around it;
- **calcification clusters**: 10-20 bright specks of one to two pixels within a small radius;
- in every exam, cancer or not, **distractors**: isolated bright specks scattered over the breast
  (vascular-like calcifications, as bright as the malignant ones) and sometimes a smooth round
  cyst, plus a per-exam gain on the tissue (breast density varies between women).

So the brightest pixel, the mean or a high percentile of the breast does not separate the classes
(tests/score/test_lesions.py measures it); the *shape* does: a cluster of specks, spicules, an
irregular margin. A cancer exam has one lesion in one breast, seen in both its views (CC and MLO)
at about the same depth from the chest wall, as in real screening.

Everything is deterministic in (woman index, seed). ``write_lesion_dataset`` writes DICOM files
(named by UID only) and a labels CSV ``study_uid,label,laterality`` as ``deidgate model train``
reads it.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np
from pydicom.dataset import FileDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

from synthetic.identity import ExamIdentity, default_identity
from synthetic.mammogram import make_mammogram_with_truth

LesionKind = Literal["mass", "calcifications", "cyst", "speck"]
_ENCODER_PLUGIN = {JPEG2000Lossless: "pylibjpeg", JPEGLSLossless: "pyjpegls",
                   RLELossless: "pylibjpeg"}
_VIEWS = [("CC", "R"), ("CC", "L"), ("MLO", "R"), ("MLO", "L")]


@dataclass(frozen=True)
class Difficulty:
    """The knobs of the task; the defaults are what the demo model is trained and tested on."""

    mass_contrast: tuple[float, float] = (0.08, 0.16)    # fraction of the maximum pixel value
    mass_radius: tuple[float, float] = (0.06, 0.10)      # fraction of the image width
    spicules: tuple[int, int] = (5, 12)
    calc_contrast: tuple[float, float] = (0.20, 0.40)
    calc_specks: tuple[int, int] = (10, 20)
    calc_radius: tuple[float, float] = (0.04, 0.07)      # cluster radius, fraction of width
    speck_radius: tuple[float, float] = (1.0, 2.0)       # pixels
    mass_share: float = 0.6                              # masses vs calcification clusters
    distractor_specks: tuple[int, int] = (0, 6)          # isolated specks per view
    cyst_probability: float = 0.25                       # smooth round benign blob per view
    cyst_contrast: tuple[float, float] = (0.04, 0.08)
    gain: tuple[float, float] = (0.86, 1.08)             # per-exam tissue gain (density)


@dataclass(frozen=True)
class Lesion:
    """One planted finding, in the pixel coordinates of its view."""

    kind: LesionKind
    row: int
    col: int
    radius: float
    contrast: float
    count: int = 0   # spicules of a mass, specks of a cluster

    @property
    def malignant(self) -> bool:
        return self.kind in ("mass", "calcifications")


@dataclass
class LesionView:
    dataset: FileDataset
    view: str
    laterality: str
    lesions: list[Lesion]
    breast_mask: np.ndarray = field(repr=False)
    lesion_mask: np.ndarray = field(repr=False)   # where a malignant finding adds signal

    @property
    def label(self) -> int:
        return int(any(x.malignant for x in self.lesions))


@dataclass
class LesionExam:
    woman: int
    identity: ExamIdentity
    cancer: bool
    laterality: str | None   # breast holding the cancer
    views: list[LesionView]

    @property
    def study_uid(self) -> str:
        return str(self.views[0].dataset.StudyInstanceUID)

    @property
    def patient_id(self) -> str:
        return str(self.views[0].dataset.PatientID)


def _rng(*parts: object) -> np.random.Generator:
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:8], "big"))


def _patch(shape: tuple[int, int], row: int, col: int, half: int) -> tuple[slice, slice,
                                                                           np.ndarray, np.ndarray]:
    r0, r1 = max(0, row - half), min(shape[0], row + half + 1)
    c0, c1 = max(0, col - half), min(shape[1], col + half + 1)
    dy = (np.arange(r0, r1, dtype=np.float32) - row)[:, None]
    dx = (np.arange(c0, c1, dtype=np.float32) - col)[None, :]
    return slice(r0, r1), slice(c0, c1), dy, dx


def mass_profile(dy: np.ndarray, dx: np.ndarray, radius: float, spicules: int,
                 rng: np.random.Generator, *, smooth: bool = False) -> np.ndarray:
    """Signal in [0, 1]: a lobulated core with a soft edge, plus spicules (none when smooth)."""
    d = np.sqrt(dy**2 + dx**2)
    theta = np.arctan2(dy, dx)
    if smooth:
        edge = np.full_like(d, radius)
    else:
        a1, a2 = rng.uniform(0.08, 0.2), rng.uniform(0.04, 0.12)
        p1, p2 = rng.uniform(0, 2 * np.pi, 2)
        edge = radius * (1 + a1 * np.sin(3 * theta + p1) + a2 * np.sin(5 * theta + p2))
    core = np.clip((edge - d) / (0.3 * radius) + 0.5, 0, 1)
    core = core * (0.75 + 0.25 * np.clip(1 - (d / radius) ** 2, 0, 1))
    out = core
    for _ in range(0 if smooth else spicules):
        alpha = rng.uniform(0, 2 * np.pi)
        length = radius * rng.uniform(1.4, 2.8)
        width = rng.uniform(0.8, 1.6)
        t = dx * np.cos(alpha) + dy * np.sin(alpha)
        perp = np.abs(-dx * np.sin(alpha) + dy * np.cos(alpha))
        ray = np.exp(-((perp / width) ** 2)) * np.clip(1 - t / length, 0, 1) * (t > 0.5 * radius)
        out = np.maximum(out, 0.7 * ray)
    return out.astype(np.float32)


def speck_profile(dy: np.ndarray, dx: np.ndarray, centres: np.ndarray,
                  radii: np.ndarray) -> np.ndarray:
    """Signal in [0, 1]: gaussian specks at ``centres`` (N x 2, relative rows/cols)."""
    out = np.zeros(np.broadcast_shapes(dy.shape, dx.shape), dtype=np.float32)
    for (cy, cx), r in zip(centres, radii, strict=True):
        out = np.maximum(out, np.exp(-(((dy - cy) ** 2 + (dx - cx) ** 2) / r**2)))
    return out


def _place(rng: np.random.Generator, mask: np.ndarray, radius: float,
           depth: float | None = None) -> tuple[int, int] | None:
    """A centre whose disk of ``1.4 * radius`` lies inside the breast, at ``depth`` (0 at the
    chest wall, 1 at the nipple) when given."""
    cols_with = np.flatnonzero(mask.any(axis=0))
    if cols_with.size == 0:
        return None
    wall_left = mask[:, : mask.shape[1] // 2].sum() >= mask[:, mask.shape[1] // 2 :].sum()
    extent = cols_with[-1] - cols_with[0]
    reach = 1.4 * radius
    for _ in range(60):
        frac = rng.uniform(0.15, 0.8) if depth is None else depth + rng.uniform(-0.04, 0.04)
        off = int(frac * extent)
        col = cols_with[0] + off if wall_left else cols_with[-1] - off
        rows = np.flatnonzero(mask[:, col])
        if rows.size == 0:
            continue
        row = int(rng.integers(rows[0], rows[-1] + 1))
        probe = [(row + int(reach * np.sin(a)), col + int(reach * np.cos(a)))
                 for a in np.linspace(0, 2 * np.pi, 12, endpoint=False)]
        if all(0 <= r < mask.shape[0] and 0 <= c < mask.shape[1] and mask[r, c]
               for r, c in probe):
            return row, int(col)
    return None


def plant(img: np.ndarray, breast: np.ndarray, lesion: Lesion, rng: np.random.Generator,
          max_value: int, lesion_mask: np.ndarray | None = None,
          speck_radius: tuple[float, float] = (0.9, 2.0)) -> None:
    """Add one finding to ``img`` (float32, MONOCHROME2 sense) in place, inside ``breast`` only
    (a spicule reaching the skin line stops there)."""
    half = int(np.ceil(lesion.radius * (3.0 if lesion.kind == "mass" else 1.6))) + 3
    rs, cs, dy, dx = _patch(img.shape, lesion.row, lesion.col, half)
    if lesion.kind in ("mass", "cyst"):
        sig = mass_profile(dy, dx, lesion.radius, lesion.count, rng,
                           smooth=lesion.kind == "cyst")
    else:
        n = max(1, lesion.count)
        spread = 0.0 if lesion.kind == "speck" else lesion.radius / 2
        centres = rng.normal(0.0, spread, (n, 2)) if spread else np.zeros((n, 2))
        radii = rng.uniform(*speck_radius, n)
        sig = speck_profile(dy, dx, centres, radii)
    sig = sig * breast[rs, cs]
    img[rs, cs] += lesion.contrast * max_value * sig
    if lesion_mask is not None and lesion.malignant:
        lesion_mask[rs, cs] |= sig > 0.1


def _malignant(rng: np.random.Generator, width: int, d: Difficulty) -> Lesion:
    if rng.uniform() < d.mass_share:
        return Lesion("mass", 0, 0, radius=rng.uniform(*d.mass_radius) * width,
                      contrast=rng.uniform(*d.mass_contrast),
                      count=int(rng.integers(d.spicules[0], d.spicules[1] + 1)))
    return Lesion("calcifications", 0, 0, radius=rng.uniform(*d.calc_radius) * width,
                  contrast=rng.uniform(*d.calc_contrast),
                  count=int(rng.integers(d.calc_specks[0], d.calc_specks[1] + 1)))


def _distractors(rng: np.random.Generator, width: int, d: Difficulty) -> list[Lesion]:
    out = [Lesion("speck", 0, 0, radius=1.5, contrast=rng.uniform(*d.calc_contrast), count=1)
           for _ in range(int(rng.integers(d.distractor_specks[0], d.distractor_specks[1] + 1)))]
    if rng.uniform() < d.cyst_probability:
        out.append(Lesion("cyst", 0, 0, radius=rng.uniform(*d.mass_radius) * width,
                          contrast=rng.uniform(*d.cyst_contrast)))
    return out


def _encode(ds: FileDataset, arr: np.ndarray, transfer_syntax: str) -> None:
    ds.PixelData = np.ascontiguousarray(arr, dtype=np.uint16).tobytes()
    ds["PixelData"].VR = "OW"
    ts = UID(transfer_syntax)
    if ts != ExplicitVRLittleEndian:
        if ts not in _ENCODER_PLUGIN:
            raise ValueError("unsupported transfer syntax for the synthetic generator")
        ds.compress(ts, arr, encoding_plugin=_ENCODER_PLUGIN[ts], generate_instance_uid=False)
        ds.LossyImageCompression = "00"


def make_lesion_exam(
    woman: int,
    *,
    cancer: bool,
    seed: int = 0,
    exam: int = 0,
    rows: int = 512,
    cols: int = 416,
    difficulty: Difficulty | None = None,
    photometric: str = "MONOCHROME2",
    transfer_syntax: str = ExplicitVRLittleEndian,
) -> LesionExam:
    """Four views of one exam of synthetic woman ``woman`` (``exam`` > 0: a later exam of hers)."""
    d = difficulty or Difficulty()
    base = default_identity(woman)
    identity = replace(base, seed=base.seed + 7919 * exam + 104729 * seed,
                       accession_number=f"{base.accession_number}{exam:02d}"[:16],
                       study_date=f"{2024 + exam}0315")
    rng = _rng("exam", woman, exam, seed)
    lesion_side = str(rng.choice(["L", "R"])) if cancer else None
    finding = _malignant(rng, cols, d) if cancer else None
    depth = float(rng.uniform(0.2, 0.7))
    gain = float(rng.uniform(*d.gain))
    series_uid = identity.uid("series", "exam")
    views: list[LesionView] = []
    for n, (view, lat) in enumerate(_VIEWS, 1):
        ds, truth = make_mammogram_with_truth(
            view=view, laterality=lat, rows=rows, cols=cols, identity=identity,  # type: ignore[arg-type]
            instance=n, series_uid=series_uid,
        )
        max_value = (1 << int(ds.BitsStored)) - 1
        img = np.asarray(truth.pixels, dtype=np.float32)
        mask = truth.breast_mask
        img = np.where(mask, img * gain, img)
        vrng = _rng("view", woman, exam, seed, n)
        lesion_mask = np.zeros(mask.shape, dtype=bool)
        placed: list[Lesion] = []
        todo = _distractors(vrng, cols, d)
        if finding is not None and lat == lesion_side:
            size = finding.radius * float(vrng.uniform(0.9, 1.1))
            todo.append(replace(finding, radius=size))
        for item in todo:
            where = _place(vrng, mask, item.radius, depth if item.malignant else None)
            if where is None:
                continue
            item = replace(item, row=where[0], col=where[1])
            plant(img, mask, item, vrng, max_value, lesion_mask, d.speck_radius)
            placed.append(item)
        arr = np.clip(np.rint(img), 0, max_value).astype(np.uint16)
        if photometric == "MONOCHROME1":
            arr = (max_value - arr).astype(np.uint16)
            ds.PhotometricInterpretation = "MONOCHROME1"
            ds.PresentationLUTShape = "INVERSE"
            ds.WindowCenter = [str(max_value - int(float(c))) for c in ds.WindowCenter]
        _encode(ds, arr, transfer_syntax)
        views.append(LesionView(ds, view, lat, placed, mask, lesion_mask))
    return LesionExam(woman, identity, cancer, lesion_side, views)


def make_lesion_dataset(
    women: range | list[int], *, prevalence: float = 0.5, seed: int = 0, **kwargs: object
) -> list[LesionExam]:
    """One exam per woman; which women have cancer is drawn from (woman, seed) alone, so the same
    call always returns the same exams."""
    out = []
    for w in women:
        cancer = bool(_rng("label", w, seed).uniform() < prevalence)
        out.append(make_lesion_exam(w, cancer=cancer, seed=seed, **kwargs))  # type: ignore[arg-type]
    return out


def write_lesion_dataset(folder: Path, exams: list[LesionExam]) -> Path:
    """Write every view as ``<study>/<SOPInstanceUID>.dcm`` and ``labels.csv`` beside them."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for ex in exams:
        sub = folder / ex.study_uid
        sub.mkdir(exist_ok=True)
        for v in ex.views:
            v.dataset.save_as(sub / f"{v.dataset.SOPInstanceUID}.dcm", enforce_file_format=True)
    labels = folder / "labels.csv"
    with labels.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["study_uid", "label", "laterality"])
        for ex in exams:
            w.writerow([ex.study_uid, int(ex.cancer), ex.laterality or ""])
    return labels
