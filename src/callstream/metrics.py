"""Prometheus metrics at ``GET /metrics``: one ``CollectorRegistry`` per app, no global state.

Two kinds of figures:
- counted in this process as things happen: ingest requests (by status) and records, and
  the delivery latency histogram (enqueue to acknowledgement, by sink type);
- read from the stores at each scrape, so they survive restarts and agree with the status
  API: deliveries per sink by outcome (delivered, failed, retried, dead_lettered, as
  counters), queue depth, lag, throttled rate and consecutive failures per sink, engine lag
  per partition and pending timers.

/metrics is operator data across accounts, so it is closed unless ``metrics_token`` is set,
and then it wants ``Authorization: Bearer <metrics_token>``
(docs/decisions/0011-delivery-metrics-auth.md). Prometheus sends that with
``authorization: {credentials: ...}``.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable, Iterator, Sequence

import msgspec
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import Collector
from starlette.requests import Request
from starlette.responses import Response

from callstream.api.errors import ApiError, error_body
from callstream.insights.engine import Engine
from callstream.store.delivery import DeliveryStore, SinkStats
from callstream.streams.throttle import ThrottlePolicy

Handler = Callable[[Request], Awaitable[Response]]

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 3600)
_OUTCOMES = ("delivered", "failed", "retried", "dead_lettered")


class _Accepted(msgspec.Struct):
    accepted: int


class _Snapshot(msgspec.Struct, frozen=True):
    at: float
    sinks: list[SinkStats]
    timers_pending: int | None
    partition_lag: list[int] | None


class _StoreCollector(Collector):
    """Yields the figures of the latest store snapshot (taken by ``Metrics.refresh``)."""

    def __init__(self, metrics: Metrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterator[Metric]:
        snapshot = self._metrics.snapshot
        if snapshot is None:
            return
        events = CounterMetricFamily(
            "callstream_delivery_events",
            "Events per sink by outcome (failed: carried by a failed request).",
            labels=["sink_sid", "outcome"],
        )
        depth = GaugeMetricFamily(
            "callstream_delivery_queue_depth", "Events queued per sink.", labels=["sink_sid"]
        )
        lag = GaugeMetricFamily(
            "callstream_delivery_lag_seconds",
            "Age of the oldest queued event per sink (0 when none).",
            labels=["sink_sid"],
        )
        rate = GaugeMetricFamily(
            "callstream_delivery_throttled_rate",
            "Send-rate cap in events/s of throttled sinks (absent when not throttled).",
            labels=["sink_sid"],
        )
        failures = GaugeMetricFamily(
            "callstream_delivery_consecutive_failures",
            "Failed requests in a row per sink.",
            labels=["sink_sid"],
        )
        policy = self._metrics.throttle
        for stats in snapshot.sinks:
            sid = stats.sink_sid
            for outcome in _OUTCOMES:
                events.add_metric([sid, outcome], getattr(stats, outcome))
            depth.add_metric([sid], stats.pending)
            oldest = stats.oldest_enqueued_at
            lag.add_metric([sid], 0.0 if oldest is None else max(0.0, snapshot.at - oldest))
            current = policy.current(stats.throttled_rate, stats.last_error_at, snapshot.at)
            if current is not None:
                rate.add_metric([sid], current)
            failures.add_metric([sid], stats.consecutive_failures)
        yield from (events, depth, lag, rate, failures)
        if snapshot.timers_pending is not None:
            yield GaugeMetricFamily(
                "callstream_engine_timers_pending",
                "Summary timers waiting to fire.",
                value=snapshot.timers_pending,
            )
        if snapshot.partition_lag is not None:
            partitions = GaugeMetricFamily(
                "callstream_engine_partition_lag_offsets",
                "Telemetry-log offsets between a partition's head and the engine's cursor.",
                labels=["partition"],
            )
            for partition, behind in enumerate(snapshot.partition_lag):
                partitions.add_metric([str(partition)], behind)
            yield partitions


class Metrics:
    def __init__(
        self,
        *,
        token: str | None,
        delivery: DeliveryStore,
        throttle: ThrottlePolicy,
        engine: Engine | None = None,
        timers_pending: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self._token = token
        self._delivery = delivery
        self._engine = engine
        self._timers_pending = timers_pending
        self.throttle = throttle
        self.snapshot: _Snapshot | None = None
        self.registry = CollectorRegistry()
        self.ingest_requests = Counter(
            "callstream_ingest_requests",
            "Telemetry ingest requests by HTTP status.",
            ["status"],
            registry=self.registry,
        )
        self.ingest_records = Counter(
            "callstream_ingest_records",
            "Telemetry records accepted (stored durably).",
            registry=self.registry,
        )
        self.delivery_latency = Histogram(
            "callstream_delivery_latency_seconds",
            "Seconds from an event's enqueue for a sink to the sink's acknowledgement.",
            ["sink_type"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_StoreCollector(self))

    # -- fed by the app ----------------------------------------------------------------------

    def observe_latency(self, sink_type: str, seconds: Sequence[float]) -> None:
        histogram = self.delivery_latency.labels(sink_type)
        for value in seconds:
            histogram.observe(value)

    def count_ingest(self, handler: Handler) -> Handler:
        """``handler`` (the ingest route), counting requests and accepted records."""

        async def counted(request: Request) -> Response:
            try:
                response = await handler(request)
            except ApiError as exc:
                self.ingest_requests.labels(str(exc.status)).inc()
                raise
            except Exception:
                self.ingest_requests.labels("500").inc()
                raise
            self.ingest_requests.labels(str(response.status_code)).inc()
            if response.status_code == 202:
                try:
                    accepted = msgspec.json.decode(bytes(response.body), type=_Accepted).accepted
                except msgspec.DecodeError:
                    accepted = 0
                self.ingest_records.inc(accepted)
            return response

        return counted

    # -- served ------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Read the store-held figures for the next collection."""
        lag: list[int] | None = None
        if self._engine is not None:
            lag = [max(0, w.log.last_offset(w.partition) - w.cursor) for w in self._engine.workers]
        timers = None if self._timers_pending is None else await self._timers_pending()
        self.snapshot = _Snapshot(
            at=time.time(),
            sinks=await self._delivery.all_sink_stats(),
            timers_pending=timers,
            partition_lag=lag,
        )

    def _refuse(self, request: Request) -> Response | None:
        if not self._token:
            return _error(
                404,
                20404,
                "/metrics is off: set the metrics_token setting (CALLSTREAM_METRICS_TOKEN) "
                "and scrape with Authorization: Bearer <token>",
            )
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), self._token.encode()
        ):
            response = _error(401, 20003, "/metrics wants Authorization: Bearer <metrics_token>")
            response.headers["WWW-Authenticate"] = 'Bearer realm="callstream metrics"'
            return response
        return None

    async def endpoint(self, request: Request) -> Response:
        refused = self._refuse(request)
        if refused is not None:
            return refused
        await self.refresh()
        return Response(
            generate_latest(self.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )


def _error(status: int, code: int, message: str) -> Response:
    return Response(
        error_body(status, code, message), status_code=status, media_type="application/json"
    )
