"""Migration 0012 on both back-ends: received instances record the node whose spool holds the
file; rows that predate the column get the default node (the upgrading host's)."""

from __future__ import annotations

from sqlalchemy import inspect, text

from service.db.migrate import current_heads, script_heads, upgrade
from service.db.session import get_engine


def test_existing_rows_get_the_default_node(db_url: str) -> None:
    upgrade(db_url, "0003_dicom")
    with get_engine(db_url).begin() as c:
        for i in (1, 2):
            c.execute(text(
                "INSERT INTO dicom_received_instances (id, sop_key, series_key, study_key, "
                "sop_class_uid, transfer_syntax, spool_path, calling_ae, size_bytes, "
                "received_at, status) VALUES (:i, :k, 's', 't', '1.2', '1.2', '/s', 'AE', 1, "
                "CURRENT_TIMESTAMP, 'received')"), {"i": i, "k": f"sop{i}"})
    upgrade(db_url, default_node="mammo1")
    assert current_heads(db_url) == script_heads(db_url)
    with get_engine(db_url).connect() as c:
        assert list(c.execute(text(
            "SELECT id, node FROM dicom_received_instances ORDER BY id"))) == [
            (1, "mammo1"), (2, "mammo1")]
    col = {c["name"]: c for c in inspect(get_engine(db_url)).get_columns(
        "dicom_received_instances")}["node"]
    assert col["nullable"] is False  # every row names its host


def test_downgrade_drops_the_column(db_url: str) -> None:
    upgrade(db_url, "0012_received_node", default_node="n1")
    upgrade(db_url)  # the other branches too, then back down on this one only
    from alembic import command

    from service.db.migrate import alembic_config

    cfg = alembic_config(db_url)
    with get_engine(db_url).begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0003_dicom")
    cols = {c["name"] for c in inspect(get_engine(db_url)).get_columns(
        "dicom_received_instances")}
    assert "node" not in cols
