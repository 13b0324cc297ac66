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
from service.dicom.tls import NodeTls, TlsMode
from tests.peers.certs import TestPki


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


def test_tls_policy_columns_validated_stored_and_resolved(tmp_path: Path) -> None:
    """The TLS columns round-trip; the listener's policy for a caller comes from its entry,
    else from the PACS node with its AE title; one certificate pins one AE title only."""
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    upgrade(url)
    cfg = tmp_path / "dicom.yaml"
    cfg.write_text(
        "allow: [{ae_title: PACS1}, {ae_title: MOD, tls_mode: mtls-required,"
        " tls_pin_name: mod.example}]\n"
        "nodes: [{name: main, ae_title: PACS1, host: h, port: 2762, tls_mode: mtls-required,"
        f" tls_pin_sha256: '{'AA:' * 31}AA'}}]\n")
    s = Settings(home=tmp_path)
    with session_scope(url) as ses:
        admin.seed(ses, s, admin.load_config_file(cfg))
    with session_scope(url) as ses:
        node = admin.get_node(ses, "main")
        assert (node.tls_mode, node.tls_pin_sha256) == ("mtls-required", "aa" * 32)
        assert node.tls == NodeTls(TlsMode.mtls, pin_sha256="aa" * 32)
        entries, nodes = admin.list_allowed(ses), admin.list_nodes(ses)
        assert admin.tls_pins(ses) == {"aa" * 32: "PACS1"}
        # PACS1's entry sets nothing: the node's policy governs its incoming associations
        pacs1 = admin.match_allowed(entries, "PACS1", "10.0.0.1")
        assert admin.incoming_tls(pacs1, nodes) == node.tls
        mod = admin.match_allowed(entries, "MOD", "10.0.0.1")
        assert admin.incoming_tls(mod, nodes) == NodeTls(TlsMode.mtls, pin_name="mod.example")
        assert admin.incoming_tls(None, nodes) == NodeTls()
        # a host-pinned entry wins over the any-host one for its address
        admin.allow(ses, "MOD", "10.9.9.9", tls_mode="tls", tls_allow_plain=True)
        entries = admin.list_allowed(ses)
        assert admin.match_allowed(entries, "MOD", "10.9.9.9").tls_allow_plain is True  # type: ignore[union-attr]
        assert admin.match_allowed(entries, "MOD", "10.0.0.2").host is None  # type: ignore[union-attr]
        with pytest.raises(admin.PinConflict, match="already pinned"):
            admin.set_caller_tls(ses, "MOD", tls_mode="tls", tls_pin_sha256="aa" * 32)
        with pytest.raises(admin.InvalidSetting, match="TLS mode"):
            admin.set_node_tls(ses, "main", tls_mode="ssl")
        with pytest.raises(admin.InvalidSetting, match="SHA-256"):
            admin.set_node_tls(ses, "main", tls_mode="tls", tls_pin_sha256="xyz")
        with pytest.raises(admin.UnknownCaller):
            admin.set_caller_tls(ses, "NOBODY", tls_mode="tls")
        rows = admin.set_caller_tls(ses, "MOD", tls_mode="off")
        assert [r.tls_mode for r in rows] == ["off", "off"]
        assert admin.set_node_tls(ses, "main").tls == NodeTls()
        assert admin.tls_pins(ses) == {}


def test_cli_tls_policies(cli_env: CliRunner, tmp_path: Path) -> None:
    pki = TestPki(tmp_path / "pki")
    pacs_cert = pki.leaf("PACS1")
    r = cli_env.invoke(app, ["pacs", "add", "main", "--ae-title", "PACS1", "--host",
                             "127.0.0.1", "--port", "2762", "--tls", "mtls-required",
                             "--pin-cert", str(pacs_cert.cert)])
    assert r.exit_code == 0, r.output
    assert f"tls=mtls-required pin={pacs_cert.sha256[:16]}" in r.output
    out = cli_env.invoke(app, ["pacs", "list"]).output
    assert "tls=mtls-required" in out
    r = cli_env.invoke(app, ["pacs", "tls", "main", "--mode", "tls", "--pin-name", "pacs1.lan"])
    assert r.exit_code == 0 and "main: tls=tls name=pacs1.lan" in r.output, r.output  # replaced
    r = cli_env.invoke(app, ["pacs", "tls", "main", "--mode", "tls", "--pin-name", "pacs1.lan",
                             "--pin-cert", str(pacs_cert.cert)])
    assert f"pin={pacs_cert.sha256[:16]}… name=pacs1.lan" in r.output, r.output
    r = cli_env.invoke(app, ["pacs", "tls", "main", "--mode", "ssl3"])
    assert r.exit_code == 2 and "TLS mode" in r.output

    assert cli_env.invoke(app, ["ae", "allow", "MOD"]).exit_code == 0
    r = cli_env.invoke(app, ["ae", "allow", "MOD", "--tls", "mtls-required", "--allow-plain"])
    assert r.exit_code == 0 and "tls=mtls-required plain-allowed" in r.output, r.output
    assert "tls=mtls-required plain-allowed" in cli_env.invoke(app, ["ae", "show"]).output
    r = cli_env.invoke(app, ["ae", "allow", "MOD"])  # no TLS option: the policy stays
    assert "tls=mtls-required" in r.output
    r = cli_env.invoke(app, ["ae", "tls", "MOD", "--mode", "tls", "--pin-sha256",
                             "AB:" * 31 + "CD"])
    assert r.exit_code == 0 and "MOD (1 entry): tls=tls pin=abababababababab" in r.output
    # PACS1's certificate cannot be pinned to MOD as well
    r = cli_env.invoke(app, ["ae", "tls", "MOD", "--mode", "tls", "--pin-cert",
                             str(pacs_cert.cert)])
    assert r.exit_code != 0 and "already pinned" in r.output
    r = cli_env.invoke(app, ["ae", "tls", "NOBODY", "--mode", "tls"])
    assert r.exit_code != 0 and "not on the allow-list" in r.output
    r = cli_env.invoke(app, ["ae", "tls", "MOD", "--pin-cert", str(tmp_path / "none.pem")])
    assert r.exit_code == 2 and "not a readable certificate" in r.output
