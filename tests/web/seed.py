"""De-identified data for the audit pages, made by the real pipeline (no worker needed)."""

from __future__ import annotations

from service.core.config import Settings
from service.core.keys import SiteKeys
from synthetic.exam import Exam
from workers.deid.engine import Deidentifier
from workers.deid.pipeline import InstanceResult, process_instance
from workers.deid.policy import load_policy


def deidentify(settings: Settings, keys: SiteKeys, exam: Exam) -> list[InstanceResult]:
    d = Deidentifier(load_policy("mammography-screening"), keys, project=settings.project)
    out = []
    for f in exam.files:
        r = process_instance(f, deidentifier=d, db_url=settings.db_url, keys=keys,
                             out_root=settings.output_dir, quarantine=None, source="test",
                             job_id=None, delete_source=False)
        assert r.status == "written"
        out.append(r)
    return out
