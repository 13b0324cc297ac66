"""The API process must not load the de-identification engine to query or verify the audit
trail: service/audit keeps its own types (service/audit/types.py) and imports nothing from
workers/. Checked in a fresh interpreter, where sys.modules shows what an import really pulled in.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("module", ["service.api.app", "service.audit.store", "service.audit"])
def test_importing_does_not_load_the_engine(module: str) -> None:
    probe = (f"import sys, {module}\n"
             "print(','.join(sorted(m for m in sys.modules if m.startswith('workers.deid'))))\n")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True,
                         text=True, timeout=120, check=True)
    assert out.stdout.strip() == "", f"{module} loads {out.stdout.strip()}"


def test_service_audit_imports_nothing_from_workers() -> None:
    """Also imports inside functions, which a sys.modules check only sees when they run."""
    offenders = [f"{p.relative_to(ROOT)}:{n}" for p in sorted((ROOT / "service/audit").glob("*.py"))
                 for n, line in enumerate(p.read_text().splitlines(), 1)
                 if line.lstrip().startswith(("import workers", "from workers"))]
    assert not offenders
