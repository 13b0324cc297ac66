"""De-identification throughput on one core versus a plain pydicom read + write of the same files.

The issue's bar: for full-size mammograms (4096 x 3328, 16-bit, ~27 MB), uncompressed and JPEG
2000 lossless, that need no pixel change, deidgate's throughput on one core is at least 90% of
``pydicom.dcmread`` + ``dcmwrite`` of the same files. With burned-in text to blank: at most one
decode plus one encode.

What it does: generates N full-size synthetic mammograms per category (uncompressed / JPEG 2000
lossless, text-free / with burned-in text) into a work folder, then for R rounds, interleaved,
runs each variant over each category in a *fresh* worker process pinned to CPU 0:

  pydicom        dcmread + dcmwrite (the reference the issue names)
  pydicom+fsync  the same plus fsync, i.e. as durable as deidgate's write
  deidgate       Deidentifier(load_policy("mammography-screening"), keys).deidentify + .write
                 (temp file, fsync, atomic rename, directory fsync)
  deidgate-nopix the same with the pixel check switched off: what the header work and the
                 write path cost on their own, so the pixel stage's share can be read off

Each worker does one untimed warm-up call, times every file, and reports its peak RSS
(``resource.getrusage(RUSAGE_SELF).ru_maxrss``). The parent prints medians, files/s, MB/s and the
throughput ratio deidgate / pydicom per category.

    .venv/bin/python benchmarks/bench_deid.py              # N=3, R=3, output on /dev/shm
    .venv/bin/python benchmarks/bench_deid.py --n 4 --rounds 5 --out-dir /var/tmp/x   # on disk
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

J2K = "1.2.840.10008.1.2.4.90"
CATEGORIES = {
    "uncompressed": ("1.2.840.10008.1.2.1", None),
    "uncompressed+text": ("1.2.840.10008.1.2.1", "ØDEGÅRD^ÅSE KRISTINE 12057847391"),
    "j2k-lossless": (J2K, None),
    "j2k-lossless+text": (J2K, "ØDEGÅRD^ÅSE KRISTINE 12057847391"),
}
VARIANTS = ("pydicom", "pydicom+fsync", "deidgate", "deidgate-nopix")


# ---------------------------------------------------------------- worker (fresh process)


def _worker(variant: str, files: list[Path], out_dir: Path, key: Path) -> dict[str, object]:
    os.sched_setaffinity(0, {0})
    out_dir.mkdir(parents=True, exist_ok=True)
    pixel: list[dict[str, object]] = []
    if variant.startswith("pydicom"):
        import pydicom

        sync = variant.endswith("fsync")

        def op(src: Path, dst: Path) -> None:
            ds = pydicom.dcmread(src)
            with dst.open("wb") as f:
                pydicom.dcmwrite(f, ds)
                if sync:
                    f.flush()
                    os.fsync(f.fileno())
    else:
        import dataclasses

        from service.core.keys import SiteKeys
        from workers.deid.engine import Deidentifier
        from workers.deid.policy import load_policy

        policy = load_policy("mammography-screening")
        if variant.endswith("nopix"):
            policy = dataclasses.replace(policy, pixels={"mode": "off"})
        deid = Deidentifier(policy, SiteKeys.load(key))

        def op(src: Path, dst: Path) -> None:
            outcome = deid.deidentify(src)
            deid.write(outcome, dst)
            p = outcome.pixel
            if p is not None:
                pixel.append({"action": p.action, "decode": p.decode_count,
                              "encode": p.encode_count, "regions": len(p.regions)})

    op(files[0], out_dir / "warmup.dcm")
    pixel.clear()
    times = []
    for i, src in enumerate(files):
        t0 = time.perf_counter()
        op(src, out_dir / f"{i}.dcm")
        times.append(time.perf_counter() - t0)
    return {
        "times": times,
        "maxrss_mb": _peak_rss_mb(),
        "pixel": pixel,
        "bytes": [src.stat().st_size for src in files],
    }


def _peak_rss_mb() -> float:
    """Peak RSS of this process image: VmHWM (ru_maxrss would carry the parent's peak across
    fork + exec on Linux, and the parent holds the generated images)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ---------------------------------------------------------------- parent


