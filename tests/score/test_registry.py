"""The model registry (HOME/models): register validates and activates, the previous model stays
for rollback, a hash mismatch is refused with a clear error, settings.score_model overrides."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from service.core.config import Settings
from tests.score.conftest import make_tiny_model
from tests.score.test_model_cli import run_cli
from workers.score.card import ModelCardError
from workers.score.registry import (
    RegistryError,
    active_folder,
    list_models,
    register,
    resolve,
    rollback,
)


def test_register_activate_rollback(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    assert active_folder(settings) is None
    a = register(settings, tiny_model)
    assert a.active and active_folder(settings) == a.folder
    assert a.folder.parent == settings.home / "models" / "store"
    b_src = tmp_path / "b"
    make_tiny_model(b_src, seed=1, version="2")
    b = register(settings, b_src)
    assert active_folder(settings) == b.folder
    assert [(m.card.version, m.active) for m in list_models(settings)] == [("1", False),
                                                                           ("2", True)]
    shutil.rmtree(b_src)  # the registry scores from its own copy
    assert resolve(settings, "active") == b.folder and (b.folder / "model.pt").is_file()
    assert rollback(settings).key == a.key
    assert active_folder(settings) == a.folder
    with pytest.raises(RegistryError, match="no previous model"):
        rollback(settings)
    assert resolve(settings, b.key[:8]) == b.folder
    settings.score_model = tiny_model
    assert active_folder(settings) == tiny_model  # configuration overrides the registry


def test_register_refuses_a_hash_mismatch(tmp_path: Path, tiny_model: Path) -> None:
    settings = Settings(home=tmp_path / "home")
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    (bad / "model.pt").write_bytes(b"other weights")
    with pytest.raises(ModelCardError, match="do not match the card"):
        register(settings, bad)
    assert active_folder(settings) is None and list_models(settings) == []


def test_cli_register_list_rollback(tmp_path: Path, tiny_model: Path) -> None:
    home = tmp_path / "home"
    bad = tmp_path / "bad"
    shutil.copytree(tiny_model, bad)
    (bad / "model.pt").write_bytes(b"other weights")
    refused = run_cli(home, "model", "register", str(bad))
    assert refused.returncode == 2, refused.stderr
    assert "model-card-invalid" in refused.stderr and "do not match the card" in refused.stderr
    ok = run_cli(home, "model", "register", str(tiny_model))
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("registered ") and "tiny 1" in ok.stdout and "(active)" in ok.stdout
    listed = run_cli(home, "model", "list")
    assert listed.returncode == 0 and listed.stdout.lstrip().startswith("*")
    assert "tiny 1" in listed.stdout and "ResNet 64x52" in listed.stdout
    back = run_cli(home, "model", "rollback")
    assert back.returncode == 2 and "no previous model" in back.stderr
