"""Can a job's policy be loaded? Answered at submission, without the engine when a stamp says so.

Loading a policy validates every layer (pydantic models, DICOM keywords: it imports pydicom):
0.5 s on a quiet machine, 2 s on a busy one, most of a ``deidgate job submit``'s own start-up.
A successful load leaves a stamp in the data folder (``cache/policies/``) listing the policy's
layer files and the engine's modules with their size and modification time, and the installed
pydicom version; while none of them has changed, the stamp answers. A missing, unreadable or
stale stamp means a full load. Only success is remembered: a broken policy is refused every time,
with its reason. The stamp is an early answer, not the safeguard: the de-identification task
loads the policy itself and refuses (fails closed) what it cannot load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from importlib import metadata
from pathlib import Path

from service.core.config import Settings

ENGINE = Path(__file__).resolve().parents[2] / "workers" / "deid"


def _stamp_path(settings: Settings, policy: str) -> Path:
    # a relative path names a different file from another working directory; a name does not
    where = os.getcwd() if "/" in policy or policy.endswith((".yaml", ".yml")) else ""
    key = hashlib.sha256(f"{policy}\0{where}".encode()).hexdigest()[:32]
    return settings.home / "cache" / "policies" / f"{key}.json"


def _signature(files: list[Path]) -> list[list[object]]:
    out: list[list[object]] = []
    for p in files:
        st = p.stat()
        out.append([str(p), st.st_size, st.st_mtime_ns])
    return out


def _engine_files() -> list[Path]:
    return sorted(ENGINE.glob("*.py"))


def _pydicom_version() -> str:
    try:
        return metadata.version("pydicom")
    except metadata.PackageNotFoundError:
        return ""


def stamped(settings: Settings, policy: str) -> bool:
    """True when an earlier load of ``policy`` succeeded and nothing it depends on changed."""
    try:
        data = json.loads(_stamp_path(settings, policy).read_text())
        layers = [Path(p) for p, _, _ in data["layers"]]
        return bool(layers) and data == {
            "policy": policy, "layers": _signature(layers), "engine": _signature(_engine_files()),
            "pydicom": _pydicom_version()}
    except (OSError, ValueError, KeyError, TypeError):
        return False


def remember(settings: Settings, policy: str) -> None:
    """Record that ``policy`` loads (call right after a successful load); best effort."""
    from workers.deid.policy import policy_files

    with contextlib.suppress(Exception):  # a cache: never a reason for a submission to fail
        path = _stamp_path(settings, policy)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {"policy": policy, "layers": _signature(policy_files(policy)),
                "engine": _signature(_engine_files()), "pydicom": _pydicom_version()}
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data))
        os.replace(tmp, path)
