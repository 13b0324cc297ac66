"""End to end: `deidgate job submit --wait` against `movescu` -> `storescp`, same Orthanc, same run.

N full-size four-view exams (4096 x 3328, 16 bits; by default every other exam JPEG 2000
lossless, the rest uncompressed) sit in one real Orthanc on this machine. Each ROUND loads N
exams with study, series and SOP Instance UIDs, patient IDs and accession numbers that are new
to the gateway (cloned from the generated set by rewriting the header only, so the pixel data
and its encoding stay the same), then times, one after the other:

  reference  `movescu` pulling the round's studies study by study to dcmtk's `storescp` (no
             database, no fsync: the network and Orthanc's sending bound)
  gateway    `deidgate job submit --wait --accession ...` (the real CLI, a new process) against
             an embedded gateway (`start_embedded`, as `deidgate serve` runs it, started once per
             deployment and warm): C-FIND, C-MOVE to the listener, durable spool write, Celery
             de-identification, mapping commit, spool copy deleted, job done

and prints per deployment the medians over the rounds and the ratio gateway / reference
(median of the per-round ratios, each measured side by side). Deployments: ``embedded``
(SQLite + the filesystem broker, the default of `deidgate serve`) and ``pg-redis`` (PostgreSQL
on 127.0.0.1:5432 + a private redis-server started here).

``--timeline`` adds where the time goes: per stage medians from the database rows and the
worker log (submission -> resolve task, C-FIND, retrieves, instance received -> linked -> deid
task started, de-identification, last instance -> job done -> CLI exit).

Usage (from the repository root):
    .venv/bin/python benchmarks/bench_e2e.py                       # 10 exams, 3 rounds, both
    .venv/bin/python benchmarks/bench_e2e.py --deploy embedded --rounds 5 --timeline
    .venv/bin/python benchmarks/bench_e2e.py --exams 4 --size 1024x832 --rounds 2   # smoke
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom import dcmread  # noqa: E402
from pydicom.uid import JPEG2000Lossless, generate_uid  # noqa: E402
from sqlalchemy import create_engine, select, text  # noqa: E402

from service.cli.serve import settings_env  # noqa: E402
from service.core.config import Settings  # noqa: E402
from service.db.session import get_sessionmaker, session_scope  # noqa: E402
from synthetic.exam import fresh_exam  # noqa: E402
from tests.peers.net import free_port, stop_process, wait_port  # noqa: E402
from tests.peers.orthanc import OrthancPeer, orthanc_server  # noqa: E402

FULL = (4096, 3328)
PG_ADMIN = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
GW_AE = "DEIDGATE"


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


# --- exams ----------------------------------------------------------------------------------

@dataclass
class RoundExam:
    accession: str
    study_uid: str
    files: list[Path] = field(default_factory=list)


def clone_round(base: list[list[Path]], out: Path, tag: str) -> list[RoundExam]:
    """Copies of the base exams with new UIDs and IDs (header only: the pixel data, and so
    the transfer syntax and size, are those of the base files)."""
    out.mkdir(parents=True)
    exams = []
    for i, files in enumerate(base):
        e = RoundExam(accession=f"B{tag}{i:03d}"[:16], study_uid=generate_uid())
        series: dict[str, str] = {}
        pid = f"P{tag}{i:03d}"[:16]
        for f in files:
            ds = dcmread(f)
            ds.StudyInstanceUID = e.study_uid
            ds.SeriesInstanceUID = series.setdefault(str(ds.SeriesInstanceUID), generate_uid())
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.AccessionNumber = e.accession
            ds.PatientID = pid
            p = out / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(p, enforce_file_format=True)
            e.files.append(p)
        exams.append(e)
    return exams


def base_exams(args: argparse.Namespace, rows: int, cols: int, tmp: Path) -> list[list[Path]]:
    """Generated once (JPEG 2000 encoding of full-size images takes minutes on 2 cores) and
    kept in ``--cache`` between runs: every round clones them with new UIDs anyway."""
    cache = Path(args.cache) / f"{args.exams}x{rows}x{cols}-j2k{args.j2k}" if args.cache \
        else tmp / "base"
    done = cache / "complete"
    if not done.exists():
        shutil.rmtree(cache, ignore_errors=True)
        for i in range(args.exams):
            kw: dict[str, Any] = {"rows": rows, "cols": cols}
            if int((i + 1) * args.j2k) > int(i * args.j2k):  # spread evenly
                kw["transfer_syntax"] = JPEG2000Lossless
            fresh_exam(cache / f"{i:03d}", index=i, **kw)
        done.touch()
    return [sorted((cache / f"{i:03d}").glob("*.dcm")) for i in range(args.exams)]


def load(o: OrthancPeer, files: list[Path]) -> None:
    """Through Orthanc's REST API: it stores each file in its own transfer syntax."""
    o.upload(*files)


