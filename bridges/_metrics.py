"""The bridge server's Prometheus metrics (prometheus-client), off unless ``condpay bridge serve
--metrics-addr HOST:PORT`` (or ``CONDPAY_BRIDGE_METRICS_ADDR``) asks for them.

    condpay_bridge_rpcs_total{method,code,reason}   calls answered, by status code and reason
    condpay_bridge_rpc_duration_seconds{method}     latency histogram per method
    condpay_bridge_tip_height                       the newest sealed block
    condpay_bridge_final_height                     the newest block with a quorum certificate
    condpay_bridge_expired_transfers_total          prepared transfers expired by the block timer

The bridge is one process, so one registry; a scrape is served from a thread, never the loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from bridges._model import TickResult

if TYPE_CHECKING:
    from wsgiref.simple_server import WSGIServer

LATENCY_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


class BridgeMetrics:
    """The bridge server's series; one per process (they register in the default registry)."""

    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram, disable_created_metrics

        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.rpcs = Counter(
            "condpay_bridge_rpcs",
            "Calls answered, by method, status code and reason.",
            ("method", "code", "reason"),
        )
        self.rpc_seconds = Histogram(
            "condpay_bridge_rpc_duration_seconds",
            "Time from a call's arrival to its answer, by method.",
            ("method",),
            buckets=LATENCY_BUCKETS,
        )
        self.tip_height = Gauge("condpay_bridge_tip_height", "The newest sealed block.")
        self.final_height = Gauge(
            "condpay_bridge_final_height", "The newest block with a quorum certificate."
        )
        self.expired = Counter(
            "condpay_bridge_expired_transfers", "Prepared transfers expired by the block timer."
        )

    def rpc(self, method: str, code: str, reason: str, seconds: float) -> None:
        self.rpcs.labels(method, code, reason).inc()
        self.rpc_seconds.labels(method).observe(seconds)

    def tick(self, result: TickResult) -> None:
        self.tip_height.set(result.tip_height)
        self.final_height.set(result.final_height)
        self.expired.inc(result.expired_count)


_process_metrics: BridgeMetrics | None = None


def process_metrics() -> BridgeMetrics:
    """This process's :class:`BridgeMetrics`, made on first use."""
    global _process_metrics
    if _process_metrics is None:
        _process_metrics = BridgeMetrics()
    return _process_metrics


def serve_metrics(addr: str) -> tuple[WSGIServer, int]:
    """Serve ``/metrics`` on ``addr`` (HOST:PORT; port 0: a free one) from a thread; the HTTP
    server (to ``shutdown()``) and its port. ValueError for anything but HOST:PORT."""
    from prometheus_client import REGISTRY, start_http_server

    host, sep, port = addr.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"--metrics-addr {addr!r} is not HOST:PORT")
    server, _thread = start_http_server(int(port), addr=host.strip("[]"), registry=REGISTRY)
    bound: int = server.server_address[1]
    return server, bound
