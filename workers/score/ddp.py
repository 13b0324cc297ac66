"""Training past one GPU: PyTorch's own DistributedDataParallel, launched with ``torchrun``.

    torchrun --standalone --nproc-per-node 4 -m workers.score.train DATA LABELS OUT
    python -m workers.score.ddp --procs 1 2                # training images/s per process count

``torchrun`` tells each process its rank through the environment; ``DistContext.from_env`` is the
one place that reads it (at the entry point, like the settings object). nccl on CUDA (one GPU
per process, ``LOCAL_RANK``), gloo on the CPU. Gradients are averaged by DDP; BatchNorm buffers are
broadcast from rank 0 at each epoch's end (``sync_buffers``), so every rank evaluates, picks the
same best epoch and ends with bit-identical weights (tests/score/test_ddp.py checks it with gloo on
2 CPU processes). The thesis measured 3.36x on 4 GPUs; published EfficientNet DDP scaling reaches
84-97 % on 8 GPUs: ``benchmark`` reports images/s and the scaling efficiency to compare with.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn


@dataclass(frozen=True)
class DistContext:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DistContext | None:
        """The torchrun variables, or None when this is a single process."""
        if int(env.get("WORLD_SIZE", "1")) <= 1:
            return None
        return cls(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))


def init(ctx: DistContext, device: torch.device) -> torch.device:
    """Join the process group (env:// rendezvous that torchrun set up)."""
    if device.type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
        device = torch.device("cuda", ctx.local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                rank=ctx.rank, world_size=ctx.world_size)
    return device


def wrap(module: nn.Module, device: torch.device) -> nn.Module:
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(module, device_ids=ids)


def shard(indices: np.ndarray, ctx: DistContext | None) -> np.ndarray:
    """This rank's part of an epoch's (already shuffled, same on every rank) order, padded so
    every rank runs the same number of steps (DistributedSampler's rule)."""
    if ctx is None:
        return indices
    per = -(-len(indices) // ctx.world_size)
    padded = np.concatenate([indices, indices[: per * ctx.world_size - len(indices)]])
    return padded[ctx.rank :: ctx.world_size]


def sync_buffers(module: nn.Module, ctx: DistContext | None) -> None:
    """Rank 0's BatchNorm statistics everywhere (each rank saw different batches)."""
    if ctx is None:
        return
    for buf in module.buffers():
        dist.broadcast(buf, src=0)


def mean_across(value: float, ctx: DistContext | None, device: torch.device) -> float:
    if ctx is None:
        return value
    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return float(t.item()) / ctx.world_size


def barrier(ctx: DistContext | None) -> None:
    if ctx is not None:
        dist.barrier()


def finish(ctx: DistContext | None) -> None:
    if ctx is not None and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------- benchmark


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bench_rank(rank: int, world: int, port: int, steps: int, batch: int,
                size: tuple[int, int], threads: int, out: str) -> None:
    from monai.networks.nets import EfficientNetBN

    torch.set_num_threads(threads)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}",
                                rank=rank, world_size=world)
    torch.manual_seed(0)
    net: nn.Module = EfficientNetBN("efficientnet-b0", pretrained=False, spatial_dims=2,
                                    in_channels=1, num_classes=1)
    if world > 1:
        net = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    x = torch.randn(batch, 1, *size)
    y = torch.randint(0, 2, (batch, 1)).float()
    times = []
    for i in range(steps + 1):
        t = time.perf_counter()
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
        if i:  # the first step warms up
            times.append(time.perf_counter() - t)
    if rank == 0:
        Path(out).write_text(json.dumps({"step_s": float(np.median(times))}))
    if world > 1:
        dist.destroy_process_group()


def benchmark(procs: Sequence[int] = (1, 2), *, steps: int = 4, batch: int = 8,
              size: tuple[int, int] = (256, 208),
              cores: int | None = None) -> list[dict[str, float]]:
    """Training images/s of EfficientNetBN-b0 per process count, and the scaling efficiency
    (images/s with n processes / (n x images/s with one)). On a CPU each process gets
    cores // n threads, so the figure shows what the gradient all-reduce costs."""
    import tempfile

    import torch.multiprocessing as mp

    cores = cores or os.cpu_count() or 1
    rows = []
    for n in procs:
        with tempfile.TemporaryDirectory() as tmp:
            out = str(Path(tmp) / "r.json")
            args = (n, _free_port(), steps, batch, size, max(1, cores // n), out)
            mp.start_processes(_bench_rank, args=args, nprocs=n, start_method="spawn")
            step_s = json.loads(Path(out).read_text())["step_s"]
        rows.append({"procs": n, "images_per_s": n * batch / step_s,
                     "per_process": batch / step_s})
    base = rows[0]["images_per_s"] / rows[0]["procs"]
    for r in rows:
        r["efficiency"] = r["images_per_s"] / (r["procs"] * base)
    return rows


# ---------------------------------------------------------------- entry point (torchrun)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m workers.score.ddp",
                                 description="training images/s per process count")
    ap.add_argument("--procs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--size", type=int, nargs=2, default=[256, 208])
    a = ap.parse_args(argv)
    rows = benchmark(a.procs, steps=a.steps, batch=a.batch, size=(a.size[0], a.size[1]))
    for r in rows:
        print(f"procs={r['procs']:.0f} images/s={r['images_per_s']:.2f} "
              f"per-process={r['per_process']:.2f} efficiency={r['efficiency']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