def _generate(work: Path, n: int) -> dict[str, list[Path]]:
    from synthetic.identity import default_identity
    from synthetic.mammogram import make_mammogram

    out: dict[str, list[Path]] = {}
    for cat, (ts, text) in CATEGORIES.items():
        folder = work / "in" / cat
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(n):
            ds = make_mammogram(full_size=True, transfer_syntax=ts, burned_in_text=text,
                                identity=default_identity(i), view=("CC", "MLO")[i % 2],
                                laterality=("L", "R")[(i // 2) % 2], text_height=40)
            path = folder / f"{ds.SOPInstanceUID}.dcm"
            ds.save_as(path, enforce_file_format=True)
            paths.append(path)
        out[cat] = paths
        print(f"  generated {n} x {cat} ({paths[0].stat().st_size / 1e6:.1f} MB each)",
              flush=True)
    return out


def _spawn(variant: str, files: list[Path], out_dir: Path, key: Path) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--worker", variant, "--out-dir", str(out_dir),
           "--key", str(key), "--files", *map(str, files)]
    res = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=ROOT)
    if res.returncode != 0:
        raise SystemExit(f"worker {variant} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=3, help="files per category")
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds")
    ap.add_argument("--out-dir", type=Path, default=None,
                    help="where outputs are written (default /dev/shm, else the work folder)")
    ap.add_argument("--work", type=Path, default=None, help="keep inputs here (default: temp)")
    ap.add_argument("--categories", nargs="*", default=list(CATEGORIES))
    ap.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--files", nargs="*", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--key", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--generate", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.generate:
        _generate(args.generate, args.n)
        return

    if args.worker:
        print(json.dumps(_worker(args.worker, args.files, args.out_dir, args.key)))
        return

    work = args.work or Path(tempfile.mkdtemp(prefix="bench-deid-"))
    shm = Path("/dev/shm")
    out_root = args.out_dir or (Path(tempfile.mkdtemp(prefix="bench-deid-out-", dir=shm))
                                if shm.is_dir() else work / "out")
    from service.core.keys import SiteKeys

    key = work / "site.key"
    SiteKeys.load(key)
    print(f"python {sys.version.split()[0]}, pinned to CPU 0, {os.cpu_count()} CPUs on host")
    print(f"inputs in {work}, outputs in {out_root}")
    gen = subprocess.run([sys.executable, __file__, "--generate", str(work), "--n", str(args.n)],
                         check=False, cwd=ROOT)
    if gen.returncode != 0:
        raise SystemExit("generating the images failed")
    files = {cat: sorted((work / "in" / cat).glob("*.dcm")) for cat in CATEGORIES}
    results: dict[tuple[str, str], list[dict[str, object]]] = {}
    for r in range(args.rounds):
        for cat in args.categories:
            for variant in VARIANTS:
                res = _spawn(variant, files[cat], out_root / variant / cat, key)
                results.setdefault((cat, variant), []).append(res)
        print(f"  round {r + 1}/{args.rounds} done", flush=True)

    print()
    print(f"{'category':20} {'variant':14} {'median ms':>9} {'files/s':>8} {'MB/s':>7} "
          f"{'peak RSS MB':>11}")
    summary: dict[str, dict[str, float]] = {}
    for cat in args.categories:
        for variant in VARIANTS:
            runs = results[(cat, variant)]
            times = [t for run in runs for t in run["times"]]  # type: ignore[attr-defined]
            size = statistics.median(b for run in runs for b in run["bytes"])  # type: ignore[attr-defined]
            med = statistics.median(times)
            rss = max(float(run["maxrss_mb"]) for run in runs)  # type: ignore[arg-type]
            summary.setdefault(cat, {})[variant] = med
            print(f"{cat:20} {variant:14} {med * 1000:9.1f} {1 / med:8.2f} "
                  f"{size / med / 1e6:7.0f} {rss:11.0f}")
        pix = [p for run in results[(cat, "deidgate")] for p in run["pixel"]]  # type: ignore[attr-defined]
        actions = sorted({str(p["action"]) for p in pix})
        dec = max((int(p["decode"]) for p in pix), default=0)
        enc = max((int(p["encode"]) for p in pix), default=0)
        print(f"{'':20} pixels: {'/'.join(actions)}; max decodes {dec}, max encodes {enc} "
              "per file")
    print()
    print("throughput ratio deidgate / reference (target >= 0.90 for text-free images):")
    for cat, s in summary.items():
        print(f"  {cat:20} vs pydicom: {s['pydicom'] / s['deidgate']:.2f}   "
              f"vs pydicom+fsync: {s['pydicom+fsync'] / s['deidgate']:.2f}   "
              f"(pixel check off: {s['pydicom'] / s['deidgate-nopix']:.2f}; pixel stage "
              f"{(s['deidgate'] - s['deidgate-nopix']) * 1000:+.1f} ms/file)")
    if args.work is None:
        shutil.rmtree(work, ignore_errors=True)
    if args.out_dir is None:
        shutil.rmtree(out_root, ignore_errors=True)


if __name__ == "__main__":
    main()
