"""Load a model folder (``card.yaml`` + weights), save one, export one to TorchScript.

A model is either a TorchScript file or a MONAI network (``monai.networks.nets``, pure PyTorch, no
torchvision) plus a state_dict. MONAI networks are always built with ``pretrained=False``: some
default to downloading ImageNet weights, and nothing here may download anything. The weights are
checked against the card's sha256 *before* they are deserialised, and state_dicts are read with
``weights_only=True`` (no pickled code runs).
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from workers.score.card import (
    Architecture,
    ModelCard,
    ModelCardError,
    Network,
    Output,
    device_uid_for,
    file_sha256,
    load_card,
    verify_weights,
    write_card,
)

STATE_DICT_FILE = "model.pt"
TORCHSCRIPT_FILE = "model.ts"


@dataclass(frozen=True)
class ModelIdentity:
    """What every score carries (IHE AI Results: the Device UID names the exact model)."""

    name: str
    version: str
    sha256: str
    device_uid: str
    synthetic_demo: bool
    display_name: str

    @classmethod
    def of(cls, card: ModelCard) -> ModelIdentity:
        return cls(card.name, card.version, card.weights.sha256, card.device_uid,
                   card.synthetic_demo, card.display_name)


@dataclass
class LoadedModel:
    card: ModelCard
    folder: Path
    module: nn.Module
    device: torch.device

    @property
    def identity(self) -> ModelIdentity:
        return ModelIdentity.of(self.card)


def build_network(arch: Architecture, output: Output) -> nn.Module:
    """The card's MONAI network, freshly initialised, never pretrained."""
    if arch.network is None:
        raise ModelCardError("architecture names no MONAI network")
    from monai.networks import nets

    cls = getattr(nets, arch.network.value)
    c, n = arch.input.channels, output.num_outputs
    fixed: dict[str, Any]
    if arch.network == Network.ResNet:
        fixed = {"spatial_dims": 2, "n_input_channels": c, "num_classes": n}
    elif arch.network == Network.DenseNet121:
        fixed = {"spatial_dims": 2, "in_channels": c, "out_channels": n, "pretrained": False}
    else:  # EfficientNetBN, SEResNet50/101/152
        fixed = {"spatial_dims": 2, "in_channels": c, "num_classes": n, "pretrained": False}
    accepted = set(inspect.signature(cls).parameters)
    for base in cls.__mro__[1:]:
        if base is nn.Module:
            break
        accepted |= set(inspect.signature(base.__init__).parameters)
    unknown = sorted(set(arch.kwargs) - accepted)
    if unknown:
        raise ModelCardError(f"architecture.kwargs: {arch.network.value} does not take "
                             f"{', '.join(unknown)}")
    try:
        return cls(**{**arch.kwargs, **fixed})  # type: ignore[no-any-return]
    except (TypeError, ValueError, KeyError) as exc:
        raise ModelCardError(f"architecture: {arch.network.value} refused its kwargs "
                             f"({type(exc).__name__}: {exc})") from None


def scores_from_logits(logits: torch.Tensor, output: Output) -> torch.Tensor:
    """One float per image: what the card's ``output.meaning`` describes."""
    logits = logits.float().reshape(logits.shape[0], -1)
    if output.activation == "softmax":
        return torch.softmax(logits, dim=1)[:, output.positive_index]
    col = logits[:, output.positive_index]
    return torch.sigmoid(col) if output.activation == "sigmoid" else col


def load_model(folder: Path, device: str | torch.device = "cpu") -> LoadedModel:
    """Card, hash check, network, weights; eval mode, on ``device`` (channels_last on CUDA)."""
    folder = Path(folder)
    card = load_card(folder)
    path = verify_weights(card, folder)
    dev = torch.device(device)
    module: nn.Module
    if card.architecture.kind == "torchscript":
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=DeprecationWarning,
                                        module=r"torch\.jit")
                module = torch.jit.load(str(path), map_location=dev)
        except RuntimeError:
            raise ModelCardError(f"{folder}: {card.weights.file!r} is not a TorchScript "
                                 "file") from None
    else:
        module = build_network(card.architecture, card.output)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # pickle errors of every kind: refuse, say which file
            raise ModelCardError(f"{folder}: {card.weights.file!r} is not a state_dict") from None
        try:
            result = module.load_state_dict(state, strict=False)
        except RuntimeError:  # shapes differ: the card names another network size
            raise ModelCardError(f"{folder}: weights do not fit {card.architecture.network} "
                                 "as the card configures it (parameter shapes differ)") from None
        if result.missing_keys or result.unexpected_keys:
            raise ModelCardError(
                f"{folder}: weights do not fit {card.architecture.network}: "
                f"{len(result.missing_keys)} missing, {len(result.unexpected_keys)} unexpected "
                "parameters")
        module.to(dev)
    module.eval()
    if dev.type == "cuda":
        module.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return LoadedModel(card, folder, module, dev)


def save_model(module: nn.Module, card: ModelCard, folder: Path) -> ModelCard:
    """Write the state_dict and a card whose sha256 and Device UID are those of these weights."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    weights = folder / STATE_DICT_FILE
    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    torch.save(state, weights)
    return _finish_card(card, folder, weights, "monai")


def _finish_card(card: ModelCard, folder: Path, weights: Path, kind: str) -> ModelCard:
    digest = file_sha256(weights)
    data = card.model_dump()
    data["weights"] = {"file": weights.name, "sha256": digest}
    data["device_uid"] = device_uid_for(digest, card.name, card.version)
    data["architecture"]["kind"] = kind
    final = ModelCard.model_validate(data)
    write_card(final, folder)
    return final


def export_torchscript(src: Path, dst: Path, *, atol: float = 1e-4) -> ModelCard:
    """TorchScript copy of a MONAI model folder; checked to give the same scores as the source.

    EfficientNetBN's memory-efficient swish is a custom autograd function TorchScript cannot
    compile, hence ``set_swish(memory_efficient=False)`` first (same numbers)."""
    loaded = load_model(src, "cpu")
    if loaded.card.architecture.kind != "monai":
        raise ModelCardError(f"{src}: already a TorchScript model")
    module = loaded.module
    set_swish = getattr(module, "set_swish", None)   # EfficientNetBN only
    if callable(set_swish):
        set_swish(memory_efficient=False)
    with warnings.catch_warnings():
        # torch 2.13 marks TorchScript deprecated; it is still the portable format sites ship
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit")
        scripted = torch.jit.script(module)
    size = loaded.card.architecture.input
    probe = torch.randn(2, size.channels, size.rows, size.cols,
                        generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        want, got = module(probe), scripted(probe)
    if not torch.allclose(want, got, atol=atol, rtol=1e-4):
        raise ModelCardError(f"{src}: TorchScript export differs from the source model")
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst) as tmp:
        out = Path(tmp) / TORCHSCRIPT_FILE
        scripted.save(str(out))  # type: ignore[no-untyped-call]
        shutil.move(out, dst / TORCHSCRIPT_FILE)
    return _finish_card(loaded.card, dst, dst / TORCHSCRIPT_FILE, "torchscript")
