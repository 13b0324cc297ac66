"""The API against a client no one here wrote: schemathesis, from the OpenAPI document alone.

The app runs under uvicorn on 127.0.0.1 (its own process, a real SQLite or PostgreSQL
database holding jobs in several states, studies, instances, dead letters, a worklist and
audit records). ``st run`` fuzzes every operation once per role with that role's token, in all
four phases (examples, coverage, fuzzing, stateful via the links schemathesis infers) and with
every check it has (``--checks all``: not_a_server_error, status_code_conformance,
content_type_conformance, response_schema_conformance, response_headers_conformance,
positive_data_acceptance, negative_data_rejection, unsupported_method,
allow_header_conformance, missing_required_header, ignored_auth, use_after_free, ...).

Each role must end with 0 failures and 0 errors, every operation tested, and exactly the
operations that role is refused seen answering only 401/403: the role matrix, found again by a
client that never read it. A per-role table is printed.

Size: ``MAX_EXAMPLES`` cases per operation and phase (``DEIDGATE_FUZZ_EXAMPLES`` overrides it,
``DEIDGATE_FUZZ_SEED`` the seed, to explore further by hand). Reproduce one role by hand with
the command the table prints, against ``python -m tests.api.fuzz_support``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from service.core.config import Settings
from service.core.security import Role
from tests.api.fuzz_support import running_app, seed
from tests.api.test_role_matrix import EXPECTED, PUBLIC

# Cases per operation in the fuzzing and stateful phases (coverage and examples are fixed by
# the schema). PostgreSQL gets fewer: its run exists for what only it refuses (integer and
# length ranges), which the coverage phase's boundary values reach.
MAX_EXAMPLES = {"sqlite": 15, "postgresql": 5}
if os.environ.get("DEIDGATE_FUZZ_EXAMPLES"):
    MAX_EXAMPLES = dict.fromkeys(MAX_EXAMPLES, int(os.environ["DEIDGATE_FUZZ_EXAMPLES"]))
SEED = int(os.environ.get("DEIDGATE_FUZZ_SEED", "20261125"))
HOOKS = Path(__file__).with_name("st_hooks.py")
REPO = Path(__file__).resolve().parents[2]
# Readers first: the service and admin runs cancel, retry and delete what the seed made.
ORDER = (Role.auditor, Role.staff, Role.service, Role.admin)


def st_command(base: str, token: str, report: Path, examples: int) -> list[str]:
    return [
        sys.executable, "-m", "schemathesis.cli", "run", f"{base}/api/v1/openapi.json",
        "-H", f"Authorization: Bearer {token}",
        "--checks", "all",
        "--phases", "examples,coverage,fuzzing,stateful",
        "-n", str(examples), "--seed", str(SEED), "-w", "1",
        "--request-timeout", "30",
        "--report", "json", "--report-json-path", str(report),
        "--no-color",
    ]


def _refused(role: Role) -> set[str]:
    return {f"{m} {p}" for (m, p), roles in EXPECTED.items() if role not in roles}


def _fuzz(base: str, role: Role, token: str, out: Path, examples: int) -> dict[str, Any]:
    report, log = out / f"st-{role.value}.json", out / f"st-{role.value}.txt"
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(HOOKS), "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    with log.open("wb") as sink:
        # cwd: st keeps a crash cache in ./.schemathesis, replayed first on the next run; a
        # fresh one per run keeps runs independent (and the tree clean).
        proc = subprocess.run(st_command(base, token, report, examples), cwd=out, env=env,
                              stdout=sink, stderr=subprocess.STDOUT, timeout=600, check=False)
    text = log.read_text(errors="replace")
    assert report.exists(), f"st wrote no report (exit {proc.returncode}):\n{text[-4000:]}"
    data: dict[str, Any] = json.loads(report.read_text())
    data["_wall_s"] = time.monotonic() - started
    data["_log"] = text
    return data


def _row(role: Role, d: dict[str, Any]) -> str:
    ops, cases = d["operations"], d["test_cases"]
    failures = sum(f["count"] for f in d["failures"])
    return (f"{role.value:8} {ops['tested']:>3}/{ops['total']:<3} {cases['generated']:>6} "
            f"{failures:>8} {len(d['errors']):>6} {d['_wall_s']:>6.0f}")


@pytest.mark.integration
@pytest.mark.timeout(1500)
def test_schemathesis_finds_nothing_for_any_role(
    settings: Settings, migrated_db: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    backend = migrated_db.split(":", 1)[0].split("+", 1)[0]
    examples = MAX_EXAMPLES[backend]
    tokens = seed(settings)
    results: dict[Role, dict[str, Any]] = {}
    with running_app(settings.home, migrated_db, tmp_path / "app.log") as base:
        for role in ORDER:
            results[role] = _fuzz(base, role, tokens[role], tmp_path, examples)

    lines = [f"schemathesis {results[Role.admin]['schemathesis_version']} on {backend}: "
             f"-n {examples} --seed {SEED}, all phases, --checks all",
             "role     ops      cases failures errors wall_s"]
    lines += [_row(role, results[role]) for role in ORDER]
    with capsys.disabled():
        print("\n" + "\n".join(lines))

    app_log = (tmp_path / "app.log").read_text(errors="replace")
    for role, d in results.items():
        summary = {f["code"] + " " + f["title"]: f["operations"] for f in d["failures"]}
        assert not d["failures"], f"{role.value}: {summary}\n{d['_log'][-6000:]}"
        assert not d["errors"], f"{role.value}: {d['errors']}\n{d['_log'][-6000:]}"
        assert d["complete"] and d["stop_reason"] == "completed", role
        ops = d["operations"]
        assert ops["tested"] == ops["total"] == len(EXPECTED) + len(PUBLIC), (role, ops)
        # Not vacuous: every operation got cases, and the refusals are the role matrix's.
        assert d["test_cases"]["generated"] >= 10 * ops["total"], (role, d["test_cases"])
        assert set(d["warnings"]["missing_auth"]) == _refused(role), role
    assert "unhandled" not in app_log, app_log[-4000:]
