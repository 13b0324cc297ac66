"""Receive throughput of the gateway's listener vs dcmtk's storescp, same files, same run.

Full-size synthetic mammograms (4096 x 3328, 16-bit, ~27 MB uncompressed; and JPEG 2000
lossless) are sent by dcmtk ``storescu`` to (a) dcmtk ``storescp`` writing into a temporary folder
and (b) our listener (durable writes: fsync + atomic rename + database record), alternating
receiver on every repetition. Then 4 concurrent ``storescu`` senders (distinct instances) go to
each receiver (``storescp --fork``, a process per association; plain ``storescp``, one at a time;
the listener), and the listener's records are checked: no instance lost. The listener runs as
``--processes`` processes sharing the port (default: the ``listener_processes`` setting, as
``deidgate listen`` and ``serve`` use it), in child processes so their resident memory (idle,
peak, summed over the group) can be read from /proc.

Run: .venv/bin/python benchmarks/bench_listener.py [--files 8] [--reps 5] [--concurrent 4]
     [--processes N]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, generate_uid  # noqa: E402

from tests.peers.dcmtk import storescp, storescu  # noqa: E402
from tests.peers.net import free_port, wait_port  # noqa: E402

SERVE = r"""
import sys, signal, threading
from pathlib import Path
from service.db.migrate import upgrade
from service.core.keys import SiteKeys
from service.db.session import session_scope
from service.dicom import admin
from service.dicom.listener import ListenerConfig
from service.dicom.listener_group import ListenerGroup
from service.dicom.spool import Spool
d, port, processes = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
url = f"sqlite:///{d / 'db.sqlite'}"
upgrade(url)
keys = SiteKeys.load(d / "keys" / "site.key")
with session_scope(url) as s:
    for i in range(8):
        admin.allow(s, f"BENCH{i}")
listener = ListenerGroup(ListenerConfig(ae_title="DEIDGATE", host="127.0.0.1", port=port,
                                        max_pdu=int(sys.argv[3])),
                         db_url=url, keys=keys, spool=Spool(d / "spool"),
                         processes=processes).start()
