"""The demo model: trained by the project itself, on the CPU, in a few minutes; cached.

No clinical model may be pretended and no weights can be downloaded, so ``deidgate demo`` and the
tests use a model that this module trains with ``workers.score.train`` on synthetic exams with
synthetic lesions (``synthetic/lesions.py``). It proves that the machinery (preprocessing,
training, the split by woman, scoring, aggregation, the card) learns; it proves nothing about
medicine, and its card, like every place that shows it, says "synthetic demo model, not for
clinical use".

Cached in the data folder, ``HOME/models/demo/<DEMO_VERSION>/`` (card.yaml + model.pt, sha256 in
the card); a second call verifies the hash and reuses it. A file lock keeps two processes from
training at once; the folder appears by an atomic rename, complete or not at all. Seeds are fixed:
the same version trains the same exams in the same order.
"""

from __future__ import annotations

import fcntl
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from synthetic.lesions import LesionExam, make_lesion_dataset, write_lesion_dataset
from workers.score.card import DEMO_NOTICE, ModelCardError, load_card, verify_weights
from workers.score.train import TrainConfig, train

DEMO_VERSION = "1"
DEMO_NAME = "deidgate-demo"
TRAIN_WOMEN = range(0, 520)
SOURCE_ROWS, SOURCE_COLS = 240, 196  # synthetic images this size: fast to make, lesions visible
HELD_OUT_START = 100_000  # held-out women: indices never used for training


@dataclass(frozen=True)
class DemoModel:
    folder: Path
    trained: bool     # False: reused from the cache
    seconds: float
    val_auc: float | None


def demo_config(threads: int | None = None) -> TrainConfig:
    return TrainConfig(
        name=DEMO_NAME, version=DEMO_VERSION, rows=192, cols=156, epochs=16, batch_size=16,
        lr=2e-3, val_fraction=0.1, seed=20240315, synthetic_demo=True, device="cpu",
        threads=threads,
        intended_use=f"Demonstration and tests of deidgate's scoring pipeline only: "
                     f"{DEMO_NOTICE}.",
    )


def demo_model_dir(home: Path) -> Path:
    return Path(home) / "models" / "demo" / DEMO_VERSION


def _usable(folder: Path) -> bool:
    try:
        card = load_card(folder)
        verify_weights(card, folder)
    except ModelCardError:
        return False
    return card.synthetic_demo and card.name == DEMO_NAME and card.version == DEMO_VERSION


def held_out_exams(n: int, *, start: int = HELD_OUT_START) -> list[LesionExam]:
    """Exams of women never seen in training (prevalence 0.5)."""
    return make_lesion_dataset(range(start, start + n), seed=1, rows=SOURCE_ROWS,
                               cols=SOURCE_COLS)


def ensure_demo_model(home: Path, *, progress: bool = False, women: range = TRAIN_WOMEN,
                      config: TrainConfig | None = None) -> DemoModel:
    """The cached demo model folder, trained first when absent or not matching its card."""
    final = demo_model_dir(home)
    t0 = time.perf_counter()
    if _usable(final):
        return DemoModel(final, False, time.perf_counter() - t0, None)
    final.parent.mkdir(parents=True, exist_ok=True)
    with (final.parent / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _usable(final):  # another process trained it while we waited
            return DemoModel(final, False, time.perf_counter() - t0, None)
        with tempfile.TemporaryDirectory(dir=final.parent, prefix=".build-") as tmp:
            data = Path(tmp) / "data"
            labels = write_lesion_dataset(data, make_lesion_dataset(
                women, seed=0, rows=SOURCE_ROWS, cols=SOURCE_COLS))
            result = train(data, labels, Path(tmp) / "run", config or demo_config(),
                           progress=progress)
            shutil.copy(Path(tmp) / "run" / "train_log.jsonl", result.model_dir)
            if final.exists():
                shutil.rmtree(final)
            result.model_dir.rename(final)
    return DemoModel(final, True, time.perf_counter() - t0, result.best_val_auc)
