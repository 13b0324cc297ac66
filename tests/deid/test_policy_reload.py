"""Workers notice an edited policy file (issue 7, section 7): the engine a worker keeps warm is
keyed by the policy files' content, so the API's check at submission and the workers agree."""

from __future__ import annotations

import os
from pathlib import Path

from service.core.keys import SiteKeys
from workers.deid.policy import load_policy, policy_fingerprint
from workers.tasks.deid import deidentifier

PROJECT = """name: project
version: "{v}"
extends: {parent}
"""


def _edit_keeping_stat(path: Path, text: str) -> None:
    """Rewrite with the same size and modification time: only the content tells."""
    st = path.stat()
    assert len(text.encode()) == st.st_size
    path.write_text(text)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_worker_engine_follows_an_edited_policy_file(tmp_path: Path) -> None:
    key = tmp_path / "site.key"
    SiteKeys.load(key)
    policy = tmp_path / "project.yaml"
    policy.write_text(PROJECT.format(v="1", parent="mammography-screening"))
    first = deidentifier(str(policy), key, "p")
    assert first.policy.version == "1"
    assert deidentifier(str(policy), key, "p") is first  # kept warm while unchanged

    _edit_keeping_stat(policy, PROJECT.format(v="2", parent="mammography-screening"))
    assert load_policy(policy).version == "2"  # what the API's check sees
    assert deidentifier(str(policy), key, "p").policy.version == "2"  # and the workers


def test_fingerprint_covers_the_layers_a_policy_extends(tmp_path: Path) -> None:
    parent = tmp_path / "parent.yaml"
    parent.write_text('name: parent\nversion: "a"\nextends: mammography-screening\n')
    child = tmp_path / "child.yaml"
    child.write_text(f"name: child\nextends: {parent}\n")
    before = policy_fingerprint(child)
    assert policy_fingerprint(child) == before
    _edit_keeping_stat(parent, 'name: parent\nversion: "b"\nextends: mammography-screening\n')
    assert policy_fingerprint(child) != before
    assert load_policy(child).version == "b"
