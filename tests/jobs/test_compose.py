"""docker-compose.yml is valid for docker-compose 1.29, wires the roles as designed and defaults
no secret (validated with `docker-compose config`; no Docker engine needed)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
SECRETS = {"DEIDGATE_DB_PASSWORD": "pw-db-test", "DEIDGATE_REDIS_PASSWORD": "pw-redis-test",
           "DEIDGATE_SITE_KEY_FILE": "/run/keys/site.key"}


def _config(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("DEIDGATE_")}
    return subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yml"), "config"],
                          env={**base, **env}, capture_output=True, text=True, timeout=60,
                          cwd=ROOT)


def test_compose_config_resolves_with_secrets_given() -> None:
    res = _config(SECRETS)
    assert res.returncode == 0, res.stderr
    cfg = yaml.safe_load(res.stdout)
    svc = cfg["services"]
    assert {"api", "listener", "deid-worker", "score-worker", "postgres", "redis",
            "migrate"} <= set(svc)
    # migrations before the API; the API waits for them to finish successfully
    assert svc["migrate"]["command"] == ["deidgate", "db", "upgrade"]
    assert svc["api"]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
    # the listener and its de-identification worker share the spool and the node name
    spool = {v.split(":")[0] if isinstance(v, str) else v["source"]
             for v in svc["listener"]["volumes"]}
    assert spool == {v.split(":")[0] if isinstance(v, str) else v["source"]
                     for v in svc["deid-worker"]["volumes"]}
    assert (svc["listener"]["environment"]["DEIDGATE_NODE_NAME"]
            == svc["deid-worker"]["environment"]["DEIDGATE_NODE_NAME"])
    assert "deid" in svc["deid-worker"]["command"][-1]
    # the scoring worker reserves a GPU
    devices = svc["score-worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert devices[0]["capabilities"] == ["gpu"]
    # secrets come from what was given: the key as a file secret, passwords from the env
    assert cfg["secrets"]["site_key"]["file"] == SECRETS["DEIDGATE_SITE_KEY_FILE"]
    assert "pw-db-test" in svc["api"]["environment"]["DEIDGATE_DATABASE_URL"]
    assert svc["api"]["environment"]["DEIDGATE_KEY_FILE"] == "/run/secrets/site_key"


def test_compose_refuses_to_run_without_each_secret() -> None:
    for missing in SECRETS:
        env = {k: v for k, v in SECRETS.items() if k != missing}
        res = _config(env)
        assert res.returncode != 0
        assert f"set {missing}" in res.stderr


def test_no_secret_has_a_default_in_the_file() -> None:
    text = (ROOT / "docker-compose.yml").read_text()
    for var in SECRETS:
        assert f"${{{var}:-" not in text and f"${{{var}-" not in text
