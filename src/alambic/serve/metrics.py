"""The server's Prometheus metrics, in a registry of its own (so two apps in one process do not mix)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

disable_created_metrics()  # the _created series only double what a scrape needs
LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128)


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "alambic_requests", "Chat completion requests answered", ["model", "status"], registry=self.registry
        )
        self.tokens = Counter("alambic_tokens", "Tokens read and written", ["model", "kind"], registry=self.registry)
        self.latency = Histogram(
            "alambic_request_seconds",
            "Time to the whole answer",
            ["model"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.guard_hits = Counter(
            "alambic_guard_hits",
            "Requests and answers the guard refused",
            ["direction", "category"],
            registry=self.registry,
        )
        self.cascades = Counter("alambic_cascades", "Agent turns sent to the teacher", registry=self.registry)
        self.handoffs = Counter("alambic_handoffs", "Agent turns handed to a person", registry=self.registry)
        self.refused = Counter(
            "alambic_limited", "Requests turned away by a limit (429, 503, 413)", ["status"], registry=self.registry
        )
        self.queue = Gauge("alambic_queue_waiting", "Requests waiting for the model", registry=self.registry)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
