"""Schemathesis hooks for tests/api/test_fuzz.py (loaded by ``st`` from SCHEMATHESIS_HOOKS).

Two things a schema cannot say, so the fuzzer is told here, and nothing else is changed:

- ``POST /jobs`` names a PACS node and a policy, which must exist when the job is submitted (a
  schema cannot list database rows), and a date range must not run backwards. A generated name
  that fits the schema is replaced by the seeded node (or the shipped policy), so that a
  schema-valid request really is one the gateway must accept (201) and positive-data
  acceptance is checked on it; an unfitting name is left as generated, so negative cases stay
  negative. A backwards range in a positive case is put in order.
- ``POST /admin/nodes/{name}/echo`` opens a DICOM association to whatever host a fuzzed node
  names; its timeout is capped at one second so that the run never waits on the network.

Both stay within the schema: no check is loosened, no failure filtered.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

PACS = "pacs1"  # tests/api/fuzz_support.py seeds it
POLICY = "dicom-basic-profile"  # shipped in policies/
_NODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_POLICY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def _is(context: Any, method: str, path: str) -> bool:
    op = context.operation
    return op is not None and op.method.upper() == method and op.path == path


def _positive(case: Any) -> bool:
    meta = case.meta
    return meta is not None and meta.generation.mode.is_positive


@schemathesis.hook
def map_case(context: Any, case: Any) -> Any:
    if _is(context, "POST", "/api/v1/jobs") and isinstance(case.body, dict):
        body = case.body
        if isinstance(body.get("pacs"), str) and _NODE.fullmatch(body["pacs"]):
            body["pacs"] = PACS
        if isinstance(body.get("destination"), str) and _NODE.fullmatch(body["destination"]):
            body["destination"] = PACS
        if isinstance(body.get("policy"), str) and _POLICY.fullmatch(body["policy"]):
            body["policy"] = POLICY
        query = body.get("query")
        if _positive(case) and isinstance(query, dict):
            start, end = query.get("date_from"), query.get("date_to")
            dates = isinstance(start, str) and isinstance(end, str)
            if dates and _DATE.fullmatch(start) and _DATE.fullmatch(end) and start > end:
                query["date_from"], query["date_to"] = end, start
    elif _is(context, "POST", "/api/v1/admin/nodes/{name}/echo"):
        query = dict(case.query or {})
        seconds = _seconds(query.get("timeout", 1.0))
        if seconds is not None and 0 < seconds <= 60:  # a valid timeout, generated or default
            query["timeout"] = min(seconds, 1.0)
            case.query = query
    return case


def _seconds(value: object) -> float | None:
    """The timeout as a number, also when the coverage phase sends it as query text."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None
