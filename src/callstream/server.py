"""The HTTP server: wires a backend's stores to the routes and runs uvicorn.

Backends: ``embedded`` (SQLite in the data directory, every partition in this process) and
``nats`` (NATS JetStream + PostgreSQL; partitions, the router and the indexer are shared
among processes through leases). The stages see the stores only through their protocols.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from callstream.accounts import ensure_default_account
from callstream.api.delivery import delivery_routes
from callstream.api.errors import ApiError, error_response
from callstream.api.event_streams import event_streams_routes
from callstream.api.live import LiveRoutes
from callstream.api.openapi import openapi_route
from callstream.api.voice_insights import voice_insights_routes
from callstream.config import Settings
from callstream.console import console_routes
from callstream.ingest.routes import IngestRoutes
from callstream.insights.call import CallInsights
from callstream.insights.engine import Engine
from callstream.insights.predictor import load_predictor
from callstream.insights.step import EngineConfig
from callstream.lifecycle import SHUTDOWN_GRACE, GracefulServer, Readiness, ShutdownGuard
from callstream.logs import configure as configure_logs
from callstream.metrics import Metrics
from callstream.sinks.registry import build_drivers
from callstream.store.control import ControlStore
from callstream.store.delivery import DeliveryStore
from callstream.store.insights import InsightsStore
from callstream.store.interfaces import (
    AccountStore,
    EngineStore,
    EventLog,
    OutputEvent,
    PartitionLeases,
    TelemetryLog,
)
from callstream.store.signal import HighWater
from callstream.store.sqlite.accounts import SqliteAccountStore
from callstream.store.sqlite.control import SqliteControlStore
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.delivery import SqliteDeliveryStore
from callstream.store.sqlite.engine import SqliteEngineStore, SqliteEventLog
from callstream.store.sqlite.insights import SqliteInsightsStore
from callstream.store.sqlite.schema import migrate
from callstream.store.sqlite.telemetry import SqliteTelemetryLog
from callstream.streams.delivery import DeliveryConfig, DeliveryService
from callstream.streams.exclusive import Exclusive
from callstream.streams.indexer import Cursors, Indexer
from callstream.streams.router import Router

DATABASE_FILE = "callstream.db"
PARTITIONS = 16


@dataclass(frozen=True)
class EmbeddedStores:
    """The embedded backend's stores on one SQLite database (also used by the CLI)."""

    db: Database
    accounts: SqliteAccountStore
    telemetry: SqliteTelemetryLog
    engine_store: SqliteEngineStore
    events: SqliteEventLog
    control: SqliteControlStore
    insights: SqliteInsightsStore
    delivery: SqliteDeliveryStore


def open_embedded(settings: Settings) -> EmbeddedStores:
    """The embedded backend on the data directory, migrated to this version."""
    db = Database(settings.data_dir / DATABASE_FILE)
    db.write_sync(migrate)
    events_written = HighWater()
    return EmbeddedStores(
        db=db,
        accounts=SqliteAccountStore(db),
        telemetry=SqliteTelemetryLog(db, PARTITIONS),
        engine_store=SqliteEngineStore(db, events_written),
        events=SqliteEventLog(db, events_written),
        control=SqliteControlStore(db),
        insights=SqliteInsightsStore(db),
        delivery=SqliteDeliveryStore(db),
    )


START_PATIENCE = 60.0
"""How long a starting server waits for its backend's servers to answer."""


