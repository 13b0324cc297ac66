"""Prometheus metrics, with labels from fixed vocabularies only, collected across processes.

No PHI in a label: every label value passes its ``Vocabulary``; a value outside it becomes
``other`` and is counted in ``deidgate_metric_label_rejected_total{metric,label}``, so drift is
visible and nothing a caller computed from data (a patient ID, a file name, an error message)
can become a time series. Reason codes are the ``code`` literals of the error hierarchy and the
refusal enums (a test scans the source for new ones); nodes are the configured node names and
AE titles, declared by the process (``declare_nodes``).

Processes. The listener group, each Celery prefork child and the API are separate processes,
so metrics use prometheus-client's multiprocess mode: each process writes its samples to
memory-mapped files in ``HOME/metrics`` (``configure`` at process start, before forking), and
the one process that serves ``/metrics`` merges them (``MultiProcessCollector``). Counters and
histograms of a process that exited stay in the sum, as counters must. ``reset_dir`` runs once
at the start of the whole service (the supervisor, before it starts children), so a restart
begins from zero, which Prometheus reads as an ordinary counter reset. There are no
file-backed gauges: queue depths are read from the broker at scrape time (``QueueDepths``), so a
dead process cannot leave a stale depth behind. prometheus-client switches to multiprocess mode
only through ``PROMETHEUS_MULTIPROC_DIR``; ``configure`` sets it (children inherit it) and swaps
in the file-backed value class, which is the library's own switch, for this process.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, make_asgi_app, values
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from service.core.config import Settings

OTHER = "other"
STAGES = ("receive", "resolve", "retrieve", "deidentify", "verify", "forward", "score", "sweep")
CATEGORIES = ("likely-normal", "standard", "priority")
DEVICES = ("cpu", "cuda", "mps")
QUEUES = ("default", "score", "deid")
AUDIT_DROPS = ("queue-full", "oversize", "closed", "unbuildable")
REASONS = frozenset({
    # service.core.errors and the error classes across service/ and workers/
    "error", "configuration", "policy-invalid", "site-key", "rejected", "not-dicom",
    "truncated", "unsupported-sop-class", "policy-refused", "pixel-refused", "retryable",
    "dead-lettered", "pseudonym-collision", "lookup-refused", "mapping-integrity", "backup",
    "exam-unknown", "thumbnail-unavailable", "model-registry", "accession-unknown", "cancelled",
    "token", "token-not-found", "invalid-token", "token-name", "token-role", "account",
    "account-not-found", "account-name", "account-password", "account-role",
    "job-not-found", "invalid-job-request", "dicom-invalid-setting", "pacs-error",
    "pacs-refused", "pacs-node-unknown", "pacs-node-exists", "pacs-aborted", "pacs-busy",
    "pacs-find-failed", "pacs-rejected", "pacs-retrieve-failed", "pacs-timed-out",
    "pacs-unreachable", "move-destination-refused", "move-refused", "destination-store-failed",
    "destination-unavailable", "scores-invalid", "preprocess-refused", "model-card-invalid",
    "bad-action", "unknown-action", "deflated", "engine-error", "identity-survived",
    "internal-error", "io", "malformed", "malformed-element", "missing-uid", "no-source",
    "not-a-file", "source-changed", "spool-missing", "spool-full", "pixel-attrs", "pixel-codec",
    "pixel-lossy", "pixel-malformed", "pixel-photometric", "pixel-short", "pixel-stage-missing",
    "pixel-text", "pixel-undecodable",
    # the DICOM edge: allow-list and TLS refusals (service.dicom.tls.TlsRefusal)
    "calling-ae-not-allowed", "rate-limited", "tls-config", "tls-refused",
    "tls-plain-connection", "tls-required", "tls-protocol-version", "tls-unknown-ca",
    "tls-certificate-expired", "tls-certificate-not-yet-valid", "tls-certificate-invalid",
    "tls-hostname-mismatch", "tls-client-certificate-required", "tls-certificate-pin-mismatch",
    "tls-certificate-ae-mismatch", "tls-handshake-timeout", "tls-handshake-failed",
    "tls-not-configured", "tls-pin-conflict", "allowlist-unknown", "inflate-cap",
})
_NODE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 _.-]{0,63}$")


class Vocabulary:
    """The values one label may take; anything else is reported as ``other``."""

    def __init__(self, name: str, allowed: Iterable[str],
                 normalise: Callable[[str], str] | None = None) -> None:
        self.name = name
        self._allowed = set(allowed)
        self._normalise = normalise
        self._lock = threading.Lock()

    def add(self, values: Iterable[str]) -> None:
        with self._lock:
            self._allowed |= set(values)

    def __contains__(self, value: object) -> bool:
        return isinstance(value, str) and value in self._allowed

    def label(self, value: object) -> str | None:
        """The label value, or None when ``value`` is outside the vocabulary."""
        if not isinstance(value, str):
            return None
        if self._normalise is not None:
            value = self._normalise(value)
        return value if value in self._allowed else None


def _category(value: str) -> str:
    return value.strip().lower().replace("_", "-")


class Metrics:
    """Every metric of the gateway; one per process (``configure``), passed to who records."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 nodes: Iterable[str] = ()) -> None:
        r = registry
        self.vocab = {
            "node": Vocabulary("node", ()), "stage": Vocabulary("stage", STAGES),
            "reason": Vocabulary("reason", REASONS),
            "category": Vocabulary("category", CATEGORIES, _category),
            "device": Vocabulary("device", DEVICES, str.lower),
            "drop": Vocabulary("drop", AUDIT_DROPS),
        }
        self.declare_nodes(nodes)
        self.rejected = Counter("deidgate_metric_label_rejected", "Label values refused by a "
                                "vocabulary (reported as 'other')", ["metric", "label"],
                                registry=r)
        self.received = Counter("deidgate_instances_received", "Instances durably spooled",
                                ["node"], registry=r)
        self.deidentified = Counter("deidgate_instances_deidentified",
                                    "Instances de-identified and committed", ["node"], registry=r)
        self.refused = Counter("deidgate_instances_refused",
                               "Instances refused (quarantined), by stage and reason",
                               ["stage", "reason"], registry=r)
        self.failed = Counter("deidgate_instances_failed",
                              "Attempts that failed (retried or dead-lettered)",
                              ["stage", "reason"], registry=r)
        self.associations_refused = Counter("deidgate_associations_refused",
                                            "DICOM associations or connections refused",
                                            ["reason"], registry=r)
        self.stage_seconds = Histogram(
            "deidgate_stage_duration_seconds", "Time per stage of one unit of work", ["stage"],
            buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300, 900),
            registry=r)
        self.inference_seconds = Histogram(
            "deidgate_model_inference_seconds", "Model inference time per exam", ["device"],
            buckets=(.01, .025, .05, .1, .25, .5, 1, 2, 5, 10, 30), registry=r)
        self.scores = Histogram("deidgate_score", "Exam scores, by category", ["category"],
                                buckets=tuple(i / 20 for i in range(1, 21)), registry=r)
        self.audit_dropped = Counter("deidgate_audit_messages_dropped",
                                     "ATNA messages not sent to the audit repository", ["reason"],
                                     registry=r)

    def declare_nodes(self, names: Iterable[str]) -> None:
        """Node names and AE titles from the configuration (never from a request or a file)."""
        self.vocab["node"].add(n for n in names if _NODE_NAME.match(n))

    def _label(self, metric: str, label: str, value: object) -> str:
        ok = self.vocab[label].label(value)
        if ok is None:
            self.rejected.labels(metric, label).inc()
            return OTHER
        return ok

    # --- recording (each never raises into the caller's work) -------------------------------

    def instance_received(self, node: str, n: int = 1) -> None:
        self.received.labels(self._label("received", "node", node)).inc(n)

    def instance_deidentified(self, node: str, n: int = 1) -> None:
        self.deidentified.labels(self._label("deidentified", "node", node)).inc(n)

    def instance_refused(self, stage: str, reason: str) -> None:
        self.refused.labels(self._label("refused", "stage", stage),
                            self._label("refused", "reason", reason)).inc()

    def instance_failed(self, stage: str, reason: str) -> None:
        self.failed.labels(self._label("failed", "stage", stage),
                           self._label("failed", "reason", reason)).inc()

    def association_refused(self, reason: str) -> None:
        self.associations_refused.labels(self._label("associations", "reason", reason)).inc()

    @contextlib.contextmanager
    def time_stage(self, stage: str) -> Iterator[None]:
        """Observed whether the stage succeeds or raises (a slow failure is still slow)."""
        child = self.stage_seconds.labels(self._label("stage_duration", "stage", stage))
        start = time.perf_counter()
        try:
            yield
        finally:
            child.observe(time.perf_counter() - start)

    def observe_inference(self, seconds: float, device: str) -> None:
        self.inference_seconds.labels(self._label("inference", "device", device)).observe(seconds)

    def observe_score(self, category: str, score: float) -> None:
        self.scores.labels(self._label("score", "category", category)).observe(score)

    def audit_drop(self, reason: str) -> None:
        """Pass as ``on_drop`` to ``AtnaExporter.from_settings``."""
        self.audit_dropped.labels(self._label("audit_dropped", "drop", reason)).inc()


