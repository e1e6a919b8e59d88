"""The distributed backend's PostgreSQL stores: accounts, the Event Streams control plane and
the Voice Insights read store (``open_postgres``). Migrations: ``schema.py``."""

from callstream.store.postgres.schema import SchemaTooNew, migrate
from callstream.store.postgres.stores import PostgresStores, open_postgres

__all__ = ["PostgresStores", "SchemaTooNew", "migrate", "open_postgres"]
