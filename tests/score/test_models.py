"""Model folders: MONAI networks (never pretrained) and TorchScript, hash-checked before load."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from tests.score.conftest import make_tiny_model, tiny_card
from workers.score.card import (
    Architecture,
    InputSize,
    ModelCardError,
    Network,
    Output,
    load_card,
    write_card,
)
from workers.score.models import build_network, export_torchscript, load_model


def _probe(rows: int = 64, cols: int = 52) -> torch.Tensor:
    return torch.randn(3, 1, rows, cols, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize(("network", "kwargs"), [
    (Network.EfficientNetBN, {"model_name": "efficientnet-b0"}),
    (Network.DenseNet121, {"init_features": 8, "growth_rate": 4, "block_config": [1, 1, 1, 1]}),
    (Network.ResNet, {"block": "basic", "layers": [1, 1, 1, 1], "block_inplanes": [4, 8, 8, 8]}),
    (Network.SEResNet50, {"layers": [1, 1, 1, 1], "inplanes": 16}),
])
def test_every_card_network_builds_without_weights_and_scores(network: Network,
                                                              kwargs: dict) -> None:
    arch = Architecture(kind="monai", network=network, kwargs=kwargs,
                        input=InputSize(rows=64, cols=64))
    net = build_network(arch, Output(meaning="a test output of one logit")).eval()
    with torch.inference_mode():
        assert net(_probe(64, 64)).shape == (3, 1)


def test_unknown_kwargs_are_refused_naming_them() -> None:
    arch = Architecture(kind="monai", network=Network.ResNet,
                        kwargs={"block": "basic", "layers": [1, 1, 1, 1],
                                "block_inplanes": [4, 8, 8, 8], "dropout": 0.5},
                        input=InputSize(rows=64, cols=64))
    with pytest.raises(ModelCardError, match="does not take dropout"):
        build_network(arch, Output(meaning="a test output of one logit"))


def test_save_and_load_give_the_same_network(tmp_path: Path) -> None:
    card = make_tiny_model(tmp_path / "m", seed=3)
    assert load_card(tmp_path / "m") == card
    assert card.device_uid.startswith("2.25.") and card.weights.sha256 != "0" * 64
    torch.manual_seed(3)
    ref = build_network(card.architecture, card.output).eval()
    loaded = load_model(tmp_path / "m")
    with torch.inference_mode():
        assert torch.equal(loaded.module(_probe()), ref(_probe()))
    assert loaded.identity.sha256 == card.weights.sha256
    other = make_tiny_model(tmp_path / "m2", seed=4)
    assert other.device_uid != card.device_uid   # new weights: a new Device UID


def test_tampered_weights_refuse_to_load(tmp_path: Path) -> None:
    card = make_tiny_model(tmp_path / "m")
    weights = tmp_path / "m" / "model.pt"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ModelCardError, match=rf"expected {card.weights.sha256[:12]}.*refusing"):
        load_model(tmp_path / "m")


def test_weights_of_another_architecture_are_refused(tmp_path: Path) -> None:
    make_tiny_model(tmp_path / "m")
    card = load_card(tmp_path / "m")
    kwargs = {**card.architecture.kwargs, "block_inplanes": [4, 8, 16, 32]}
    wrong = card.model_copy(update={"architecture": card.architecture.model_copy(
        update={"kwargs": kwargs})})
    write_card(wrong, tmp_path / "m")
    with pytest.raises(ModelCardError, match=r"do not fit|refused"):
        load_model(tmp_path / "m")


@pytest.mark.parametrize("network", ["ResNet", "EfficientNetBN"])
def test_torchscript_export_scores_like_the_source(tmp_path: Path, network: str) -> None:
    if network == "ResNet":
        make_tiny_model(tmp_path / "src")
    else:
        card = tiny_card().model_copy(update={"architecture": Architecture(
            kind="monai", network=Network.EfficientNetBN,
            kwargs={"model_name": "efficientnet-b0"}, input=InputSize(rows=64, cols=64))})
        torch.manual_seed(0)
        from workers.score.models import save_model

        save_model(build_network(card.architecture, card.output), card, tmp_path / "src")
    exported = export_torchscript(tmp_path / "src", tmp_path / "ts")
    src = load_card(tmp_path / "src")
    assert exported.architecture.kind == "torchscript"
    assert exported.weights.file == "model.ts" and exported.device_uid != src.device_uid
    a, b = load_model(tmp_path / "src"), load_model(tmp_path / "ts")
    assert isinstance(b.module, torch.jit.ScriptModule)
    size = src.architecture.input
    with torch.inference_mode():
        assert torch.allclose(a.module(_probe(size.rows, size.cols)),
                              b.module(_probe(size.rows, size.cols)), atol=1e-5)
    with pytest.raises(ModelCardError, match="already a TorchScript"):
        export_torchscript(tmp_path / "ts", tmp_path / "ts2")
    shutil.copy(tmp_path / "src" / "model.pt", tmp_path / "ts" / "model.ts")
    with pytest.raises(ModelCardError, match="do not match"):
        load_model(tmp_path / "ts")
