"""Which backend the integration tests run callstream on: ``embedded`` or ``nats``.

``CALLSTREAM_TEST_BACKEND=nats`` makes every ``Server`` run ``callstream serve --backend
nats`` on a real 3-node JetStream cluster and a real PostgreSQL, both started once per
session. Tests stay independent: each data directory (a test's "installation") gets its own
PostgreSQL database and its own NATS account (JetStream streams and buckets are per
account), so one test never sees another's streams; a Server restarted on the same data
directory finds its state again, as the embedded backend does.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psycopg

from callstream.config import load_settings
from callstream.server import Services, open_services
from tests.natscluster import NatsCluster, Node
from tests.stores.postgres_server import PostgresServer

T = TypeVar("T")
BACKEND_ENV = "CALLSTREAM_TEST_BACKEND"
# NATS accounts declared in the cluster's configuration: one per data directory.
ACCOUNTS = 96


def selected() -> str:
    name = os.environ.get(BACKEND_ENV, "embedded")
    if name not in ("embedded", "nats"):
        raise RuntimeError(f"{BACKEND_ENV} must be embedded or nats, not {name!r}")
    return name


class AccountsNode(Node):
    """A cluster node whose configuration declares JetStream-enabled test accounts."""

    def write_config(self, routes: list[int]) -> None:
        super().write_config(routes)
        accounts = "\n".join(
            f"  T{i} {{ jetstream: enabled, users: [{{user: t{i}, password: p{i}}}] }}"
            for i in range(ACCOUNTS)
        )
        with self.config_path.open("a") as config:
            config.write(f"accounts {{\n{accounts}\n}}\n")


class AccountsCluster(NatsCluster):
    def __post_init__(self) -> None:
        self.nodes = [
            AccountsNode(f"n{i + 1}", self.directory / f"n{i + 1}") for i in range(self.size)
        ]
        for node in self.nodes:
            node.write_config([n.cluster_port for n in self.nodes if n is not node])

    async def _probe(self) -> bool:
        # The probe connects without credentials; with accounts declared that is refused,
        # so it goes in as the first test account.
        return await _probe_as(self, 0)


async def _probe_as(cluster: NatsCluster, account: int) -> bool:
    import uuid

    import nats
    from nats.js.api import StreamConfig

    urls = [u.replace("nats://", f"nats://t{account}:p{account}@") for u in cluster.urls]
    try:
        nc = await nats.connect(servers=urls, connect_timeout=2, allow_reconnect=False)
    except Exception:  # not ready yet, whatever the reason
        return False
    try:
        js = nc.jetstream(timeout=5)
        name = f"READY_PROBE_{uuid.uuid4().hex[:8]}"
        await js.add_stream(
            StreamConfig(name=name, subjects=[f"ready.{name}"], num_replicas=cluster.size)
        )
        await js.publish(f"ready.{name}", b"ok")
        await js.delete_stream(name)
        return True
    except Exception:  # placement or leader election still going on
        return False
    finally:
        await nc.close()


@dataclass
class Distributed:
    """The session's NATS cluster and PostgreSQL, and the namespace of each data dir."""

    directory: Path
    cluster: AccountsCluster | None = None
    postgres: PostgresServer | None = None
    _namespaces: dict[Path, int] = field(default_factory=dict)
    _numbers: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def start(self) -> Distributed:
        self.cluster = AccountsCluster(self.directory / "nats")
        self.cluster.start()
        self.postgres = PostgresServer().start()
        return self

    def stop(self) -> None:
        if self.cluster is not None:
            self.cluster.stop()
        if self.postgres is not None:
            self.postgres.stop()

    def env(self, data_dir: Path, replicas: int = 1) -> dict[str, str]:
        """The settings that put a Server on this data dir's own database and account."""
        assert self.cluster is not None and self.postgres is not None
        key = data_dir.resolve()
        number = self._namespaces.get(key)
        if number is None:
            number = next(self._numbers)
            if number >= ACCOUNTS:
                raise RuntimeError(f"more than {ACCOUNTS - 1} data dirs in one session")
            self._namespaces[key] = number
            with psycopg.connect(self.postgres.url(), autocommit=True) as conn:
                conn.execute(f"CREATE DATABASE cs_{number}")
        urls = ",".join(
            u.replace("nats://", f"nats://t{number}:p{number}@") for u in self.cluster.urls
        )
        return {
            "CALLSTREAM_BACKEND": "nats",
            "CALLSTREAM_NATS_URL": urls,
            "CALLSTREAM_DATABASE_URL": self.postgres.url(f"cs_{number}"),
            "CALLSTREAM_NATS_REPLICAS": str(replicas),
            # Fewer connections per process: many servers share one PostgreSQL.
            "CALLSTREAM_DATABASE_POOL_SIZE": "4",
        }


@dataclass
class Session:
    """Holder of the running distributed backend (set by the session fixture)."""

    distributed: Distributed | None = None


SESSION = Session()


@asynccontextmanager
async def opened(data_dir: Path) -> AsyncIterator[Services]:
    """The stores of a Server's data dir, on whichever backend the session runs, opened in
    the caller's event loop (for tests that set up or inspect state beside the API)."""
    distributed = SESSION.distributed
    env = distributed.env(data_dir) if distributed is not None else {}
    services = open_services(load_settings({"data_dir": data_dir}, env))
    await services.start()
    try:
        yield services
    finally:
        await services.close()


def with_services(data_dir: Path, use: Callable[[Services], Awaitable[T]]) -> T:
    """``use(services)`` on a fresh event loop (see ``opened``)."""

    async def run() -> T:
        async with opened(data_dir) as services:
            return await use(services)

    return asyncio.run(run())


class StoreProxy:
    """A store of a data dir whose every async method opens the stores for that one call
    (``store.method(...)`` awaited inside ``asyncio.run``), on either backend."""

    def __init__(self, data_dir: Path, pick: Callable[[Services], Any]) -> None:
        self._data_dir = data_dir
        self._pick = pick

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            async with opened(self._data_dir) as services:
                return await getattr(self._pick(services), name)(*args, **kwargs)

        return call