def clear_orthanc(o: OrthancPeer) -> None:
    for sid in o.studies():
        o._req("DELETE", f"/studies/{sid}")


# --- reference --------------------------------------------------------------------------------

class StoreScp:
    """dcmtk's storescp, one process for the whole run (files removed after each round)."""

    def __init__(self, o: OrthancPeer, tmp: Path) -> None:
        self.port = free_port()
        self.out = tmp / "storescp"
        self.out.mkdir()
        o.add_modality("ref", "REFSCP", "127.0.0.1", self.port)
        o.add_modality("bench", "BENCH", "127.0.0.1", free_port())  # the calling AE must be known
        self.proc = subprocess.Popen(["storescp", "+xa", "-aet", "REFSCP", "-od", str(self.out),
                                      str(self.port)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)

    def pull(self, o: OrthancPeer, exams: list[RoundExam]) -> float:
        """movescu study by study (as an operator would script it); wall time of all."""
        t = time.perf_counter()
        for e in exams:
            subprocess.run(["movescu", "-S", "-aet", "BENCH", "-aec", "ORTHANC",
                            "-aem", "REFSCP", "-k", "QueryRetrieveLevel=STUDY",
                            "-k", f"StudyInstanceUID={e.study_uid}", "127.0.0.1",
                            str(o.dicom_port)], check=True, capture_output=True)
        took = time.perf_counter() - t
        got = sum(1 for _ in self.out.iterdir())
        want = sum(len(e.files) for e in exams)
        if got != want:
            raise SystemExit(f"reference: storescp received {got} of {want}")
        for p in self.out.iterdir():
            p.unlink()
        return took

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


# --- gateway ----------------------------------------------------------------------------------

@contextmanager
def redis_server(tmp: Path) -> Iterator[str]:
    """A private redis-server: no other process on this machine shares its queues."""
    port = free_port()
    tmp.mkdir(parents=True, exist_ok=True)  # redis-server will not start without its --dir
    exe = shutil.which("redis-server") or "/usr/bin/redis-server"
    proc = subprocess.Popen([exe, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.kill()
        proc.wait(timeout=10)


@contextmanager
def postgres_db() -> Iterator[str]:
    name = f"deidgate_bench_{uuid.uuid4().hex[:8]}"
    with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    url = PG_ADMIN.rsplit("/", 1)[0] + f"/{name}"
    try:
        yield url
    finally:
        from service.db.session import get_engine

        get_engine(url).dispose()
        with create_engine(PG_ADMIN, isolation_level="AUTOCOMMIT").connect() as c:
            c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@dataclass
class Gateway:
    settings: Settings
    log_path: Path
    code: Path  # the source tree its `deidgate serve` and CLI run from
    pid: int  # its `deidgate serve` process

    def submit_wait(self, exams: list[RoundExam], timeout: float) -> tuple[float, str]:
        """The real CLI in a new process; returns (wall s, job id)."""
        cmd = [sys.executable, "-m", "service.cli.main", "job", "submit", "--pacs", "orthanc",
               "--wait", "--timeout", str(timeout)]
        for e in exams:
            cmd += ["--accession", e.accession]
        t = time.perf_counter()
        res = subprocess.run(cmd, env=code_env(self.settings, self.code), capture_output=True,
                             text=True, cwd=self.code, check=False)
        took = time.perf_counter() - t
        if res.returncode != 0:
            raise SystemExit(f"job submit failed ({res.returncode}): {res.stderr[-2000:]}")
        return took, res.stdout.strip().splitlines()[-1]

    def clean_output(self) -> None:
        for p in list(self.settings.output_dir.iterdir()):
            shutil.rmtree(p) if p.is_dir() else p.unlink()


def code_env(settings: Settings, code: Path) -> dict[str, str]:
    env = settings_env(settings)
    env["PYTHONPATH"] = str(code)
    return env


@contextmanager
def gateway(o: OrthancPeer, tmp: Path, *, deploy: str, code: Path, label: str, ae: str,
            concurrency: int | None, policy: str) -> Iterator[Gateway]:
    """``deidgate serve --no-api`` of the tree ``code`` (a process of its own, as deployed),
    warm before the first job; ``ae``: its AE title (Orthanc finds move destinations by it)."""
    from service.core.keys import SiteKeys
    from service.db.migrate import upgrade
    from service.dicom import admin

    name = f"{deploy}-{label}"
    home = tmp / f"gw-{name}"
    with contextlib.ExitStack() as stack:
        if deploy == "pg-redis":
            db_url = stack.enter_context(postgres_db())
            broker = stack.enter_context(redis_server(tmp / name))
        else:
            db_url, broker = f"sqlite:///{home / 'gw.db'}", None
        lport = free_port()
        st = Settings(home=home, database_url=db_url, dicom_host="127.0.0.1", dicom_port=lport,
                      node_name=f"bench{uuid.uuid4().hex[:6]}", broker_url=broker,
                      spool_free_floor_mb=256, default_policy=policy)
        st.ensure_dirs()
        upgrade(db_url)
        SiteKeys.load(st.site_key_path)
        o.add_modality(f"gw-{name}", ae, "127.0.0.1", lport)
        with session_scope(db_url) as s:
            admin.seed(s, st)
            admin.set_local_ae(s, st, ae_title=ae, host="127.0.0.1", port=lport)
            admin.add_node(s, "orthanc", ae_title="ORTHANC", host="127.0.0.1",
                           port=o.dicom_port)
            admin.allow(s, "ORTHANC")
        log_path = tmp / f"serve-{name}.log"
        log = log_path.open("ab")
        cmd = [sys.executable, "-m", "service.cli.main", "serve", "--no-api"]
        if concurrency:
            cmd += ["--concurrency", str(concurrency)]
        proc = subprocess.Popen(cmd, env=code_env(st, code), cwd=code, stdout=log,
                                stderr=subprocess.STDOUT)
        try:
            wait_port(lport, timeout=120)
            time.sleep(6)  # worker boot is not part of a job
            yield Gateway(st, log_path, code, proc.pid)
        finally:
            stop_process(proc, timeout=120)
            log.close()
            o._req("DELETE", f"/modalities/gw-{name}")


# --- timeline -----------------------------------------------------------------------------------

_LOG = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) \w+ [\w.]+ Task "
                  r"deidgate\.(\w+)\[([0-9a-f-]+)\] (received|succeeded in ([\d.e-]+)s)")


def _log_tasks(path: Path, since: float) -> dict[str, list[tuple[float, float]]]:
    """{task: [(received, finished)]} of the tasks received after ``since`` (epoch s)."""
    got: dict[str, float] = {}
    done: dict[str, tuple[str, float]] = {}
    for line in path.read_text(errors="replace").splitlines():
        m = _LOG.match(line)
        if not m:
            continue
        at = datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp()
        if m[4] == "received":
            got[m[3]] = at
        else:
            done[m[3]] = (m[2], at)
    out: dict[str, list[tuple[float, float]]] = {}
    for tid, (name, end) in done.items():
        if tid in got and got[tid] >= since - 0.01:
            out.setdefault(name, []).append((got[tid], end))
    return out


def timeline(gw: Gateway, job_id: str, cli_start: float, cli_end: float) -> dict[str, float]:
    """Per-stage seconds of one job (approximate: instances and task log lines are paired in
    order, which is how the queues hand them out)."""
    from service.db.models.dicom import ReceivedInstance
    from service.db.models.jobs import Job, JobInstance

    with get_sessionmaker(gw.settings.db_url)() as s:
        job = s.get(Job, job_id)
        assert job is not None and job.finished_at is not None
        created, finished = job.created_at.timestamp(), job.finished_at.timestamp()
        rows = s.execute(select(ReceivedInstance.received_at, JobInstance.created_at,
                                JobInstance.updated_at)
                         .join(JobInstance, JobInstance.received_id == ReceivedInstance.id)
                         .where(JobInstance.job_id == job_id)).all()
    recv = sorted(r[0].timestamp() for r in rows)
    linked = sorted(r[1].timestamp() for r in rows)
    tasks = _log_tasks(gw.log_path, created)
    res = tasks.get("resolve_job", [])
    ret = sorted(tasks.get("retrieve_study", []))
    deid = sorted(tasks.get("deidentify_instance", []))
    out: dict[str, float] = {"CLI start -> job row committed": created - cli_start}
    if res:
        out["job committed -> resolve task received"] = res[0][0] - created
        out["resolve (C-FIND, studies recorded)"] = res[0][1] - res[0][0]
        if ret:
            out["resolve done -> first retrieve received"] = ret[0][0] - res[0][1]
    if ret:
        out["retrieve task, median per study"] = med([b - a for a, b in ret])
        out["retrieves: first start -> last end"] = max(b for _, b in ret) - ret[0][0]
    if recv:
        out["job committed -> first instance received"] = recv[0] - created
        out["first instance received -> last received"] = recv[-1] - recv[0]
        out["last instance received -> job finished"] = finished - recv[-1]
        out["instance received -> linked (on_stored), median"] = med(
            [b - a for a, b in zip(sorted(r[0].timestamp() for r in rows), linked,
                                   strict=True)])
    if deid and linked:
        out["linked -> deid task received, median"] = med(
            [d[0] - li for d, li in zip(deid, linked, strict=False)])
        out["deid task, median"] = med([b - a for a, b in deid])
        out["last deid task done -> job finished"] = finished - max(b for _, b in deid)
    out["job committed -> job finished"] = finished - created
    out["job finished -> CLI exit"] = cli_end - finished
    return out


# --- CPU per process kind ----------------------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def _kind(pid: int, cmd: str, me: int) -> str | None:
    if pid == me:
        return "bench"
    if "service.cli.main serve" in cmd:
        return "serve (API off, listener leader)"
    if "Orthanc" in cmd and "bench-e2e-" in cmd:
        return "Orthanc"
    if cmd.startswith("storescp") and "REFSCP" in cmd:
        return "storescp"
    if "celery" in cmd and " -Q " in cmd:
        return "worker deid" if " -Q deid." in cmd else "worker default (resolve, retrieve)"
    if "multiprocessing" in cmd:
        return "listener children"
    return None


def cpu_by_kind(serve: int) -> dict[str, float]:
    """CPU seconds (user + system) so far of this process tree and Orthanc, by kind; of the
    gateways, only the one whose ``serve`` process is given (the others idle meanwhile)."""
    me = os.getpid()
    parent: dict[int, int] = {}
    stat: dict[int, tuple[float, str]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            raw = (d / "stat").read_text()
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = raw.rsplit(")", 1)[1].split()
        parent[int(d.name)] = int(fields[1])
        stat[int(d.name)] = ((int(fields[11]) + int(fields[12])) / _TICK, cmd)
    out: dict[str, float] = {}
    for pid, (cpu, _cmd) in stat.items():
        p, kind = pid, None
        while p > 1 and kind is None:  # the nearest ancestor (or itself) with a kind
            kind = _kind(p, stat.get(p, (0.0, ""))[1], me)
            p = parent.get(p, 0)
        chain, q = set(), pid
        while q > 1:
            chain.add(q)
            q = parent.get(q, 0)
        other = any("service.cli.main serve" in stat.get(a, (0.0, ""))[1] and a != serve
                    for a in chain)
        if kind is not None and not other:
            out[kind] = out.get(kind, 0.0) + cpu
    return out


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {k: after[k] - before.get(k, 0.0) for k in after if after[k] - before.get(k, 0.0) > 0}


def _children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


# --- main ---------------------------------------------------------------------------------------

def one_round(o: OrthancPeer, ref: StoreScp, gw: Gateway, base: list[list[Path]],
              args: argparse.Namespace, key: str, rnd: int,
              results: dict[str, dict[str, list[float]]], lines: dict[str, list[dict[str, float]]],
              cpus: dict[str, list[tuple[dict[str, float], dict[str, float]]]]) -> None:
    """New studies into Orthanc, movescu -> storescp, then the gateway's job, side by side."""
    r = results.setdefault(key, {"ref": [], "cli": [], "job": [], "ratio": [], "ratio_job": []})
    tag = uuid.uuid4().hex[:6]
    exams = clone_round(base, Path("/dev/shm") / f"bench-e2e-{tag}", tag)
    try:
        load(o, [f for e in exams for f in e.files])
    finally:
        shutil.rmtree(exams[0].files[0].parent)
    time.sleep(1.5)  # Orthanc's StableAge; let the disk settle
    c0, k0 = cpu_by_kind(gw.pid), _children_cpu()
    t_ref = ref.pull(o, exams)
    c1, k1 = cpu_by_kind(gw.pid), _children_cpu()
    cli_start = time.time()
    t_cli, job_id = gw.submit_wait(exams, args.timeout)
    cli_end = time.time()
    c2, k2 = cpu_by_kind(gw.pid), _children_cpu()
    tl = timeline(gw, job_id, cli_start, cli_end)
    cpu_ref = cpu_delta(c0, c1)
    cpu_ref["movescu"] = k1 - k0
    cpu_gw = cpu_delta(c1, c2)
    cpu_gw["CLI submit --wait"] = k2 - k1
    cpus.setdefault(key, []).append((cpu_ref, cpu_gw))
    t_job = tl["job committed -> job finished"]
    lines.setdefault(key, []).append(tl)
    r["ref"].append(t_ref)
    r["cli"].append(t_cli)
    r["job"].append(t_job)
    r["ratio"].append(t_cli / t_ref)
    r["ratio_job"].append(t_job / t_ref)
    print(f"  {key:<18} round {rnd + 1}: movescu->storescp {t_ref:5.2f} s | job submit --wait "
          f"{t_cli:5.2f} s (job {t_job:5.2f} s) | ratio {t_cli / t_ref:.2f}", flush=True)
    clear_orthanc(o)
    gw.clean_output()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--exams", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--deploy", nargs="+", choices=("embedded", "pg-redis"),
                    default=["embedded", "pg-redis"])
    ap.add_argument("--concurrency", type=int, default=None,
                    help="deid worker processes (default: as `serve`, one per core)")
    ap.add_argument("--j2k", type=float, default=0.5,
                    help="fraction of exams in JPEG 2000 lossless (default 0.5)")
    ap.add_argument("--policy", default="mammography-screening")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--size", default="full", help="'full' (4096x3328) or ROWSxCOLS")
    ap.add_argument("--timeline", action="store_true", help="per-stage breakdown per job")
    ap.add_argument("--code", nargs="+", default=[str(ROOT)],
                    help="source trees to compare in the same run (default: this one); each "
                         "gets its own `deidgate serve` and the same rounds, alternating order")
    ap.add_argument("--cache", default="/var/tmp/deidgate-bench-e2e",
                    help="where the generated exams are kept between runs ('' : not kept)")
    ap.add_argument("--work-dir", default=None, help="default: a temporary folder in /var/tmp")
    args = ap.parse_args()
    rows, cols = FULL if args.size == "full" else map(int, args.size.split("x"))
    with tempfile.TemporaryDirectory(prefix="bench-e2e-", dir=args.work_dir or "/var/tmp") as d:
        tmp = Path(d)
        t = time.perf_counter()
        base = base_exams(args, rows, cols, tmp)
        n_files = sum(len(b) for b in base)
        mb = sum(f.stat().st_size for b in base for f in b) / 1e6
        j2k = sum(1 for b in base if dcmread(b[0], stop_before_pixels=True)
                  .file_meta.TransferSyntaxUID == JPEG2000Lossless)
        print(f"{args.exams} exams ({j2k} JPEG 2000 lossless), {n_files} instances {rows}x{cols}, "
              f"{mb:.0f} MB (ready in {time.perf_counter() - t:.0f} s); {args.rounds} rounds "
              f"per deployment, each on studies new to the gateway", flush=True)
        codes = [(Path(c).resolve(), Path(c).resolve().name if len(args.code) > 1 else "")
                 for c in args.code]
        results: dict[str, dict[str, list[float]]] = {}
        lines: dict[str, list[dict[str, float]]] = {}
        cpus: dict[str, list[tuple[dict[str, float], dict[str, float]]]] = {}
        with orthanc_server(tmp / "orthanc") as o:
            ref = StoreScp(o, tmp)
            try:
                for deploy in args.deploy:
                    with contextlib.ExitStack() as stack:
                        gws = [(f"{deploy}{' ' + label if label else ''}",
                                stack.enter_context(gateway(
                                    o, tmp, deploy=deploy, code=code, label=label or "gw",
                                    ae=f"{GW_AE}{i}", concurrency=args.concurrency,
                                    policy=args.policy)))
                               for i, (code, label) in enumerate(codes)]
                        for rnd in range(args.rounds):
                            # alternate which tree goes first: the page cache and machine noise
                            # then favour none of them
                            order = gws if rnd % 2 == 0 else gws[::-1]
                            for key, gw in order:
                                one_round(o, ref, gw, base, args, key, rnd, results, lines,
                                          cpus)
            finally:
                ref.stop()
    print()
    print(f"{args.exams} exams x {n_files // args.exams} views, medians of {args.rounds} rounds "
          f"(each round: movescu first, then the gateway, on the same new studies)")
    print(f"{'deployment':<20}{'movescu s':>10}{'submit --wait s':>17}{'job s':>8}"
          f"{'ratio':>7}{'ratio (job)':>13}{'exams/h':>9}")
    for deploy, r in results.items():
        print(f"{deploy:<20}{med(r['ref']):>10.2f}{med(r['cli']):>17.2f}{med(r['job']):>8.2f}"
              f"{med(r['ratio']):>7.2f}{med(r['ratio_job']):>13.2f}"
              f"{args.exams / med(r['cli']) * 3600:>9,.0f}")
    print("ratio = submit --wait wall / movescu wall, median of the per-round ratios; "
          "ratio (job) leaves out the CLI's own start-up and exit (job row -> job finished)")
    if args.timeline:
        for deploy, tls in lines.items():
            print(f"\nwhere the time goes, {deploy} (median over rounds, seconds)")
            for k in tls[0]:
                print(f"  {k:<50}{med([t[k] for t in tls if k in t]):7.3f}")
            print(f"CPU seconds per round, {deploy} (median; {os.cpu_count()} cores, shared)")
            for side, idx in (("movescu -> storescp", 0), ("gateway", 1)):
                kinds = sorted({k for c in cpus[deploy] for k in c[idx]})
                total = med([sum(c[idx].values()) for c in cpus[deploy]])
                print(f"  {side}: total {total:.2f}")
                for k in kinds:
                    print(f"    {k:<46}{med([c[idx].get(k, 0.0) for c in cpus[deploy]]):7.2f}")


if __name__ == "__main__":
    main()
