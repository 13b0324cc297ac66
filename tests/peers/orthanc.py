"""Orthanc (Debian's /usr/sbin/Orthanc) as a real PACS for tests and benchmarks.

``orthanc_server(tmp, modalities={...})`` starts it with a generated JSON configuration on free
ports in a temporary folder and stops it in a ``finally``. ``modalities`` lists the AEs Orthanc
knows (name -> (AE title, host, port)): the gateway's AE must be there for C-FIND/C-MOVE/C-GET and
as a C-MOVE destination; an AE missing there is how a test makes Orthanc refuse a destination.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.peers.net import free_port, stop_process, wait_port

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"


@dataclass
class OrthancPeer:
    ae_title: str
    host: str
    dicom_port: int
    http_port: int
    folder: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def _req(self, method: str, path: str, body: bytes | None = None,
             timeout: float = 30.0) -> Any:
        req = urllib.request.Request(self.url + path, data=body, method=method)  # noqa: S310
        if body is not None:
            req.add_header("Content-Type", "application/dicom")
        with urllib.request.urlopen(req, timeout=timeout) as r:  # noqa: S310 - local test peer
            data = r.read()
        return json.loads(data) if data else None

    def upload(self, *paths: Path) -> list[str]:
        """Store files through the REST API; returns Orthanc's instance ids."""
        ids = []
        for p in paths:
            res = self._req("POST", "/instances", Path(p).read_bytes())
            ids.append(res["ID"])
        return ids

    def studies(self) -> list[str]:
        return list(self._req("GET", "/studies"))

    def instances(self) -> list[str]:
        return list(self._req("GET", "/instances"))

    def delete_instance(self, orthanc_id: str) -> None:
        self._req("DELETE", f"/instances/{orthanc_id}")

    def add_modality(self, name: str, ae_title: str, host: str, port: int) -> None:
        body = json.dumps({"AET": ae_title, "Host": host, "Port": port}).encode()
        req = urllib.request.Request(  # noqa: S310
            f"{self.url}/modalities/{name}", data=body, method="PUT")
        with urllib.request.urlopen(req, timeout=10):  # noqa: S310
            pass

    def remove_modality(self, name: str) -> None:
        self._req("DELETE", f"/modalities/{name}")


def _config(folder: Path, ae_title: str, dicom_port: int, http_port: int,
            modalities: dict[str, tuple[str, str, int]]) -> dict[str, Any]:
    return {
        "Name": "deidgate-test-pacs",
        "StorageDirectory": str(folder / "db"),
        "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port,
        "HttpServerEnabled": True,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ae_title,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomCheckModalityHost": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomScuTimeout": 15,
        "DicomScpTimeout": 30,
        "DicomAssociationCloseDelay": 0,
        "DicomModalities": {n: list(v) for n, v in modalities.items()},
        "DicomModalitiesInDatabase": False,
        "RestApiWriteToFileSystemEnabled": False,
        "UnknownSopClassAccepted": True,
        "StableAge": 1,
        "SaveJobs": False,
        "ConcurrentJobs": 2,
        "Plugins": [],
        "StorageCompression": False,
        "LimitFindResults": 0,
        "LimitFindInstances": 0,
    }


@contextmanager
def orthanc_server(folder: Path, *, ae_title: str = "ORTHANC",
                   modalities: dict[str, tuple[str, str, int]] | None = None,
                   extra: dict[str, Any] | None = None,
                   start_timeout: float = 30.0) -> Iterator[OrthancPeer]:
    folder.mkdir(parents=True, exist_ok=True)
    dicom_port, http_port = free_port(), free_port()
    cfg = folder / "orthanc.json"
    conf = _config(folder, ae_title, dicom_port, http_port, modalities or {})
    conf.update(extra or {})  # e.g. {"DicomAlwaysAllowMove": True, "DicomAlwaysAllowFind": True}
    cfg.write_text(json.dumps(conf))
    log = (folder / "orthanc.log").open("wb")
    proc = subprocess.Popen([ORTHANC, str(cfg)], stdout=log, stderr=subprocess.STDOUT,
                            cwd=folder)
    peer = OrthancPeer(ae_title, "127.0.0.1", dicom_port, http_port, folder)
    try:
        deadline = time.monotonic() + start_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited ({proc.returncode}); see {folder}/orthanc.log")
            try:
                peer._req("GET", "/system", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                if time.monotonic() > deadline:
                    raise TimeoutError("Orthanc did not start") from None
                time.sleep(0.1)
        wait_port(dicom_port)
        yield peer
    finally:
        stop_process(proc, timeout=15)
        log.close()
