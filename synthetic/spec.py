"""What to make, as one object each: a view (``ViewSpec``) and an exam (``ExamSpec``).

Every generator takes a spec instead of a dozen keyword arguments; the keyword forms
(``make_mammogram(view="MLO", rows=64)``) build a spec from the same fields, so the list of
what can be asked for is written once, here.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

from pydicom.uid import UID, ExplicitVRLittleEndian

from synthetic.identity import ExamIdentity

View = Literal["CC", "MLO"]
Laterality = Literal["L", "R"]
Corner = Literal["auto", "tl", "tr", "bl", "br", "edge"]

FULL_ROWS, FULL_COLS = 4096, 3328
SMALL_ROWS, SMALL_COLS = 512, 416
# the order a screening exam's four views are acquired and stored in
SCREENING_VIEWS: tuple[tuple[View, Laterality], ...] = (
    ("CC", "R"), ("CC", "L"), ("MLO", "R"), ("MLO", "L"))


@dataclass(frozen=True)
class ViewSpec:
    """One mammogram: which view, the image's geometry and encoding, burned-in text, and where
    it sits in its exam (identity, instance number, series)."""

    view: View = "CC"
    laterality: Laterality = "L"
    rows: int | None = None  # default SMALL_ROWS x SMALL_COLS; full_size: FULL_ROWS x FULL_COLS
    cols: int | None = None
    full_size: bool = False
    bits_stored: int = 12
    photometric: str = "MONOCHROME2"
    burned_in_text: str | None = None  # "\n" separates lines
    text_height: int | None = None  # px; default scales with the image
    text_corner: Corner | tuple[int, int] = "auto"  # or the (row, col) of its top left
    text_value: int | None = None  # default: the brightest value
    frames: int = 1  # > 1: breast tomosynthesis
    transfer_syntax: str = ExplicitVRLittleEndian
    for_processing: bool = False
    identity: ExamIdentity = field(default_factory=ExamIdentity)
    instance: int = 1
    series_uid: UID | None = None  # default: one series per view and laterality

    @property
    def shape(self) -> tuple[int, int]:
        if self.full_size:
            return FULL_ROWS, FULL_COLS
        return self.rows or SMALL_ROWS, self.cols or SMALL_COLS

    @property
    def seed(self) -> int:
        """The pixel noise seed: the same spec always gives the same pixels."""
        return (self.identity.seed * 1009 + self.instance * 31 + (self.view == "MLO") * 7
                + (self.laterality == "R"))


_EXAM_FIELDS = {"identity", "views", "series_per_view"}


@dataclass(frozen=True)
class ExamSpec:
    """One screening exam (one study): ``views`` images in ``SCREENING_VIEWS`` order (repeated
    beyond four), one series for the exam or one per view, each image made from ``image``
    (its view, laterality, instance, identity and series are set per view)."""

    identity: ExamIdentity = field(default_factory=ExamIdentity)
    views: int = 4
    series_per_view: bool = False
    image: ViewSpec = field(default_factory=ViewSpec)

    @classmethod
    def of(cls, spec: ExamSpec | None = None, **changes: Any) -> ExamSpec:
        """``spec`` (or the default) with ``changes``: exam fields by name, any other name a
        ``ViewSpec`` field applied to every image."""
        base = spec or cls()
        exam = {k: v for k, v in changes.items() if k in _EXAM_FIELDS}
        image = {k: v for k, v in changes.items() if k not in _EXAM_FIELDS}
        unknown = set(image) - {f.name for f in fields(ViewSpec)}
        if unknown:
            raise TypeError(f"not an exam or view field: {', '.join(sorted(unknown))}")
        return replace(base, image=replace(base.image, **image), **exam)

    def view_specs(self) -> list[ViewSpec]:
        out = []
        exam_series = self.identity.uid("series", "exam")
        for n in range(self.views):
            view, lat = SCREENING_VIEWS[n % len(SCREENING_VIEWS)]
            series = self.identity.uid("series", "view", n) if self.series_per_view \
                else exam_series
            out.append(replace(self.image, view=view, laterality=lat, identity=self.identity,
                               instance=n + 1, series_uid=series))
        return out
