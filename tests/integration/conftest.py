from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.backends import SESSION, Distributed, selected
from tests.integration.server import Server


@pytest.fixture(scope="session", autouse=True)
def distributed_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """With CALLSTREAM_TEST_BACKEND=nats: one NATS cluster + PostgreSQL for the session."""
    if selected() != "nats":
        yield
        return
    running = Distributed(tmp_path_factory.mktemp("distributed")).start()
    SESSION.distributed = running
    try:
        yield
    finally:
        SESSION.distributed = None
        running.stop()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data").start()
    yield running
    running.stop()
