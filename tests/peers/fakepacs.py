"""A PACS for faults Orthanc cannot produce on demand: C-MOVE that drops the association
mid-way, a PACS that answers C-FIND but never sends, and a PACS that gives no instance counts
at study level. It is synthetic's sample PACS (its matching, answers and data) with only the
faults added here; everything else is tested against Orthanc."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from pydicom.dataset import Dataset
from pynetdicom import AE

from synthetic.pacs import SamplePacs

Mode = Literal["normal", "drop-after-2-once", "never-send"]


class FaultyPacs(SamplePacs):
    """Moves to one fixed address whatever the destination AE, and misbehaves as ``mode``."""

    def __init__(self, files: list[Path], *, destination: tuple[str, int], mode: Mode,
                 ae_title: str, study_counts: bool) -> None:
        super().__init__(list(files), ae_title=ae_title)
        self.mode = mode
        self.study_counts = study_counts
        self.fixed_destination = destination
        self.move_requests: list[tuple[str, int]] = []  # (level, n UIDs)
        self.release = threading.Event()
        self._dropped = threading.Event()

    def destination(self, ae_title: str) -> tuple[str, int] | None:
        return self.fixed_destination

    def make_ae(self) -> AE:
        ae = super().make_ae()
        ae.network_timeout = ae.dimse_timeout = ae.acse_timeout = 10
        return ae

    def on_find(self, event: Any) -> Iterator[tuple[int, Dataset | None]]:
        for status, ident in super().on_find(event):
            if ident is not None and not self.study_counts and \
                    ident.QueryRetrieveLevel == "STUDY":
                for kw in ("NumberOfStudyRelatedInstances", "NumberOfStudyRelatedSeries"):
                    if kw in ident:
                        delattr(ident, kw)
            yield status, ident

    def on_move(self, event: Any) -> Iterator[Any]:
        ident = event.identifier
        sops = ident.get("SOPInstanceUID", None)
        n = 0 if sops in (None, "") else (1 if isinstance(sops, str) else len(sops))
        self.move_requests.append((str(ident.QueryRetrieveLevel), n))
        if self.mode == "never-send":
            yield self.fixed_destination
            self.release.wait(60)  # a PACS that accepted the move and went silent
            yield 0
            return
        for i, answer in enumerate(super().on_move(event)):
            if self.mode == "drop-after-2-once" and i == 4 and not self._dropped.is_set():
                self._dropped.set()  # answers: destination, count, then one per instance
                event.assoc.abort()
                return
            yield answer


@contextmanager
def fake_pacs(files: list[Path], *, destination: tuple[str, int], mode: Mode = "normal",
              ae_title: str = "FAKEPACS", study_counts: bool = True) -> Iterator[FaultyPacs]:
    pacs = FaultyPacs(files, destination=destination, mode=mode, ae_title=ae_title,
                      study_counts=study_counts)
    with pacs:
        try:
            yield pacs
        finally:
            pacs.release.set()
