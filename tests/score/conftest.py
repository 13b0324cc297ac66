"""Model folders for the scoring tests: a tiny random ResNet (fast) and the demo model (trained
once per session on synthetic exams; several minutes on 2 CPU cores)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from tests.jobs.conftest import jobs_db  # noqa: F401 - the scoring tests' job database
from workers.score.card import Architecture, InputSize, ModelCard, Output, Thresholds
from workers.score.models import build_network, save_model

TINY_KWARGS = {"block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [8, 16, 32, 64],
               "conv1_t_size": 5, "conv1_t_stride": 2}


def tiny_card(rows: int = 64, cols: int = 52, **changes: object) -> ModelCard:
    card = ModelCard(
        name="tiny", version="1", device_uid="2.25.1", synthetic_demo=False,
        weights={"file": "model.pt", "sha256": "0" * 64},  # type: ignore[arg-type]
        architecture=Architecture(kind="monai", network="ResNet",  # type: ignore[arg-type]
                                  kwargs=TINY_KWARGS, input=InputSize(rows=rows, cols=cols)),
        output=Output(meaning="test score of a randomly initialised network"),
        thresholds=Thresholds(likely_normal_below=0.3, priority_at_or_above=0.7),
        intended_use="unit tests of the scoring machinery",
        training_data="none: random initialisation (seed 0)",
    )
    return card.model_copy(update=changes)


def make_tiny_model(folder: Path, seed: int = 0, **changes: object) -> ModelCard:
    card = tiny_card(**changes)
    torch.manual_seed(seed)
    net = build_network(card.architecture, card.output)
    return save_model(net, card, folder)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tiny") / "model"
    make_tiny_model(folder)
    return folder


@pytest.fixture(scope="session")
def demo_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder holding the trained demo model (trained here, once per session)."""
    from synthetic.demo_model import ensure_demo_model

    home = tmp_path_factory.mktemp("demo-home")
    t0 = time.perf_counter()
    result = ensure_demo_model(home)
    assert result.trained
    print(f"\ndemo model trained in {time.perf_counter() - t0:.0f} s")
    return home
