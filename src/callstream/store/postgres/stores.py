"""Opening the distributed backend's PostgreSQL stores: migrate, then pool."""

from __future__ import annotations

from dataclasses import dataclass

from callstream.store.postgres.accounts import PostgresAccountStore
from callstream.store.postgres.control import PostgresControlStore
from callstream.store.postgres.database import Pool, open_pool
from callstream.store.postgres.insights import PostgresInsightsStore
from callstream.store.postgres.schema import migrate


@dataclass(frozen=True, slots=True)
class PostgresStores:
    """The stores of one PostgreSQL database, sharing one connection pool."""

    pool: Pool
    accounts: PostgresAccountStore
    control: PostgresControlStore
    insights: PostgresInsightsStore
    schema_version: int

    async def close(self) -> None:
        await self.control.aclose()
        await self.pool.close()


async def open_postgres(
    database_url: str, *, min_connections: int = 1, max_connections: int = 10
) -> PostgresStores:
    """Apply pending migrations (SchemaTooNew if the database is ahead), then open the pool.

    Every worker calls this on start; concurrent starts are safe (``schema.migrate``).
    """
    migrated = await migrate(database_url)
    pool = await open_pool(database_url, min_size=min_connections, max_size=max_connections)
    return PostgresStores(
        pool=pool,
        accounts=PostgresAccountStore(pool),
        control=PostgresControlStore(pool, database_url),
        insights=PostgresInsightsStore(pool),
        schema_version=migrated.version,
    )
