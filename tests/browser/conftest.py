"""Browser tests of the web console: a real callstream, Debian's Chromium driven by
Playwright, and a real webhook receiver on 127.0.0.1.

Every page fails its test on a JavaScript error, and on any console error the test did not
say it expects (Chromium logs each 4xx fetch as a console error: a refused login is one).
Screenshots go to tests/browser/artifacts/ (ignored by git).
"""

from __future__ import annotations

import asyncio
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

from tests.integration.server import Server

ARTIFACTS = Path(__file__).parent / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SERVER_ENV = {
    "CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "true",
    "CALLSTREAM_PARTIAL_AFTER": "1s",
    "CALLSTREAM_COMPLETE_AFTER": "30s",
}


def chromium_path() -> str:
    found = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(found).exists():
        pytest.fail("Chromium is not installed: `make test` installs it (apt-get install chromium)")
    return found


def wait_until(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Polls ``condition`` until it returns something truthy, or fails after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)  # polling interval while waiting on a condition with a deadline


@dataclass
class ConsoleWatch:
    """Console errors and page errors of one page; ``expect`` allows matching ones."""

    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def on_console(self, message: ConsoleMessage) -> None:
        if message.type == "error":
            text = f"{message.text} ({message.location.get('url', '')})"
            if not any(pattern.search(text) for pattern in self.allowed):
                self.errors.append(text)

    def on_page_error(self, error: Exception) -> None:
        self.errors.append(f"page error: {error}")

    def expect(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern))


# Generous waits: the machine is shared and the tests may run beside others (-n 2).
TIMEOUT_MS = 20_000


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    expect.set_options(timeout=TIMEOUT_MS)
    with sync_playwright() as p:
        yield p


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    launched = playwright.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
    yield launched
    launched.close()


@pytest.fixture(scope="session")
def artifacts() -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    print(f"\nconsole screenshots: {ARTIFACTS}")
    return ARTIFACTS


@pytest.fixture
def watch() -> ConsoleWatch:
    return ConsoleWatch()


@pytest.fixture
def page(browser: Browser, watch: ConsoleWatch) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    opened.on("console", watch.on_console)
    opened.on("pageerror", watch.on_page_error)
    opened.set_default_timeout(TIMEOUT_MS)
    yield opened
    context.close()
    assert watch.errors == [], "the console logged errors"


def start_server(root: Path, **env: str) -> Server:
    return Server(root / "data", extra_env={**SERVER_ENV, **env}).start()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(tmp_path_factory.mktemp("console"))
    yield running
    running.stop()


@dataclass
class Receiver:
    """A webhook receiver: answers ``status`` and keeps every request it got."""

    status: int = 200
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def received(self) -> list[tuple[dict[str, str], bytes]]:
        with self._lock:
            return list(self.requests)

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        with self._lock:
            self.requests.append((dict(request.headers), body))
        return web.Response(status=self.status)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    target = Receiver()
    loop = asyncio.new_event_loop()
    started = threading.Event()
    runner_box: list[web.AppRunner] = []

    async def start() -> None:
        app = web.Application()
        app.router.add_route("*", "/hook", target.handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        target.url = f"http://127.0.0.1:{port}/hook"
        runner_box.append(runner)

    def run() -> None:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert started.wait(10), "the receiver did not start"
    yield target
    asyncio.run_coroutine_threadsafe(runner_box[0].cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
