"""DistributedDataParallel, launched as a site would (torchrun), with the gloo backend on 2 CPU
processes: both ranks train on their shard and end with identical weights."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from synthetic.lesions import make_lesion_dataset, write_lesion_dataset
from tests.score.test_train import tiny_config
from workers.score.ddp import DistContext, shard
from workers.score.models import load_model


def test_shard_pads_and_covers_every_index() -> None:
    order = np.arange(11)
    parts = [shard(order, DistContext(r, 3, 0)) for r in range(3)]
    assert [len(p) for p in parts] == [4, 4, 4]
    assert set(np.concatenate(parts)) == set(order)
    assert shard(order, None) is order
    assert DistContext.from_env({"WORLD_SIZE": "1"}) is None
    assert DistContext.from_env({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}) == \
        DistContext(1, 2, 1)


@pytest.mark.timeout(900)
def test_torchrun_two_gloo_processes_end_with_identical_weights(tmp_path: Path) -> None:
    data = tmp_path / "data"
    labels = write_lesion_dataset(data, make_lesion_dataset(range(8), seed=3, rows=160, cols=130))
    cfg = tmp_path / "cfg.json"
    cfg.write_text(tiny_config(epochs=2, workers=1, threads=1).model_dump_json())
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
         "-m", "workers.score.train", str(data), str(labels), str(out),
         "--config", str(cfg)],
        capture_output=True, text=True, timeout=840, env=env, cwd=Path(__file__).parents[2],
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    digests = [(out / f"rank-{r}.sha256").read_text() for r in (0, 1)]
    assert digests[0] == digests[1]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(summary["model"]) == out / "model"
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]          # written once, by rank 0
    model = load_model(out / "model")
    import hashlib

    state = model.module.state_dict()
    assert hashlib.sha256(b"".join(v.cpu().numpy().tobytes()
                                   for v in state.values())).hexdigest() == digests[0]
