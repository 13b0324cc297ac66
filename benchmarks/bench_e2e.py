"""End to end: N full-size 4-view exams (4096 x 3328, 16-bit, ~27 MB per view) pulled from
Orthanc on this machine through the whole gateway (C-FIND, C-MOVE to the listener, durable spool
write, Celery de-identification, mapping commit, spool copy deleted).

Reported, all measured in this one run on the same files:
  gateway     exams/hour; p50/p95 time from job submission to an exam fully de-identified, and
              per exam from its first instance received to its study complete
  references  (a) network: C-MOVE of the same studies from Orthanc to dcmtk's storescp
              (b) pixel/CPU work in one process: spool write, de-identification (engine read,
                  header rules, pixel check, durable write), DB commit of the mappings
  where the time goes: the per-exam medians of those stages, and the gateway's throughput as a
  ratio of the slower bound (network, or the pixel work spread over the worker processes)

Usage: .venv/bin/python benchmarks/bench_e2e.py [--exams 50] [--db sqlite|postgresql]
       [--broker fs|redis] [--concurrency 2]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from sqlalchemy import create_engine, select, text  # noqa: E402

from service.core.config import Settings  # noqa: E402
from service.core.keys import SiteKeys  # noqa: E402
from service.db.session import get_sessionmaker, session_scope  # noqa: E402
from synthetic.exam import fresh_exam  # noqa: E402
from tests.peers.net import free_port, wait_port  # noqa: E402
from tests.peers.orthanc import orthanc_server  # noqa: E402

FULL = (4096, 3328)
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def storescu(files: list[Path], port: int, aet: str = "DEIDGATE") -> None:
    for i in range(0, len(files), 40):
        subprocess.run(["storescu", "-aet", aet, "-aec", "ORTHANC", "127.0.0.1", str(port),
                        *map(str, files[i:i + 40])], check=True, capture_output=True)


def network_reference(o, exams, tmp: Path) -> list[float]:  # type: ignore[no-untyped-def]
    """C-MOVE each study to dcmtk's storescp (no database, no fsync): the network bound."""
    port = free_port()
    out = tmp / "storescp"
    out.mkdir()
    o.add_modality("ref", "REFSCP", "127.0.0.1", port)
    o.add_modality("bench", "BENCH", "127.0.0.1", free_port())  # the calling AE must be known
    scp = subprocess.Popen(["storescp", "-aet", "REFSCP", "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        times = []
        for e in exams:
            t = time.perf_counter()
            subprocess.run(["movescu", "-S", "-aet", "BENCH", "-aec", "ORTHANC",
                            "-aem", "REFSCP", "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={e.study_uid}", "127.0.0.1",
                            str(o.dicom_port)], check=True, capture_output=True)
            times.append(time.perf_counter() - t)
        got = len(list(out.iterdir()))
        if got != 4 * len(exams):
            raise SystemExit(f"network reference: storescp received {got} of {4 * len(exams)}")
        return times
    finally:
        scp.terminate()
        scp.wait(timeout=10)


def stage_reference(exams, tmp: Path, policy: str) -> dict[str, list[float]]:  # type: ignore[no-untyped-def]
    """The gateway's per-instance stages, one process, one exam at a time, on the same files."""
    from service.audit.store import AuditStore
    from service.db.migrate import upgrade
    from service.dicom.spool import Spool
    from workers.deid.engine import Deidentifier
    from workers.deid.pipeline import output_path
    from workers.deid.policy import load_policy

    url = f"sqlite:///{tmp / 'ref.db'}"
    upgrade(url)
    keys = SiteKeys.load(tmp / "ref.key")
    deid = Deidentifier(load_policy(policy), keys)
    spool = Spool(tmp / "ref-spool")
    res: dict[str, list[float]] = {"spool write": [], "de-identification": [], "DB commit": []}
    for e in exams:
        sw = dw = dc = 0.0
        for f in e.files:
            data = f.read_bytes()
            t = time.perf_counter()
            p, _ = spool.write([data])
            sw += time.perf_counter() - t
            t = time.perf_counter()
            outcome = deid.deidentify(p)
            deid.write(outcome, output_path(tmp / "ref-out", outcome))
            dw += time.perf_counter() - t
            t = time.perf_counter()
            with session_scope(url) as s:
                AuditStore(s, keys).record_outcome(outcome, source="bench", job_id=None)
            dc += time.perf_counter() - t
            p.unlink()
        res["spool write"].append(sw)
        res["de-identification"].append(dw)
        res["DB commit"].append(dc)
    return res


def run_gateway(o, exams, tmp: Path, args) -> tuple[float, list[float], list[float]]:  # type: ignore[no-untyped-def]
    from service.cli.serve import start_embedded
    from service.db.migrate import upgrade
    from service.db.models.dicom import ReceivedInstance
    from service.db.models.jobs import JobStudy
    from service.dicom import admin
    from service.jobs import ops

    db_url = f"sqlite:///{tmp / 'gw.db'}"
    pg_name = None
    if args.db == "postgresql":
        pg_name = f"deidgate_bench_{uuid.uuid4().hex[:8]}"
        with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f'CREATE DATABASE "{pg_name}"'))
        db_url = PG_ADMIN.rsplit("/", 1)[0] + f"/{pg_name}"
    lport = free_port()
    st = Settings(home=tmp / "home", database_url=db_url, dicom_host="127.0.0.1",
                  dicom_port=lport, node_name=f"bench{uuid.uuid4().hex[:6]}",
                  broker_url="redis://127.0.0.1:6379/7" if args.broker == "redis" else None,
                  spool_free_floor_mb=256, default_policy=args.policy)
    st.ensure_dirs()
    upgrade(db_url)
    keys = SiteKeys.load(st.site_key_path)
    o.add_modality("gw", "DEIDGATE", "127.0.0.1", lport)
    with session_scope(db_url) as s:
        admin.seed(s, st)
        admin.set_local_ae(s, st, ae_title="DEIDGATE", host="127.0.0.1", port=lport)
        admin.add_node(s, "orthanc", ae_title="ORTHANC", host="127.0.0.1", port=o.dicom_port)
        admin.allow(s, "ORTHANC")
    log = (tmp / "worker.log").open("ab")
    emb = start_embedded(st, db_url, api=False, concurrency=args.concurrency, log_file=log)
    try:
        time.sleep(3)  # worker boot is not part of the job
        req = ops.parse_job_request({"pacs": "orthanc",
                                     "accession_numbers": [e.accession for e in exams]})
        t0 = time.perf_counter()
        with session_scope(db_url) as s:
            job_id = ops.submit_job(s, st, keys, req, actor="bench").id
        done_at: dict[int, float] = {}
        sessions = get_sessionmaker(db_url)
        while True:
            with sessions() as s:
                states = dict(s.execute(select(JobStudy.id, JobStudy.state)
                                        .where(JobStudy.job_id == job_id)).all())
                v = ops.get_job(s, job_id)
            now = time.perf_counter() - t0
            for sid, state in states.items():
                if state in ("complete", "failed") and sid not in done_at:
                    done_at[sid] = now
            assert v is not None
            if v.state in ("done", "failed", "cancelled"):
                break
            if now > args.timeout:
                raise SystemExit(f"gateway job still {v.state} after {args.timeout}s")
            time.sleep(0.1)
        total = time.perf_counter() - t0
        if v.state != "done":
            raise SystemExit(f"job {v.state}: {v.reason}")
        # per exam: first instance received -> study complete (wall clock from the database)
        with sessions() as s:
            first = {sk: t for sk, t in s.execute(
                select(ReceivedInstance.study_key, ReceivedInstance.received_at))}
            ends = {sk: t for sk, t in s.execute(
                select(JobStudy.study_key, JobStudy.updated_at)
                .where(JobStudy.job_id == job_id))}
            firsts: dict[str, object] = {}
            for sk, t in s.execute(select(ReceivedInstance.study_key,
                                          ReceivedInstance.received_at)):
                if sk not in firsts or t < firsts[sk]:  # type: ignore[operator]
                    firsts[sk] = t
        del first
        per_exam = [(ends[k] - firsts[k]).total_seconds()  # type: ignore[operator]
                    for k in ends if k in firsts]
        return total, sorted(done_at.values()), per_exam
    finally:
        emb.stop(timeout=120)
        log.close()
        if pg_name:
            from service.db.session import get_engine

            get_engine(db_url).dispose()
            with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)'))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exams", type=int, default=50)
    ap.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    ap.add_argument("--broker", choices=("fs", "redis"), default="fs")
    ap.add_argument("--concurrency", type=int, default=2)
    ap.add_argument("--policy", default="mammography-screening")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--size", default="full", help="'full' (4096x3328) or ROWSxCOLS")
    args = ap.parse_args()
    rows, cols = FULL if args.size == "full" else map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-e2e-") as d:
        tmp = Path(d)
        t = time.perf_counter()
        exams = [fresh_exam(tmp / "exams", index=i, rows=rows, cols=cols)
                 for i in range(args.exams)]
        mb = sum(f.stat().st_size for e in exams for f in e.files) / 1e6
        print(f"{args.exams} exams, {4 * args.exams} instances {rows}x{cols}, {mb:.0f} MB "
              f"(generated in {time.perf_counter() - t:.0f} s)", flush=True)
        with orthanc_server(tmp / "orthanc") as o:
            t = time.perf_counter()
            storescu([f for e in exams for f in e.files], o.dicom_port)
            print(f"loaded into Orthanc in {time.perf_counter() - t:.0f} s", flush=True)
            net = network_reference(o, exams, tmp)
            print(f"reference (a) C-MOVE to storescp: median {statistics.median(net):.2f} s "
                  f"per exam", flush=True)
            stages = stage_reference(exams, tmp, args.policy)
            print("reference (b) stages in one process done", flush=True)
            total, done, per_exam = run_gateway(o, exams, tmp, args)
    n = args.exams
    rate = n / total * 3600
    pix = [a + b + c for a, b, c in zip(stages["spool write"], stages["de-identification"],
                                         stages["DB commit"], strict=True)]
    net_rate = 3600 / statistics.median(net)
    cpu_rate = 3600 / statistics.median(pix) * args.concurrency
    bound = min(net_rate, cpu_rate)
    print()
    print(f"gateway ({args.db}, broker {args.broker}, {args.concurrency} worker processes)")
    print(f"  {n} exams in {total:.1f} s  ->  {rate:,.0f} exams/hour")
    print(f"  submission -> exam de-identified: p50 {pct(done, 0.5):.1f} s, "
          f"p95 {pct(done, 0.95):.1f} s, last {done[-1]:.1f} s")
    print(f"  per exam, first instance received -> study complete: median "
          f"{statistics.median(per_exam):.2f} s, p95 {pct(per_exam, 0.95):.2f} s")
    print("where the time goes (per exam, median, measured on the same files in this run)")
    print(f"  C-MOVE transfer (Orthanc -> storescp) {statistics.median(net):7.2f} s")
    for k, v in stages.items():
        print(f"  {k:<36}{statistics.median(v):7.2f} s")
    print(f"bounds: network {net_rate:,.0f} exams/h; pixel+DB work on {args.concurrency} "
          f"processes {cpu_rate:,.0f} exams/h")
    print(f"gateway / slower bound = {rate / bound:.2f}   (target: >= 1,000 exams/hour)")


if __name__ == "__main__":
    main()
