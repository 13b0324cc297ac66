"""Per-message DIMSE latency against dcmtk-based peers: pynetdicom as shipped vs deidgate's
socket tuning (``service/dicom/pynetdicom_patch``: TCP_NODELAY, TCP_QUICKACK), same run.

Peers: dcmtk's ``storescp`` (C-ECHO) and a real Orthanc holding N small studies (C-ECHO and
study-level C-FIND by accession, as the resolve step asks). Each figure is the median of
``--rounds`` rounds of ``--n`` messages on one association.

Usage: .venv/bin/python benchmarks/bench_dimse_latency.py [--n 20] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom.dataset import Dataset  # noqa: E402
from pynetdicom import AE  # noqa: E402
from pynetdicom.sop_class import (  # noqa: E402
    StudyRootQueryRetrieveInformationModelFind as FIND,
)
from pynetdicom.sop_class import Verification  # noqa: E402
from pynetdicom.transport import AssociationSocket  # noqa: E402

from service.dicom import pynetdicom_patch  # noqa: E402
from synthetic.exam import fresh_exam  # noqa: E402
from tests.peers.net import free_port, wait_port  # noqa: E402
from tests.peers.orthanc import orthanc_server  # noqa: E402

SHIPPED = AssociationSocket.recv


def per_message(port: int, called: str, send: Callable[[object, int], None], n: int) -> float:
    """Median seconds per message over n messages on one association."""
    ae = AE("LATENCY")
    ae.add_requested_context(Verification)
    ae.add_requested_context(FIND)
    assoc = ae.associate("127.0.0.1", port, ae_title=called)
    assert assoc.is_established
    try:
        times = []
        for i in range(n):
            t = time.perf_counter()
            send(assoc, i)
            times.append(time.perf_counter() - t)
        return statistics.median(times)
    finally:
        assoc.release()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()

    def echo(assoc: object, _i: int) -> None:
        assert assoc.send_c_echo().Status == 0  # type: ignore[attr-defined]

    with tempfile.TemporaryDirectory(prefix="bench-dimse-") as d, \
            orthanc_server(Path(d) / "orthanc",
                           extra={"DicomAlwaysAllowFind": True}) as orthanc:
        accessions = []
        for i in range(args.n):
            exam = fresh_exam(Path(d) / f"e{i}", index=i)
            orthanc.upload(*exam.files)
            accessions.append(exam.accession)

        def find(assoc: object, i: int) -> None:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.AccessionNumber = accessions[i % len(accessions)]
            q.StudyInstanceUID = ""
            q.NumberOfStudyRelatedInstances = ""
            got = [ds for st, ds in assoc.send_c_find(q, FIND)  # type: ignore[attr-defined]
                   if st and st.Status in (0xFF00, 0xFF01)]
            assert len(got) == 1

        port = free_port()
        scp = subprocess.Popen(["storescp", str(port)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
        try:
            wait_port(port)
            cases = [("C-ECHO to storescp", port, "ANY-SCP", echo),
                     ("C-ECHO to Orthanc", orthanc.dicom_port, orthanc.ae_title, echo),
                     ("C-FIND (study, accession) to Orthanc", orthanc.dicom_port,
                      orthanc.ae_title, find)]
            res: dict[tuple[str, str], list[float]] = {}
            for _ in range(args.rounds):
                for variant in ("pynetdicom as shipped", "deidgate tuned"):
                    AssociationSocket.recv = SHIPPED  # type: ignore[method-assign]
                    pynetdicom_patch._installed = False
                    if variant == "deidgate tuned":
                        pynetdicom_patch.install()
                    for label, p, called, send in cases:
                        res.setdefault((label, variant), []).append(
                            per_message(p, called, send, args.n))
        finally:
            scp.kill()
    print(f"median ms per message ({args.n} per association, median of {args.rounds} rounds)")
    print(f"{'exchange':<40}{'shipped':>10}{'tuned':>10}{'ratio':>8}")
    for label, *_ in cases:
        a = statistics.median(res[(label, "pynetdicom as shipped")]) * 1000
        b = statistics.median(res[(label, "deidgate tuned")]) * 1000
        print(f"{label:<40}{a:>10.1f}{b:>10.1f}{a / b:>8.1f}")


if __name__ == "__main__":
    main()
