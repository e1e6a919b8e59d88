"""Opening the distributed backend: NATS JetStream (logs, engine state, leases, delivery
queues) and PostgreSQL (accounts, control plane, Voice Insights, delivery books).

Everything is built without I/O so the server can wire its routes first; ``start()`` (run
by the server's lifespan, on its event loop) migrates PostgreSQL, opens the pool, connects
to NATS and creates the streams and buckets that are missing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nats.aio.client import Client
from psycopg_pool import AsyncConnectionPool

from callstream.config import Settings, SettingsError
from callstream.store.interfaces import PartitionLeases
from callstream.store.nats.delivery import NatsDeliveryStore
from callstream.store.nats.engine import NatsEngineStore
from callstream.store.nats.events import NatsEventLog
from callstream.store.nats.leases import NatsPartitionLeases
from callstream.store.nats.telemetry import NatsTelemetryLog
from callstream.store.postgres.accounts import PostgresAccountStore
from callstream.store.postgres.control import PostgresControlStore
from callstream.store.postgres.database import Pool
from callstream.store.postgres.delivery import PostgresDeliveryLedger
from callstream.store.postgres.insights import PostgresInsightsStore
from callstream.store.postgres.schema import migrate

if TYPE_CHECKING:
    from callstream.server import Services


def nats_servers(url: str) -> list[str]:
    """``nats://a:4222,nats://b:4222`` -> the list of seed servers."""
    return [part.strip() for part in url.split(",") if part.strip()]


def open_distributed(settings: Settings, partitions: int) -> Services:
    from callstream.server import Services

    if not settings.nats_url:
        raise SettingsError("BACKEND=nats needs NATS_URL (--nats-url or CALLSTREAM_NATS_URL)")
    if not settings.database_url:
        raise SettingsError(
            "BACKEND=nats needs DATABASE_URL (--database-url or CALLSTREAM_DATABASE_URL)"
        )
    servers = nats_servers(settings.nats_url)
    database_url = settings.database_url
    replicas = settings.nats_replicas
    nc = Client()
    pool: Pool = AsyncConnectionPool(
        database_url,
        min_size=1,
        max_size=settings.database_pool_size,
        open=False,
        name="callstream",
    )
    engine_leases = NatsPartitionLeases(nc, partitions, replicas, ttl=settings.lease_ttl)
    telemetry = NatsTelemetryLog(nc, partitions, replicas)
    events = NatsEventLog(nc, replicas)
    engine_store = NatsEngineStore(nc, replicas, leases=engine_leases)
    ledger = PostgresDeliveryLedger(pool)
    delivery = NatsDeliveryStore(nc, ledger, replicas)
    control = PostgresControlStore(pool, database_url)
    insights = PostgresInsightsStore(pool)

    async def open_postgres() -> None:
        await migrate(database_url)
        await pool.open(wait=True, timeout=30.0)

    async def close_postgres() -> None:
        await control.aclose()
        await pool.close()

    async def connect() -> None:
        await nc.connect(
            servers=servers,
            name="callstream",
            connect_timeout=5,
            max_reconnect_attempts=-1,
            reconnect_time_wait=1,
        )

    async def close_nats() -> None:
        if not nc.is_closed:
            await nc.drain()

    services = Services(
        accounts=PostgresAccountStore(pool),
        telemetry=telemetry,
        engine_store=engine_store,
        events=events,
        control=control,
        insights=insights,
        delivery=delivery,
        pending_timers=engine_store.pending_timers,
        index=insights.index,
        cursors=ledger,
        starts=[open_postgres, connect],
        stops=[close_postgres, close_nats],
    )
    for store in (telemetry, events, engine_store, delivery, engine_leases):
        services.starts.append(store.start)
    services.stops.extend([telemetry.stop, events.stop, delivery.stop, engine_leases.stop])

    def leases(scope: str, count: int) -> PartitionLeases:
        if scope == "":
            return engine_leases
        scoped = NatsPartitionLeases(nc, count, replicas, ttl=settings.lease_ttl, scope=scope)
        # Started after the stores (the bucket exists then), stopped before NATS closes.
        services.starts.append(scoped.start)
        services.stops.append(scoped.stop)
        return scoped

    services.leases = leases
    return services
