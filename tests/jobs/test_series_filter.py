"""Which series a retrieval moves (issue 7, section 1): the policy's default, the job option
``modalities`` that overrides it (validated like every request field), and the skip reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope
from service.dicom.find import SeriesFilter, SeriesMatch
from service.jobs import ops
from service.jobs.schemas import InvalidJobRequest, parse_job_request
from workers.tasks.retrieve import series_filter

MG_CLASS = "1.2.840.10008.5.1.4.1.1.1.2"


def test_modalities_option_is_validated_and_deduplicated() -> None:
    req = parse_job_request({"pacs": "p", "accession_numbers": ["A1"],
                             "modalities": ["MG", "CT", "MG"]})
    assert req.modalities == ["MG", "CT"] and req.selector == "accession_numbers"
    for bad, msg in (([], "modalities: 1 to"), (["mg;"], "modalities[0]: a DICOM modality"),
                     (["MG"] * 13, "modalities: 1 to")):
        with pytest.raises(InvalidJobRequest, match=msg.replace("[", r"\[")):
            parse_job_request({"pacs": "p", "accession_numbers": ["A1"], "modalities": bad})


def test_mammography_policy_moves_mg_series_only() -> None:
    f = series_filter("mammography-screening", None)
    assert f is not None and f.modalities == frozenset({"MG"})
    assert f.skip_reason(SeriesMatch("1.2", modality="MG")) is None
    assert f.skip_reason(SeriesMatch("1.2", modality="MG", sop_class=MG_CLASS)) is None
    assert f.skip_reason(SeriesMatch("1.2", modality="CT")) == \
        "modality CT not in MG (policy mammography-screening)"
    # an MG-labelled series holding a class the policy refuses (a PACS returning the class)
    assert "SOP class 1.2.840.10008.5.1.4.1.1.7 not accepted" in str(f.skip_reason(
        SeriesMatch("1.2", modality="MG", sop_class="1.2.840.10008.5.1.4.1.1.7")))
    assert f.skip_reason(SeriesMatch("1.2", modality="")) is not None


def test_option_overrides_policy_and_any_storage_policy_moves_the_whole_study() -> None:
    f = series_filter("mammography-screening", "MG,CT")
    assert f == SeriesFilter(modalities=frozenset({"MG", "CT"}), source="job option modalities")
    assert f.skip_reason(SeriesMatch("1.2", modality="CT")) is None
    assert f.skip_reason(SeriesMatch("1.2", modality="PR")) == \
        "modality PR not in CT,MG (job option modalities)"
    assert series_filter("dicom-basic-profile", None) is None


def test_submitted_option_is_kept_and_shown(settings: Settings, site_keys: SiteKeys,
                                            jobs_db: str) -> None:
    from tests.jobs.conftest import submit

    with session_scope(jobs_db) as s:
        job_id = submit(s, settings, site_keys, modalities=["MG", "CT"])
        view = ops.get_job(s, job_id)
        plain = ops.get_job(s, submit(s, settings, site_keys))
    assert view is not None and view.modalities == ["MG", "CT"]
    assert plain is not None and plain.modalities is None
    assert view.counts.instances_skipped == 0


def test_cli_submit_takes_modalities(home: Path, jobs_db: str) -> None:
    from typer.testing import CliRunner

    from service.cli.main import app

    env = {"DEIDGATE_HOME": str(home), "DEIDGATE_DATABASE_URL": jobs_db}
    res = CliRunner().invoke(app, ["job", "submit", "--pacs", "pacs1", "--accession", "ACC9",
                                   "--modalities", "MG, CT"], env=env)
    assert res.exit_code == 0, res.output
    job_id = res.output.strip().splitlines()[-1]
    with session_scope(jobs_db) as s:
        view = ops.get_job(s, job_id)
    assert view is not None and view.modalities == ["MG", "CT"]
    bad = CliRunner().invoke(app, ["job", "submit", "--pacs", "pacs1", "--accession", "ACC9",
                                   "--modalities", "M G"], env=env)
    assert bad.exit_code != 0 and "modalities[0]" in bad.output
