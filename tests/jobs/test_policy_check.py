"""The submission-time policy check answers from a stamp only while nothing the policy is made
of has changed; a broken policy is refused every time, with its reason."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from service.core.config import Settings
from service.core.keys import SiteKeys
from service.db.session import session_scope
from service.jobs import ops, policy_check
from tests.jobs.conftest import submit


def _custom_policy(tmp_path: Path, description: str = "site layer") -> Path:
    p = tmp_path / "site-policy.yaml"
    p.write_text(f"name: site-policy\nversion: '1'\ndescription: {description}\n"
                 "extends: [mammography-screening]\n")
    return p


def test_a_policy_that_loaded_is_stamped_until_a_layer_changes(
    jobs_db: str, settings: Settings, tmp_path: Path
) -> None:
    p = _custom_policy(tmp_path)
    assert not policy_check.stamped(settings, str(p))
    with session_scope(jobs_db) as s:  # a site's own file (settings.default_policy may be one)
        ops.check_submittable(s, settings, pacs="pacs1", policy=str(p), destination=None)
    assert policy_check.stamped(settings, str(p))
    assert not policy_check.stamped(settings, "dicom-basic-profile")  # one stamp per policy

    p.write_text(p.read_text() + "pixels: {no_such_key: 1}\n")  # now invalid
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    assert not policy_check.stamped(settings, str(p))
    for _ in range(2):  # refused on every submission, never remembered
        with session_scope(jobs_db) as s, pytest.raises(ops.InvalidJobRequest, match="policy"):
            ops.check_submittable(s, settings, pacs="pacs1", policy=str(p), destination=None)
        assert not policy_check.stamped(settings, str(p))


def test_an_unreadable_or_foreign_stamp_means_a_full_load(
    jobs_db: str, settings: Settings, site_keys: SiteKeys
) -> None:
    policy_check.remember(settings, "mammography-screening")
    assert policy_check.stamped(settings, "mammography-screening")
    stamp = next((settings.home / "cache" / "policies").glob("*.json"))
    stamp.write_text("{not json")
    assert not policy_check.stamped(settings, "mammography-screening")
    with session_scope(jobs_db) as s:  # loads it for real, and stamps it again
        submit(s, settings, site_keys, policy="mammography-screening")
    assert policy_check.stamped(settings, "mammography-screening")
