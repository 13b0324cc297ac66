"""The model registry: which model scores new exams, and the ones before it (for rollback).

Kept in the data folder, ``HOME/models/``:

- ``store/<sha256[:16]>/``: a copy of each registered model folder (card.yaml + weights). The copy
  is what scores, so editing or deleting the folder a model was registered from changes nothing,
  and the card's sha256 is checked again on every load;
- ``registry.json``: ``{"active": key, "history": [older keys, newest first], "models": {key:
  {name, version, sha256, device_uid, demo, registered_at}}}``, written by an atomic rename under
  a file lock.

``settings.score_model`` (a model folder), when set, overrides the registry: a site that manages
its models by configuration gets exactly the folder it names (still hash-checked). No torch here;
``register`` builds the network once (``load_model``) so a folder that cannot score is refused
before it is activated.
"""

from __future__ import annotations

import fcntl
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from service.core.config import Settings
from service.core.fsync import write_durably
from workers.score.card import CARD_FILE, ModelCard, ModelCardError, load_card, verify_weights


class RegistryError(ModelCardError):
    """The registry cannot do what was asked (no model to roll back to, unknown model)."""

    code = "model-registry"


@dataclass(frozen=True)
class RegisteredModel:
    key: str
    folder: Path
    card: ModelCard
    registered_at: str
    active: bool


def registry_dir(settings: Settings) -> Path:
    return settings.home / "models"


def _file(settings: Settings) -> Path:
    return registry_dir(settings) / "registry.json"


def _read(settings: Settings) -> dict[str, Any]:
    try:
        data = json.loads(_file(settings).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"active": None, "history": [], "models": {}}
    except (OSError, ValueError):
        raise RegistryError(f"{_file(settings)}: unreadable model registry") from None
    return data if isinstance(data, dict) else {"active": None, "history": [], "models": {}}


def _write(settings: Settings, data: dict[str, Any]) -> None:
    # durably: an activation or rollback the command reported must survive a power cut
    write_durably(_file(settings), json.dumps(data, indent=2, sort_keys=True).encode(),
                  mode=0o644)


@contextmanager
def _locked(settings: Settings) -> Iterator[dict[str, Any]]:
    root = registry_dir(settings)
    root.mkdir(parents=True, exist_ok=True)
    with (root / ".registry.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        data = _read(settings)
        yield data
        _write(settings, data)


def model_key(card: ModelCard) -> str:
    return card.weights.sha256[:16]


def _store(settings: Settings, key: str) -> Path:
    return registry_dir(settings) / "store" / key


def validate_folder(folder: Path, *, build: bool = True) -> ModelCard:
    """Card strictly valid, weights match its sha256, and (``build``) the network loads."""
    folder = Path(folder)
    card = load_card(folder)
    verify_weights(card, folder)
    if build:
        from workers.score.models import load_model  # torch: only when registering

        load_model(folder, "cpu")
    return card


def register(settings: Settings, folder: Path, *, activate: bool = True,
             build: bool = True) -> RegisteredModel:
    """Validate ``folder``, copy it into the store and (by default) make it the active model;
    the model it replaces goes to the head of the history (``rollback`` returns to it)."""
    card = validate_folder(folder, build=build)
    key = model_key(card)
    dest = _store(settings, key)
    if not dest.exists():
        dest.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=dest.parent, prefix=".copy-") as tmp:
            staged = Path(tmp) / key
            staged.mkdir()
            shutil.copy2(Path(folder) / CARD_FILE, staged / CARD_FILE)
            shutil.copy2(Path(folder) / card.weights.file, staged / card.weights.file)
            verify_weights(card, staged)  # the copy is the file that will score
            staged.rename(dest)
    now = datetime.now(UTC).isoformat(timespec="seconds")
    with _locked(settings) as data:
        data["models"].setdefault(key, {
            "name": card.name, "version": card.version, "sha256": card.weights.sha256,
            "device_uid": card.device_uid, "demo": card.synthetic_demo, "registered_at": now})
        if activate and data.get("active") != key:
            if data.get("active"):
                data["history"] = [data["active"], *[k for k in data["history"] if k != key]]
            data["active"] = key
        registered_at = data["models"][key]["registered_at"]
        active = data.get("active") == key
    return RegisteredModel(key, dest, card, registered_at, active)


def rollback(settings: Settings) -> RegisteredModel:
    """Make the previously active model active again."""
    with _locked(settings) as data:
        if not data["history"]:
            raise RegistryError("no previous model to roll back to")
        key = data["history"].pop(0)
        data["active"] = key
    return get(settings, key)


def get(settings: Settings, key: str) -> RegisteredModel:
    data = _read(settings)
    hits = [k for k in data["models"] if k == key or k.startswith(key)] if key else []
    if len(hits) != 1:
        raise RegistryError(f"no registered model {key!r}" if not hits
                            else f"{key!r} names more than one registered model")
    folder = _store(settings, hits[0])
    return RegisteredModel(hits[0], folder, load_card(folder),
                           data["models"][hits[0]]["registered_at"], data["active"] == hits[0])


def list_models(settings: Settings) -> list[RegisteredModel]:
    data = _read(settings)
    out = []
    for key, meta in sorted(data["models"].items(), key=lambda kv: kv[1]["registered_at"]):
        folder = _store(settings, key)
        out.append(RegisteredModel(key, folder, load_card(folder), meta["registered_at"],
                                   data["active"] == key))
    return out


def active_folder(settings: Settings) -> Path | None:
    """The folder of the model that scores new exams: ``settings.score_model`` if set, else the
    registry's active model; None when no model is configured (then nothing is scored)."""
    if settings.score_model is not None:
        return Path(settings.score_model)
    key = _read(settings).get("active")
    return _store(settings, key) if key else None


def resolve(settings: Settings, ref: str) -> Path:
    """A model named on the command line: a folder path, ``active``, or a registry key prefix."""
    if ref == "active":
        folder = active_folder(settings)
        if folder is None:
            raise RegistryError("no active model (deidgate model register FOLDER)")
        return folder
    if Path(ref).is_dir():
        return Path(ref)
    return get(settings, ref).folder
