from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.server import Server


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = Server(tmp_path / "data").start()
    yield running
    running.stop()