@dataclass
class Services:
    """A backend's stores behind their protocols, as the stages and routes use them.

    ``start()`` connects and creates what is missing (the distributed backend; the
    embedded one is ready when built), ``close()`` stops everything ``start()`` started.
    ``leases`` makes the leases of a scope ("" for engine partitions; "router",
    "indexer" for one-active stages); None when one process runs everything.
    ``index``/``cursors`` feed the Voice Insights store from the events log when the
    engine does not do it itself (None in the embedded backend).
    """

    accounts: AccountStore
    telemetry: TelemetryLog
    engine_store: EngineStore
    events: EventLog
    control: ControlStore
    insights: InsightsStore
    delivery: DeliveryStore
    pending_timers: Callable[[], Awaitable[int]]
    leases: Callable[[str, int], PartitionLeases] | None = None
    index: Callable[[Sequence[OutputEvent]], Awaitable[None]] | None = None
    cursors: Cursors | None = None
    starts: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    stops: list[Callable[[], Awaitable[None]]] = field(default_factory=list)

    async def start(self, patience: float = START_PATIENCE) -> None:
        """Run each start step, retrying one that times out or cannot connect (a cluster
        still electing leaders, a database restarting) until ``patience`` seconds have
        passed; each step creates only what is missing, so running it again is safe."""
        deadline = time.monotonic() + patience
        for start in self.starts:
            delay = 0.5
            while True:
                try:
                    await start()
                    break
                except (TimeoutError, OSError) as exc:
                    if time.monotonic() + delay > deadline:
                        raise
                    print(
                        f"callstream: a backend is not answering yet ({exc!r}); "
                        f"trying again in {delay:g} s",
                        file=sys.stderr,
                        flush=True,
                    )
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 4.0)

    async def close(self) -> None:
        """Stop in the reverse order of starting; one failure does not skip the rest."""
        for stop in reversed(self.stops):
            try:
                await stop()
            except Exception as exc:  # closing anyway; say what did not close cleanly
                print(f"callstream: error while closing: {exc!r}", file=sys.stderr, flush=True)


def open_services(settings: Settings) -> Services:
    """The stores of the configured backend, built but not started (``await start()``)."""
    if settings.backend == "nats":
        from callstream.store.distributed import open_distributed

        return open_distributed(settings, PARTITIONS)
    embedded = open_embedded(settings)

    async def close_db() -> None:
        embedded.db.close()

    return Services(
        accounts=embedded.accounts,
        telemetry=embedded.telemetry,
        engine_store=embedded.engine_store,
        events=embedded.events,
        control=embedded.control,
        insights=embedded.insights,
        delivery=embedded.delivery,
        pending_timers=embedded.engine_store.pending_timers,
        stops=[close_db],
    )


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    code = {404: 20404, 405: 20004}.get(exc.status_code, exc.status_code)
    response = error_response(ApiError(exc.status_code, code, str(exc.detail)))
    # A 405 must say which methods the resource does allow (RFC 9110 §15.5.6).
    response.headers.update(exc.headers or {})
    return response


