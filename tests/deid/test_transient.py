"""Transient faults of the machine are not refusals of the input (issue 7 section 6): a
MemoryError or an OSError such as ENOSPC/EIO inside the engine, the pixel stage or the source
reader goes up as it is (the base task retries it); the input is neither refused nor
quarantined. Faults a real disk cannot be made to produce on demand are injected where the
stage calls its library; a data error stays a refusal."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from service.core.errors import NotDicom, PixelRefused, PolicyRefused
from service.core.keys import SiteKeys
from synthetic.mammogram import make_mammogram
from tests.deid.support import KEY_A, engine, no_pixel_policy, save
from workers.deid import engine as engine_mod
from workers.deid import pixels, source
from workers.deid.pipeline import process_instance


@pytest.fixture(scope="module")
def keys() -> SiteKeys:
    return SiteKeys.from_master(KEY_A)


FAULTS = [MemoryError(), OSError(errno.ENOSPC, "No space left on device"),
          OSError(errno.EIO, "Input/output error")]


def _src(tmp: Path) -> Path:
    return save(make_mammogram(rows=64, cols=48), tmp / "in.dcm")


def _same(exc: BaseException, fault: BaseException) -> bool:
    return type(exc) is type(fault) and getattr(exc, "errno", None) == getattr(fault, "errno",
                                                                                None)


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: type(f).__name__ + str(
    getattr(f, "errno", "")))
def test_engine_lets_transient_faults_through(fault: BaseException, tmp_path: Path,
                                              keys: SiteKeys, monkeypatch: pytest.MonkeyPatch
                                              ) -> None:
    def walk(*_: object) -> None:
        raise fault

    monkeypatch.setattr(engine_mod, "walk", walk)
    with pytest.raises(BaseException) as ei:
        engine(no_pixel_policy(tmp_path), keys).deidentify(_src(tmp_path))
    assert _same(ei.value, fault), repr(ei.value)  # not PolicyRefused("engine-error")


def test_engine_still_refuses_a_data_error(tmp_path: Path, keys: SiteKeys,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    def walk(*_: object) -> None:
        raise ValueError("a value pydicom cannot parse")

    monkeypatch.setattr(engine_mod, "walk", walk)
    with pytest.raises(PolicyRefused) as ei:
        engine(no_pixel_policy(tmp_path), keys).deidentify(_src(tmp_path))
    assert ei.value.code == "engine-error"


@pytest.mark.parametrize("fault", FAULTS, ids=lambda f: type(f).__name__ + str(
    getattr(f, "errno", "")))
def test_pixel_stage_lets_transient_faults_through(fault: BaseException, tmp_path: Path,
                                                   keys: SiteKeys,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Raised while numpy views of the mapped pixel data are alive: the fault comes up without
    them (no BufferError when the engine closes the map), and is not a pixel refusal."""
    def clean(header: object, value: bytes | memoryview, *_: object) -> None:
        view = np.frombuffer(value, dtype=np.uint8)  # holds an export of the mmap
        assert view.size
        raise type(fault)(*fault.args)  # a fresh one, as numpy or the OS would raise

    monkeypatch.setattr(pixels, "_clean", clean)
    with pytest.raises(BaseException) as ei:
        engine("mammography-screening", keys).deidentify(_src(tmp_path))
    assert _same(ei.value, fault), repr(ei.value)
    assert ei.value.__traceback__ is not None


def test_pixel_stage_still_refuses_what_it_cannot_check(tmp_path: Path, keys: SiteKeys,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def clean(*_: object) -> None:
        raise OSError("broken data stream when reading image file")  # Pillow: no errno

    monkeypatch.setattr(pixels, "_clean", clean)
    with pytest.raises(PixelRefused):
        engine("mammography-screening", keys).deidentify(_src(tmp_path))


def test_source_reader_lets_disk_errors_through(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    src = _src(tmp_path)

    def dcmread(*_: object, **__: object) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(source.pydicom, "dcmread", dcmread)
    with pytest.raises(OSError) as ei:
        source.read_source(src)
    assert ei.value.errno == errno.EIO and not isinstance(ei.value, NotDicom)

    def garbage(*_: object, **__: object) -> None:
        raise OSError("not a file pydicom understands")  # no errno: about the data

    monkeypatch.setattr(source.pydicom, "dcmread", garbage)
    with pytest.raises(NotDicom):
        source.read_source(src)


def test_pipeline_keeps_the_input_on_a_full_disk(tmp_path: Path, keys: SiteKeys,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing refused, nothing quarantined, the identified copy kept for the retry."""
    from service.db.migrate import upgrade

    db = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(db)

    def walk(*_: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(engine_mod, "walk", walk)
    src = _src(tmp_path)
    quarantine = tmp_path / "quarantine"
    with pytest.raises(OSError):
        process_instance(src, deidentifier=engine(no_pixel_policy(tmp_path), keys), db_url=db,
                         keys=keys, out_root=tmp_path / "out", quarantine=quarantine,
                         source="test", job_id=None, delete_source=True)
    assert src.exists()
    assert not quarantine.exists() or list(quarantine.iterdir()) == []
