"""Every status an operation can answer, written into the OpenAPI document.

A client no one here wrote (a coordinator's script, a generated SDK, a fuzzer) learns what to
expect from the document alone, so it must list every status, each with the app's error body.
Two sources, so that neither a route nor a reader has to repeat what the code already says:

- what follows from an operation's dependencies is added here: a role check can answer 401
  and 403, a database session 503, the site keys 503, any parameter or body 422, and every
  operation 500 (a bug: logged by type, never by message);
- what only the route knows (404 for a missing job, 409 for a finished one) is declared on the
  route with ``responses=``, next to the code that raises it.

A method an operation does not have is answered 405 with an ``Allow`` header; OpenAPI has no
place for that per path, so the app's description says it (see ``app.py``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant

from service.api.deps import RoleCheck, depends_on, get_keys, get_session, operation_dependants
from service.api.schemas import ErrorBody

ERROR_REF = "#/components/schemas/ErrorBody"
Responses = dict[int | str, dict[str, Any]]  # what a route's ``responses=`` takes


def error_response(description: str) -> dict[str, Any]:
    """A ``responses=`` entry for routes: the description with the app's error body."""
    return {"model": ErrorBody, "description": description}


def _has_inputs(dependant: Dependant) -> bool:
    stack = [dependant]
    while stack:
        dep = stack.pop()
        if dep.path_params or dep.query_params or dep.header_params or dep.cookie_params:
            return True
        if dep.body_params:
            return True
        stack.extend(dep.dependencies)
    return False


def _guarded(dependant: Dependant) -> bool:
    stack = [dependant]
    while stack:
        dep = stack.pop()
        if isinstance(dep.call, RoleCheck):
            return True
        stack.extend(dep.dependencies)
    return False


def implied_statuses(dependant: Dependant) -> dict[int, str]:
    """The statuses an operation can answer because of what it depends on, with why."""
    out: dict[int, str] = {}
    if _guarded(dependant):
        out[401] = "missing, unknown or revoked token"
        out[403] = "the token's role may not do this"
    if _has_inputs(dependant):
        out[422] = "invalid request: the field is named, its value never echoed"
    unavailable = []
    if depends_on(dependant, get_session):
        unavailable.append("the database is unavailable (retry after Retry-After seconds)")
    if depends_on(dependant, get_keys):
        unavailable.append("the site key is not available (see the server log)")
    if unavailable:
        out[503] = "; or ".join(unavailable)
    out[500] = "internal error: a bug, logged by exception type only"
    return out


def _ensure_error_schema(doc: dict[str, Any]) -> None:
    schemas = doc.setdefault("components", {}).setdefault("schemas", {})
    if "ErrorBody" in schemas:
        return
    schema = ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}")
    for name, sub in schema.pop("$defs", {}).items():
        schemas.setdefault(name, sub)
    schemas["ErrorBody"] = schema


def document_statuses(app: FastAPI, doc: dict[str, Any]) -> None:
    """Add each operation's implied statuses (route declarations win) to ``doc`` in place."""
    _ensure_error_schema(doc)
    for method, path, dependant in operation_dependants(app):
        op = doc.get("paths", {}).get(path, {}).get(method.lower())
        if op is None:  # include_in_schema=False
            continue
        responses: dict[str, Any] = op.setdefault("responses", {})
        implied = implied_statuses(dependant)
        if 422 not in implied and "422" in responses and _is_fastapi_default(responses["422"]):
            del responses["422"]
        for status, description in implied.items():
            entry = responses.get(str(status))
            if entry is None or _is_fastapi_default(entry):
                responses[str(status)] = {
                    "description": description,
                    "content": {"application/json": {"schema": {"$ref": ERROR_REF}}},
                }


def _is_fastapi_default(entry: dict[str, Any]) -> bool:
    """FastAPI's own 422 (``HTTPValidationError``), which our handler never sends."""
    ref = entry.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref", "")
    return isinstance(ref, str) and ref.endswith("/HTTPValidationError")


def install(app: FastAPI) -> None:
    """Wrap ``app.openapi`` so every generated document carries the implied statuses."""
    generate: Callable[[], dict[str, Any]] = app.openapi
    last: list[dict[str, Any]] = []

    def openapi() -> dict[str, Any]:
        doc = generate()
        if not last or last[0] is not doc:  # FastAPI regenerates when routes change
            document_statuses(app, doc)
            _drop_unused_validation_schemas(doc)
            last[:] = [doc]
        return doc

    app.openapi = openapi  # type: ignore[method-assign]


def _drop_unused_validation_schemas(doc: dict[str, Any]) -> None:
    """FastAPI registers ``HTTPValidationError`` for its default 422; ours replaced it."""
    text = json.dumps(doc.get("paths", {}))
    schemas = doc.get("components", {}).get("schemas", {})
    if "/HTTPValidationError" not in text:
        schemas.pop("HTTPValidationError", None)
        rest = json.dumps({k: v for k, v in schemas.items() if k != "ValidationError"})
        if "/ValidationError" not in rest:
            schemas.pop("ValidationError", None)