stop = threading.Event()
signal.signal(signal.SIGTERM, lambda *a: stop.set())
print("ready", *(p.pid for p in listener.children), flush=True)
stop.wait()
listener.stop()
"""


def make_files(folder: Path, n: int, transfer_syntax: str) -> list[Path]:
    """One full-size view, cloned under new UIDs (network and disk work is per byte)."""
    from synthetic.mammogram import make_mammogram_with_truth

    folder.mkdir(parents=True, exist_ok=True)
    ds, _ = make_mammogram_with_truth(full_size=True, transfer_syntax=transfer_syntax)
    study = generate_uid()
    out = []
    for i in range(n):
        ds.StudyInstanceUID = study
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        p = folder / f"img{i:03d}.dcm"
        ds.save_as(p, enforce_file_format=True)
        out.append(p)
    return out


def rss_kib(pids: list[int]) -> tuple[int, int]:
    """(current, peak) resident set size summed over processes, KiB."""
    cur = peak = 0
    for pid in pids:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                cur += int(line.split()[1])
            elif line.startswith("VmHWM:"):
                peak += int(line.split()[1])
    return cur, peak


def reset_peak(pids: list[int]) -> None:
    for pid in pids:
        with contextlib.suppress(OSError):  # needs privileges; the peak is then since start
            Path(f"/proc/{pid}/clear_refs").write_text("5")


class ListenerProc:
    def __init__(self, folder: Path, max_pdu: int, processes: int) -> None:
        self.folder = folder
        self.port = free_port()
        folder.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", SERVE, str(folder), str(self.port), str(max_pdu),
             str(processes)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        words = self.proc.stdout.readline().split()
        if not words or words[0] != "ready":
            raise RuntimeError("listener did not start")
        self.pids = [self.proc.pid, *map(int, words[1:])]
        wait_port(self.port)

    def records(self) -> int:
        with sqlite3.connect(self.folder / "db.sqlite") as c:
            return int(c.execute("SELECT count(*) FROM dicom_received_instances").fetchone()[0])

    def reset(self) -> None:
        """Forget received instances so the same files are stored again (not deduplicated)."""
        with sqlite3.connect(self.folder / "db.sqlite", timeout=30) as c:
            c.execute("DELETE FROM dicom_received_instances")
        for p in (self.folder / "spool").iterdir():
            p.unlink()

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def send(port: int, files: list[Path], called: str, calling: str, extra: list[str]) -> float:
    os.sync()  # start each timed run without the other receiver's dirty pages still flushing
    t0 = time.perf_counter()
    r = storescu(port, files, calling=calling, called=called, extra=extra, timeout=600)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"storescu failed: {r.stderr[-400:]}")
    return dt


def send_concurrent(port: int, groups: list[list[Path]], called: str,
                    extra: list[str]) -> float:
    errors: list[str] = []

    def one(i: int) -> None:
        r = storescu(port, groups[i], calling=f"BENCH{i}", called=called, extra=extra,
                     timeout=600)
        if r.returncode != 0:
            errors.append(r.stderr[-300:])

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(groups))]
    os.sync()
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    dt = time.perf_counter() - t0
    if errors:
        raise RuntimeError(f"storescu failed: {errors[0]}")
    return dt


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=8, help="files per kind per sender")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--concurrent", type=int, default=4)
    ap.add_argument("--max-pdu", type=int, default=1_048_576, help="listener's max PDU")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--processes", type=int, default=None,
                    help="listener processes (default: the listener_processes setting)")
    args = ap.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-listener-"))
    try:
        run(work, args)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


def run(work: Path, args: argparse.Namespace) -> None:
    t0 = time.perf_counter()
    kinds = {
        "uncompressed": (make_files(work / "u", args.files * args.concurrent,
                                    ExplicitVRLittleEndian), []),
        "jpeg2000-lossless": (make_files(work / "j", args.files, JPEG2000Lossless), ["-xv"]),
    }
    print(f"generated files in {time.perf_counter() - t0:.1f} s; {os.cpu_count()} CPUs",
          flush=True)
    from service.core.config import Settings
    from service.dicom.listener_group import resolve_processes

    procs = resolve_processes(Settings().listener_processes if args.processes is None
                              else args.processes)
    listener = ListenerProc(work / "listener", args.max_pdu, procs)
    rows: list[tuple[str, str, float, float, int, float, str]] = []
    try:
        idle_rss, _ = rss_kib(listener.pids)
        for kind, (files, extra) in kinds.items():
            files = files[: args.files]
            mb = sum(p.stat().st_size for p in files) / 1e6
            times: dict[str, list[float]] = {"storescp": [], "listener": []}
            for rep in range(args.reps):
                order = ["storescp", "listener"] if rep % 2 == 0 else ["listener", "storescp"]
                for who in order:
                    if who == "storescp":
                        out = work / "scp" / kind / str(rep)
                        with storescp(out) as port:
                            times[who].append(send(port, files, "STORESCP", "BENCH0", extra))
                        shutil.rmtree(out, ignore_errors=True)
                    else:
                        listener.reset()
                        times[who].append(send(listener.port, files, "DEIDGATE", "BENCH0",
                                               extra))
                        if listener.records() != len(files):
                            raise RuntimeError("listener lost an instance")
            for who in ("storescp", "listener"):
                med = statistics.median(times[who])
                rows.append((kind, who, mb / med, len(files) / med, 1, med,
                             f"{mb / max(times[who]):.0f}-{mb / min(times[who]):.0f}"))
        # concurrent senders, distinct instances
        files = kinds["uncompressed"][0]
        groups = [files[i * args.files:(i + 1) * args.files] for i in range(args.concurrent)]
        mb = sum(p.stat().st_size for p in files) / 1e6
        conc: dict[str, list[float]] = {"storescp --fork": [], "storescp": [], "listener": []}
        peak_rss = 0
        for rep in range(args.reps):
            for who, fork in (("storescp --fork", ["--fork"]), ("storescp", [])):
                out = work / "scp-conc" / str(rep)
                port = free_port()
                out.mkdir(parents=True, exist_ok=True)
                proc = subprocess.Popen(["storescp", *fork, "+B", "-aet", "STORESCP", "-od",
                                         str(out), str(port)], stdout=subprocess.DEVNULL,
                                        stderr=subprocess.DEVNULL)
                try:
                    wait_port(port)
                    conc[who].append(send_concurrent(port, groups, "STORESCP", []))
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)
                    shutil.rmtree(out, ignore_errors=True)
            listener.reset()
            reset_peak(listener.pids)
            sampling = threading.Event()
            peaks: list[int] = []

            def sample(stop: threading.Event, out: list[int]) -> None:
                while not stop.is_set():
                    out.append(rss_kib(listener.pids)[0])
                    time.sleep(0.01)

            sampler = threading.Thread(target=sample, args=(sampling, peaks))
            sampler.start()
            conc["listener"].append(send_concurrent(listener.port, groups, "DEIDGATE", []))
            sampling.set()
            sampler.join()
            peak_rss = max(peak_rss, max(peaks), rss_kib(listener.pids)[1])
            got = listener.records()
            if got != len(files):
                raise RuntimeError(f"concurrent: listener recorded {got} of {len(files)}")
        for who, ts in conc.items():
            med = statistics.median(ts)
            rows.append((f"uncompressed x{args.concurrent} senders", who, mb / med,
                         len(files) / med, args.concurrent, med,
                         f"{mb / max(ts):.0f}-{mb / min(ts):.0f}"))
    finally:
        listener.stop()

    print()
    print(f"{'files':<26} {'receiver':<16} {'MB/s':>8} {'files/s':>8} {'senders':>8} "
          f"{'median s':>9} {'ratio':>7} {'MB/s range':>12}")
    ref: dict[str, float] = {}
    for kind, who, mbs, fps, n, med, spread in rows:
        if who.startswith("storescp") and kind not in ref:  # storescp --fork where it ran
            ref[kind] = mbs
        ratio = mbs / ref[kind] if kind in ref else float("nan")
        print(f"{kind:<26} {who:<16} {mbs:>8.1f} {fps:>8.2f} {n:>8} {med:>9.3f} {ratio:>7.2f} "
              f"{spread:>12}")
    single = next(m for k, w, m, *_ in rows if k == "uncompressed" and w == "storescp")
    conc_l = next(m for k, w, m, *_ in rows if "senders" in k and w == "listener")
    conc_single = next(m for k, w, m, *_ in rows if "senders" in k and w == "storescp")
    print(f"listener ({procs} process{'es' if procs > 1 else ''}) with {args.concurrent} "
          f"senders vs storescp --fork: {conc_l / ref[rows[-1][0]]:.2f}; vs plain storescp "
          f"(one association at a time): {conc_l / conc_single:.2f}; vs storescp "
          f"single-sender: {conc_l / single:.2f}")
    print()
    extra_mib = max(0, peak_rss - idle_rss) / 1024
    print(f"listener RSS ({procs} processes, summed) idle {idle_rss / 1024:.0f} MiB, peak with "
          f"{args.concurrent} concurrent "
          f"associations {peak_rss / 1024:.0f} MiB -> {extra_mib / args.concurrent:.0f} MiB per "
          f"association (27 MB instances, max PDU {args.max_pdu})")
    print(f"repetitions: {args.reps} (single sender, receivers alternating), {args.reps} "
          "(concurrent); ratio = listener MB/s / storescp MB/s (medians); no instance lost "
          "(records checked after every run)")


if __name__ == "__main__":
    main()