def reason_of(exc: BaseException) -> str:
    """An exception's reason label: its ``code`` when it has one (our hierarchy), else the
    generic ``error``; never its message."""
    code = getattr(exc, "code", None)
    return code if isinstance(code, str) else "error"


# --- processes --------------------------------------------------------------------------------

def metrics_dir(settings: Settings) -> Path:
    return settings.metrics_dir or settings.home / "metrics"


def reset_dir(settings: Settings) -> Path:
    """Once per service start, before any process records: drop the last run's files."""
    path = metrics_dir(settings)
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True, mode=0o700)
    return path


def configure(settings: Settings, *, nodes: Iterable[str] = ()) -> Metrics:
    """This process's metrics, written to the shared folder (see the module docstring), and
    installed as the process's ``current()`` (this host's node name declared with ``nodes``)."""
    global _current, _node, _configured
    from service.core.queues import node_name

    path = metrics_dir(settings)
    with _current_lock:
        if _current is not None and _configured == (os.getpid(), path):
            _current.declare_nodes(nodes)  # configured already (start_process): the same one
            return _current
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)  # the library's switch; children inherit
    values.ValueClass = values.MultiProcessValue()
    with _current_lock:
        _unregister(_current)
        _node = node_name(settings)
        _current = Metrics(registry=None, nodes=[_node, *nodes])
        _configured = (os.getpid(), path)
        return _current


