"""Every table, imported here so ``Base.metadata`` is complete for Alembic and tests.

One module per area: ``audit`` (pseudonym mappings, hash-chained audit log), ``dicom`` (AE
settings, PACS nodes, allow-list, received instances), ``jobs`` (extraction jobs, tasks, tokens,
worklist). Each area's tables arrive with their own Alembic revision.
"""

from __future__ import annotations

import importlib
import pkgutil

from service.db.base import Base

for _m in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_m.name}")

__all__ = ["Base"]
