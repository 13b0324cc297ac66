"""Administration functions and the ``ae`` / ``pacs`` commands, on SQLite and PostgreSQL."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from service.cli.main import app
from service.core.config import Settings
from service.db.migrate import upgrade
from service.db.session import session_scope
from service.dicom import admin


def test_seed_from_settings_and_file_then_edit(migrated_db: str, home: Path) -> None:
    cfg = home / "dicom.yaml"
    cfg.write_text(
        "local_ae: {ae_title: GATEWAY1, port: 11113}\n"
        "allow: [{ae_title: PACS1}, {ae_title: MODALITY, host: 10.1.2.3}]\n"
        "nodes: [{name: main, ae_title: PACS1, host: pacs.example, port: 104, retrieve: get,"
        " max_associations: 3}]\n")
    s = Settings(home=home, database_url=migrated_db, dicom_config_file=cfg)
    with session_scope(migrated_db) as ses:
        assert admin.seed_from_settings(ses, s) is True  # the file the settings name
    with session_scope(migrated_db) as ses:
        assert admin.seed(ses, s, admin.load_config_file(cfg)) is False  # first use only
        local = admin.get_local_ae(ses, s)
        assert (local.ae_title, local.port, local.host) == ("GATEWAY1", 11113, s.dicom_host)
        assert admin.list_allowed(ses) == [admin.AllowedAE("MODALITY", "10.1.2.3"),
                                           admin.AllowedAE("PACS1", None)]
        assert admin.get_node(ses, "main") == admin.NodeConfig("main", "PACS1", "pacs.example",
                                                               104, "get", 3)
        admin.set_local_ae(ses, s, port=4242, ae_title="GW2")
        admin.allow(ses, "PACS1")  # idempotent
        assert admin.disallow(ses, "MODALITY") == 1
        admin.remove_node(ses, "main")
    with session_scope(migrated_db) as ses:
        assert admin.get_local_ae(ses, s).port == 4242
        assert [a.ae_title for a in admin.list_allowed(ses)] == ["PACS1"]
        assert admin.list_nodes(ses) == []
        assert admin.is_allowed(admin.list_allowed(ses), "PACS1 ", "192.0.2.1")


def test_toml_config_and_invalid_input(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    toml = tmp_path / "dicom.toml"
    toml.write_text('[[nodes]]\nname = "a"\nae_title = "A"\nhost = "h"\nport = 104\n')
    s = Settings(home=tmp_path)
    with session_scope(url) as ses:
        admin.seed(ses, s, admin.load_config_file(toml))
        assert [n.name for n in admin.list_nodes(ses)] == ["a"]
        with pytest.raises(admin.DuplicateNode):
            admin.add_node(ses, "a", ae_title="A", host="h", port=104)
        with pytest.raises(admin.InvalidSetting, match="AE title"):
            admin.allow(ses, "WAY_TOO_LONG_AE_TITLE")
        with pytest.raises(admin.InvalidSetting, match="IP address"):
            admin.allow(ses, "OK", "not-an-ip")
        with pytest.raises(admin.InvalidSetting, match="port"):
            admin.set_local_ae(ses, s, port=0)
        with pytest.raises(admin.InvalidSetting, match="retrieve"):
            admin.add_node(ses, "b", ae_title="B", host="h", port=1, retrieve="push")
        with pytest.raises(admin.UnknownNode):
            admin.get_node(ses, "nope")
    bad = tmp_path / "bad.yaml"
    bad.write_text("nodes: [\n")
    with pytest.raises(admin.InvalidSetting, match="cannot read"):
        admin.load_config_file(bad)


@pytest.fixture()
def cli_env(monkeypatch: pytest.MonkeyPatch, home: Path, db_url: str) -> CliRunner:
    monkeypatch.setenv("DEIDGATE_HOME", str(home))
    monkeypatch.setenv("DEIDGATE_DATABASE_URL", db_url)
    return CliRunner()


def test_cli_ae_and_pacs_commands(cli_env: CliRunner) -> None:
    r = cli_env.invoke(app, ["ae", "show"])
    assert r.exit_code == 0, r.output
    assert "DEIDGATE" in r.output and "11112" in r.output and "none" in r.output
    r = cli_env.invoke(app, ["ae", "set", "--ae-title", "GW", "--port", "11200",
                             "--host", "127.0.0.1"])
    assert r.exit_code == 0, r.output
    assert cli_env.invoke(app, ["ae", "allow", "PACS1", "--host", "10.0.0.5"]).exit_code == 0
    assert cli_env.invoke(app, ["ae", "allow", "MOD2"]).exit_code == 0
    out = cli_env.invoke(app, ["ae", "show"]).output
    assert "GW" in out and "11200" in out and "127.0.0.1" in out
    assert "PACS1 from 10.0.0.5" in out and "MOD2 from any host" in out
    assert cli_env.invoke(app, ["ae", "disallow", "MOD2"]).exit_code == 0
    r = cli_env.invoke(app, ["ae", "disallow", "MOD2"])
    assert r.exit_code == 1 and "not on the allow-list" in r.output
    r = cli_env.invoke(app, ["ae", "set", "--port", "70000"])
    assert r.exit_code == 2 and "port must be between" in r.output

    r = cli_env.invoke(app, ["pacs", "add", "main", "--ae-title", "ORTHANC", "--host",
                             "127.0.0.1", "--port", "4242", "--retrieve", "get",
                             "--max-associations", "3"])
    assert r.exit_code == 0, r.output
    r = cli_env.invoke(app, ["pacs", "add", "main", "--ae-title", "X", "--host", "h",
                             "--port", "1"])
    assert r.exit_code == 2 and "already exists" in r.output
    out = cli_env.invoke(app, ["pacs", "list"]).output
    assert "main" in out and "ORTHANC" in out and "get" in out and "4242" in out
    assert cli_env.invoke(app, ["pacs", "remove", "main"]).exit_code == 0
    r = cli_env.invoke(app, ["pacs", "remove", "main"])
    assert r.exit_code == 2 and "no PACS node" in r.output


def test_cli_pacs_echo_ok_rejected_refused(cli_env: CliRunner, db_url: str, home: Path,
                                           start_listener: Any) -> None:
    from service.core.keys import SiteKeys
    from tests.peers.net import free_port

    listener = start_listener(db_url, SiteKeys.load(home / "keys" / "site.key"), home / "sp")
    port = str(listener.port)
    for name in ("gw", "closed"):
        r = cli_env.invoke(app, ["pacs", "add", name, "--ae-title", "DEIDGATE", "--host",
                                 "127.0.0.1", "--port",
                                 port if name == "gw" else str(free_port())])
        assert r.exit_code == 0, r.output
    r = cli_env.invoke(app, ["pacs", "echo", "gw"])  # our own AE is not on the allow-list
    assert r.exit_code == 1
    assert "rejected" in r.output and "Calling AE title not recognised" in r.output, r.output
    assert cli_env.invoke(app, ["ae", "allow", "DEIDGATE"]).exit_code == 0
    r = cli_env.invoke(app, ["pacs", "echo", "gw"])
    assert r.exit_code == 0 and "C-ECHO ok in" in r.output and " ms" in r.output, r.output
    r = cli_env.invoke(app, ["pacs", "echo", "closed", "--timeout", "3"])
    assert r.exit_code == 1 and "refused" in r.output, r.output
