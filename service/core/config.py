"""The one settings object.

Built once at the edge (CLI entry, API startup, Celery worker start) and passed in; nothing else
reads ``os.environ``. Everything defaults to the embedded single-machine mode: a data folder
(``DEIDGATE_HOME``) holding SQLite, the spool, the output store and the site key.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    # a rejected value never appears in the error (a URL with a password, a patient's name in
    # a path): errors name the setting and the rule
    model_config = SettingsConfigDict(env_prefix="DEIDGATE_", extra="ignore", frozen=False,
                                      hide_input_in_errors=True)

    home: Path = Field(default=Path("./deidgate-data"), description="data folder")
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; SQLite inside the data folder when unset"
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker; server-less broker in the data folder if unset"
    )
    key_file: Path | None = Field(
        default=None, description="site secret key; generated as HOME/keys/site.key when unset"
    )
    project: str = Field(default="default", description="pseudonym namespace")
    default_policy: str = "mammography-screening"
    environment: Literal["development", "production"] = "production"

    # DICOM edge (seed values; the database holds the live configuration)
    ae_title: str = "DEIDGATE"
    dicom_host: str = "0.0.0.0"  # noqa: S104 - a DICOM listener must accept the PACS's connections
    dicom_port: int = 11112
    max_pdu: int = 1_048_576
    spool_free_floor_mb: int = 1024
    dicom_max_inflated_mb: int = Field(
        default=256, gt=0,
        description="largest inflated size of a Deflated Explicit VR Little Endian data set the "
                    "listener inflates to check it; past it the C-STORE is refused (0xC000)")
    listener_processes: int = Field(
        default=0, ge=0,
        description="listener processes sharing the port (SO_REUSEPORT); 0 = min(2, CPUs): "
                    "one Python process is GIL-bound near one core of receive work")
    dicom_config_file: Path | None = Field(
        default=None, description="YAML/TOML seeding local AE, allow-list and nodes on first use"
    )

    # Jobs and workers
    node_name: str = Field(
        default="", description="names this host's de-identification queue deid.<node>; hostname"
    )
    task_max_retries: int = 5
    task_retry_base_s: float = 2.0
    task_stale_s: int = Field(default=300, description="unfinished work older than this is redone")
    sweep_interval_s: int = 30

    # Scoring (issue 9): the score queue's worker
    score_model: Path | None = Field(
        default=None, description="model folder (card.yaml + weights) that scores new exams; "
                                  "unset: the registry's active model (deidgate model register)")
    score_device: str = Field(default="auto", description="auto (CUDA when present), cpu, cuda")
    score_batch_size: int = Field(default=16, ge=1, le=256)
    score_quiet_period_s: int | None = Field(
        default=None, ge=0, description="an incomplete exam is scored after this quiet time; "
                                        "unset: the model card's completeness.quiet_period_s")
    score_sr: bool = Field(default=True, description="write a DICOM SR (TID 1500) per exam")
    score_sr_to_destination: bool = Field(
        default=True, description="C-STORE the SR to the job's destination, beside its images")
    score_sr_node: str | None = Field(
        default=None, description="also C-STORE every SR to this configured node")

    # REST API
    api_host: str = "127.0.0.1"
    api_port: int = 8080

    # Security and operations (issue 11): TLS, HTTPS, ATNA audit export, metrics, logs
    dicom_tls_cert: Path | None = Field(default=None, description="PEM certificate (DICOM TLS)")
    dicom_tls_key: Path | None = Field(default=None, description="its private key, mode 0600")
    dicom_tls_ca: Path | None = Field(
        default=None, description="PEM bundle of CAs or node certificates trusted for peers")
    dicom_tls_port: int | None = Field(
        default=None, description="TLS listener port (DICOM's is 2762); unset: no TLS listener")
    dicom_tls_handshake_timeout_s: float = Field(default=10.0, gt=0)
    https_cert: Path | None = Field(default=None, description="PEM certificate for the API/UI")
    https_key: Path | None = Field(default=None, description="its private key, mode 0600")
    hsts_max_age_s: int = Field(default=31_536_000, ge=0)
    audit_syslog_host: str | None = Field(
        default=None, description="ATNA audit repository (syslog); unset: no export")
    audit_syslog_port: int | None = Field(
        default=None, description="unset: 514 (udp), 601 (tcp), 6514 (tls)")
    audit_syslog_transport: Literal["udp", "tcp", "tls"] = "tls"
    audit_syslog_ca: Path | None = Field(default=None, description="CA bundle for syslog TLS")
    audit_syslog_cert: Path | None = Field(default=None, description="client cert, syslog TLS")
    audit_syslog_key: Path | None = Field(default=None, description="its private key, 0600")
    audit_syslog_queue: int = Field(default=10_000, ge=1, description="messages held; then drop")
    audit_source_id: str = Field(default="", description="ATNA AuditSourceID; '' = ae_title")
    audit_enterprise_site_id: str = ""
    metrics_dir: Path | None = Field(
        default=None, description="prometheus multi-process folder; unset: HOME/metrics")
    log_format: Literal["text", "json"] = "text"
    # Web UI (service.web): sessions and sign-in rate limits
    web_session_idle_minutes: int = Field(default=30, ge=1, description="idle session expiry")
    web_session_max_hours: int = Field(default=12, ge=1, description="absolute session expiry")
    web_login_window_minutes: int = Field(default=15, ge=1, description="failure count window")
    web_login_max_failures: int = Field(default=5, ge=1, description="per account per window")
    web_login_max_failures_per_client: int = Field(
        default=20, ge=1, description="per client address per window")
    # Triage worklist (service.triage): an unread exam waiting longer than this rises to the
    # top whatever its score, so prioritisation never starves a low-scored exam.
    triage_max_wait_minutes: int = Field(
        default=4320, ge=1, le=525_600, description="maximum wait before an exam goes first")

    @field_validator("home", mode="after")
    @classmethod
    def _absolute_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @cached_property
    def db_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'deidgate.db'}"

    @property
    def site_key_path(self) -> Path:
        return self.key_file or self.home / "keys" / "site.key"

    @property
    def spool_dir(self) -> Path:
        return self.home / "spool"

    @property
    def quarantine_dir(self) -> Path:
        return self.home / "quarantine"

    @property
    def output_dir(self) -> Path:
        return self.home / "output"

    def ensure_dirs(self) -> None:
        for d in (self.home, self.spool_dir, self.quarantine_dir, self.output_dir):
            d.mkdir(parents=True, exist_ok=True)


def load_settings(**overrides: object) -> Settings:
    """Build settings from the environment (plus explicit overrides); call once per process."""
    return Settings(**overrides)  # type: ignore[arg-type]
