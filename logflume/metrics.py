"""Per-component counters and gauges, exposed on an optional Prometheus endpoint.

Each process owns one :class:`Metrics` (its own prometheus registry, so tests
can build many pipelines in one interpreter).  Components get a
:class:`ComponentMetrics` view that adds their ``kind`` and ``component``
labels, so a plugin author writes ``self.metrics.counter("files_opened").inc()``.
"""

from __future__ import annotations

import threading
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge

PREFIX = "logflume_"
_BASE_LABELS = ("kind", "component")


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._metrics: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._server: Any = None
        #: What ``/status`` and ``/ready`` report (a ``logflume.status.PipelineStatus``), set by the daemon.
        self.status: Any = None

    def _get(self, cls: type, name: str, doc: str, labels: tuple[str, ...]) -> Any:
        full = PREFIX + name
        with self._lock:
            metric = self._metrics.get(full)
            if metric is None:
                metric = cls(full, doc or name, _BASE_LABELS + labels, registry=self.registry)
                self._metrics[full] = metric
            return metric

    def component(self, kind: str, name: str) -> ComponentMetrics:
        return ComponentMetrics(self, kind, name)

    def value(self, name: str, **labels: str) -> float:
        """Current value of a sample (``bytes_in_total`` etc.), 0 if never set: for tests and `status`."""
        full = PREFIX + name
        v = self.registry.get_sample_value(full, labels)
        return 0.0 if v is None else v

    def serve(self, host: str, port: int, tap_token: str | None = None) -> None:
        """Expose ``/metrics``, ``/health``, ``/ready``, ``/status`` and, to holders of ``tap_token``, ``/tap``;
        raises OSError if the port is taken."""
        from logflume.status import StatusServer

        self._server = StatusServer(host, port, self, tap_token)

    def set_tap_token(self, token: str | None) -> None:
        """A reload's new ``tap_token``: taps already attached go on; new ones need the new token."""
        if self._server is not None:
            self._server.tap_token = token

    @property
    def address(self) -> tuple[str, int] | None:
        """Bound address of the endpoint (port 0 in the config picks a free one)."""
        return self._server.server_address[:2] if self._server is not None else None

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None


class ComponentMetrics:
    """Metrics pre-labelled with one component's kind and name."""

    def __init__(self, metrics: Metrics, kind: str, name: str) -> None:
        self._m = metrics
        self._labels = {"kind": kind, "component": name}
        self.bytes_in = self.counter("bytes_in", "Bytes accepted by the component")
        self.chunks_in = self.counter("chunks_in", "Chunks accepted by the component")
        self.bytes_out = self.counter("bytes_out", "Bytes handed on (committed) by the component")
        self.chunks_out = self.counter("chunks_out", "Chunks handed on (committed) by the component")
        self.retries = self.counter("retries", "Delivery attempts that failed and were retried")
        self.errors = self.counter("errors", "Errors seen by the component")

    def counter(self, name: str, doc: str = "", **labels: str) -> Any:
        m = self._m._get(Counter, name, doc, tuple(labels))
        return m.labels(**self._labels, **labels)

    def gauge(self, name: str, doc: str = "", **labels: str) -> Any:
        m = self._m._get(Gauge, name, doc, tuple(labels))
        return m.labels(**self._labels, **labels)

    def remove(self, name: str, **labels: str) -> None:
        """Drop one labelled series (say, of a file no longer followed) so that series do not pile up."""
        with self._m._lock:
            metric = self._m._metrics.get(PREFIX + name)
        if metric is not None:
            try:
                metric.remove(*self._labels.values(), *labels.values())
            except KeyError:
                pass  # never set
