"""dcmtk command-line peers: storescu / echoscu senders, storescp as a reference receiver."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from tests.peers.net import free_port, stop_process, wait_port


def storescu(port: int, files: Sequence[Path], *, calling: str = "STORESCU",
             called: str = "DEIDGATE", host: str = "127.0.0.1", max_pdu: int = 131_072,
             timeout: float = 120.0, extra: Sequence[str] = ()) -> subprocess.CompletedProcess[str]:
    """Send files; storescu proposes each file's own transfer syntax (no conversion)."""
    cmd = ["storescu", "-aet", calling, "-aec", called, "-to", "30", "-ta", "30", "-td", "60",
           "-pdu", str(max_pdu), "-R", *extra, host, str(port), *map(str, files)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


def echoscu(port: int, *, calling: str = "ECHOSCU", called: str = "DEIDGATE",
            host: str = "127.0.0.1", timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    cmd = ["echoscu", "-aet", calling, "-aec", called, "-to", "10", "-ta", "10", host, str(port)]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)


@contextmanager
def storescp(folder: Path, *, ae_title: str = "STORESCP", max_pdu: int = 131_072,
             port: int | None = None) -> Iterator[int]:
    """dcmtk's own receiver writing into ``folder`` (the benchmark's reference); yields port."""
    folder.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    proc = subprocess.Popen(["storescp", "-aet", ae_title, "-pdu", str(max_pdu), "-od",
                             str(folder), "-uf", "+B", "+xa", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield port
    finally:
        stop_process(proc)