# --- the process's metrics, for code that records (no PHI in any argument) -------------------

_current: Metrics | None = None
_configured: tuple[int, Path] | None = None
_node = "local"
_current_lock = threading.Lock()


def _unregister(m: Metrics | None) -> None:
    """Drop an earlier instance's metrics from the default registry (a process configured
    twice, as tests do), which would otherwise refuse the second set's names."""
    if m is None:
        return
    from prometheus_client import REGISTRY
    from prometheus_client.metrics import MetricWrapperBase

    for metric in vars(m).values():
        if isinstance(metric, MetricWrapperBase):
            with contextlib.suppress(KeyError):
                REGISTRY.unregister(metric)


def current() -> Metrics:
    """This process's metrics: the configured ones, else in-memory ones (a process that never
    called ``configure`` records into nothing anyone scrapes, and never fails for it)."""
    global _current
    with _current_lock:
        if _current is None:
            _current = Metrics(registry=CollectorRegistry(), nodes=[_node])
        return _current


def local_node() -> str:
    return _node


def count_received(n: int = 1, node: str | None = None) -> None:
    current().instance_received(node or _node, n)


def count_deidentified(n: int = 1, node: str | None = None) -> None:
    current().instance_deidentified(node or _node, n)


def count_refused(stage: str, reason: str) -> None:
    current().instance_refused(stage, reason)


def count_failed(stage: str, reason: str) -> None:
    current().instance_failed(stage, reason)


def time_stage(stage: str) -> contextlib.AbstractContextManager[None]:
    """``with metrics.time_stage("deidentify"): ...``"""
    return current().time_stage(stage)


def observe_inference(seconds: float, device: str = "cpu") -> None:
    """Model inference latency of one exam (the scoring worker calls this)."""
    current().observe_inference(seconds, device)


def count_score(category: str, score: float) -> None:
    """One exam scored: its category and score (``likely-normal|standard|priority``)."""
    current().observe_score(category, score)


class QueueDepths(Collector):
    """``deidgate_queue_depth{queue,node}`` read from the broker when scraped, and
    ``deidgate_broker_up`` (0 when the broker did not answer)."""

    def __init__(self, read: Callable[[], Mapping[str, int]]) -> None:
        self.read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("deidgate_broker_up", "1 when the broker answered the scrape")
        depth = GaugeMetricFamily("deidgate_queue_depth", "Messages waiting, per queue",
                                  labels=["queue", "node"])
        try:
            depths = self.read()
        except Exception:  # the scrape must answer even when the broker does not
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        for name, n in sorted(depths.items()):
            kind, _, node = name.partition(".")
            if kind not in QUEUES or (node and not _NODE_NAME.match(node)):
                kind, node = OTHER, ""
            depth.add_metric([kind, node], n)
        yield up
        yield depth


def broker_queue_depths(url: str, transport_options: Mapping[str, Any],
                        queues: Iterable[str]) -> dict[str, int]:
    """Messages waiting in each queue, asked of the broker through kombu (Redis lists, the
    filesystem transport's files; a queue never declared counts 0)."""
    from kombu import Connection
    from kombu.exceptions import ChannelError

    out: dict[str, int] = {}
    opts = {**transport_options, "max_retries": 0}  # a scrape must not wait out retries
    with Connection(url, transport_options=opts, connect_timeout=3) as conn:
        channel = conn.default_channel
        for q in queues:
            try:
                out[q] = int(channel.queue_declare(q, passive=True).message_count)
            except ChannelError:
                out[q] = 0
                channel = conn.default_channel  # a failed passive declare closes the channel
    return out


def scrape_registry(settings: Settings, *,
                    collectors: Iterable[Collector] = ()) -> CollectorRegistry:
    """The registry ``/metrics`` serves: every process's files merged, plus ``collectors``."""
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(metrics_dir(settings)))
    for c in collectors:
        registry.register(c)
    return registry


def metrics_app(registry: CollectorRegistry) -> Callable[..., Any]:
    """The ASGI app to mount at ``/metrics`` (``app.mount("/metrics", metrics_app(...))``)."""
    return make_asgi_app(registry)