def create_app(settings: Settings) -> Starlette:
    services = open_services(settings)
    ingest = IngestRoutes(services.accounts, services.telemetry)
    live = LiveRoutes(services.accounts, services.events, settings.schema_base_url)
    logic = CallInsights(
        EngineConfig(partial_after=settings.partial_after, complete_after=settings.complete_after),
        load_predictor(settings.data_dir),
    )

    leases = services.leases
    engine = Engine(
        services.telemetry,
        services.engine_store,
        logic,
        leases=leases("", PARTITIONS) if leases is not None else None,
        rebalance_every=settings.lease_ttl / 4,
    )
    engine_on = "engine" in settings.role_set
    # Delivery: the router (events log -> per-sink queues) and the per-sink workers.
    delivery_on = "delivery" in settings.role_set

    def make_router() -> Router:
        return Router(
            services.events,
            services.control,
            services.delivery,
            schema_base_url=settings.schema_base_url,
        )

    # Distributed: one router at a time moves the routing cursor (its own lease); the
    # delivery workers all pull from the per-sink queues. The indexer runs with the engine.
    router: Router | Exclusive = make_router()
    indexer: Exclusive | None = None
    if leases is not None:
        router = Exclusive("router", leases("router", 1), make_router, settings.lease_ttl / 4)
        index, cursors = services.index, services.cursors
        if index is not None and cursors is not None:
            indexer = Exclusive(
                "indexer",
                leases("indexer", 1),
                lambda: Indexer(services.events, index, cursors),
                settings.lease_ttl / 4,
            )
    # Delivery settings and the per-app metrics registry (GET /metrics, metrics_token).
    delivery_config = DeliveryConfig.from_settings(settings)
    metrics = Metrics(
        token=settings.metrics_token,
        delivery=services.delivery,
        throttle=delivery_config.throttle,
        engine=engine if engine_on else None,
        timers_pending=services.pending_timers,
    )
    delivery = DeliveryService(
        services.delivery,
        services.control,
        services.accounts,
        allow_private=settings.allow_private_destinations,
        schema_base_url=settings.schema_base_url,
        drivers=build_drivers(settings),  # webhook, kinesis, segment
        config=delivery_config,
        latency=metrics.observe_latency,
    )

    async def health(request: Request) -> Response:
        # Unauthenticated on purpose (load balancers probe it); it reveals no account data.
        body: dict[str, object] = {"status": "ok"}
        if engine_on:
            body["engine_partitions_behind"] = engine.partitions_behind()
        return JSONResponse(body)

    readiness = Readiness(settings.role_set)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            await services.start()
        except BaseException:
            await services.close()
            raise
        account, created = await ensure_default_account(
            services.accounts, settings.account_sid, settings.auth_token
        )
        if created:
            print(
                f"Created the default account {account.sid}\n"
                f"  auth token: {account.auth_token}\n"
                f"  (kept in {settings.data_dir}; `callstream accounts list` shows it again)",
                file=sys.stderr,
                flush=True,
            )
        if engine_on:
            engine.start()
            if indexer is not None:
                indexer.start()
        if delivery_on:
            router.start()
            delivery.start()
        readiness.started()
        try:
            yield
        finally:
            readiness.stopping()
            await engine.stop()
            if indexer is not None:
                await indexer.stop()
            await router.stop()
            await _stop_delivery(delivery)
            await services.close()

    routes: list[BaseRoute] = [
        Route("/healthz", health, methods=["GET"]),
        Route("/readyz", readiness.endpoint, methods=["GET"]),
        Route("/v1/Telemetry", metrics.count_ingest(ingest.telemetry), methods=["POST"]),
        Route("/metrics", metrics.endpoint, methods=["GET"]),
        Route("/callstream/v1/Events", live.events, methods=["GET"]),
    ]
    # Event Streams v1 API routes (sinks, subscriptions, types, schemas) are added here.
    routes += event_streams_routes(services.accounts, services.control, settings)
    # Voice Insights v1 API routes (summaries, events, metrics) are added here.
    routes += voice_insights_routes(services.accounts, services.insights, settings.base_url)
    # Delivery operations: per-sink status, attempts, dead letters, replay, re-enable.
    routes += delivery_routes(
        services.accounts,
        services.control,
        services.delivery,
        settings.base_url,
        delivery_config.throttle,
    )
    # The web console (static app) and its data endpoints: live stream, active calls.
    routes += console_routes(
        services.accounts, services.events, services.insights, settings.schema_base_url
    )
    routes.append(openapi_route(settings.base_url))  # the document of every route above
    app = Starlette(
        routes=routes,
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
        lifespan=lifespan,
    )
    app.state.readiness = readiness
    return app


async def _stop_delivery(delivery: DeliveryService) -> None:
    """Let in-flight deliveries finish, for at most SHUTDOWN_GRACE seconds; then cancel
    them. A cancelled delivery stays claimed in its queue and is sent again after the next
    start (at-least-once), so cutting it short loses nothing."""
    stopped = asyncio.ensure_future(delivery.stop())
    done, _ = await asyncio.wait({stopped}, timeout=SHUTDOWN_GRACE)
    if not done:
        for task in delivery.workers.values():
            task.cancel()
    await stopped  # returns once the workers have ended; then it closes the drivers


def serve(settings: Settings) -> None:
    import uvicorn

    configure_logs(settings.log_format, settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(
        ShutdownGuard(app, app.state.readiness),  # ends long polls before uvicorn cancels them
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        lifespan="on",
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE),  # long polls must not hold a stop up
    )
    GracefulServer(config, app.state.readiness).run()
