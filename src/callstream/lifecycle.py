"""Readiness and graceful shutdown of `callstream serve`.

``/healthz`` says the process is alive; ``/readyz`` says it should be sent traffic: 200 once
the database is open and the stages this process runs have started, 503 while it starts and
from the moment a SIGTERM or SIGINT arrives, so a load balancer stops routing to it before it
stops answering.

On SIGTERM or SIGINT uvicorn stops listening and lets in-flight requests finish; one still
running REQUEST_GRACE seconds later (a long poll of the live feed) is cut short with a 503
(``ShutdownGuard``), so no client holds the stop up and no request dies with a traceback.
Then the app's shutdown runs: the engine commits its current batch and deliveries in flight
finish (for at most SHUTDOWN_GRACE). The process exits 0: a requested stop that completed is
a clean exit, which is what process supervisors and ``docker stop`` expect (uvicorn would
re-raise the signal and die by it).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Callable, Generator
from types import FrameType
from typing import Any, Literal

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from callstream.api.errors import error_body

SHUTDOWN_GRACE = 10.0
"""Seconds in-flight deliveries get to finish on shutdown; uvicorn's bound for requests."""
REQUEST_GRACE = 5.0
"""Seconds a request may go on after a stop was asked for; then it is answered 503."""

State = Literal["starting", "ready", "stopping"]


class Readiness:
    """Whether this process should get traffic; one per app."""

    def __init__(self, roles: frozenset[str]) -> None:
        self.roles = roles
        self.state: State = "starting"
        self._loop: asyncio.AbstractEventLoop | None = None
        self._on_stop: list[Callable[[], None]] = []

    def started(self) -> None:
        """Called on the event loop once every stage has started."""
        self._loop = asyncio.get_running_loop()
        if self.state == "starting":
            self.state = "ready"

    def on_stop(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` on the event loop when a stop is asked for."""
        self._on_stop.append(callback)

    def stopping(self) -> None:
        """A stop was asked for; safe to call from a signal handler."""
        if self.state == "stopping":
            return
        self.state = "stopping"
        if self._loop is not None and not self._loop.is_closed():
            for callback in self._on_stop:
                self._loop.call_soon_threadsafe(callback)

    async def endpoint(self, request: Request) -> Response:
        # Unauthenticated like /healthz: probes have no credentials; it reveals no account data.
        body = {"status": self.state, "roles": sorted(self.roles)}
        return JSONResponse(body, status_code=200 if self.state == "ready" else 503)


class GracefulServer(uvicorn.Server):
    """uvicorn's server, telling ``readiness`` when a stop is asked for and exiting
    normally (status 0) once the stop has completed."""

    def __init__(self, config: uvicorn.Config, readiness: Readiness) -> None:
        super().__init__(config)
        self._readiness = readiness

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self._readiness.stopping()
        super().handle_exit(sig, frame)

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield  # only the main thread may handle signals; its owner stops the server
            return
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {sig: signal.signal(sig, self.handle_exit) for sig in handled}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class ShutdownGuard:
    """ASGI middleware: once a stop is asked for, a request still running REQUEST_GRACE
    seconds later is cancelled and answered 503 (or, when its response has begun, ended),
    instead of being cancelled by uvicorn with a traceback in the log."""

    def __init__(self, app: ASGIApp, readiness: Readiness, grace: float = REQUEST_GRACE) -> None:
        self._app = app
        self._grace = grace
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._cut: set[asyncio.Task[Any]] = set()
        readiness.on_stop(self._stop_asked)

    def _stop_asked(self) -> None:
        asyncio.get_running_loop().call_later(self._grace, self._cut_short)

    def _cut_short(self) -> None:
        for task in list(self._in_flight):
            self._cut.add(task)
            task.cancel()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await self._app(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        self._in_flight.add(task)
        try:
            await self._app(scope, receive, tracked)
        except asyncio.CancelledError:
            if task not in self._cut:
                raise
            task.uncancel()
            if started:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
            else:
                body = error_body(503, 20503, "callstream is shutting down; try again shortly")
                await send(
                    {
                        "type": "http.response.start",
                        "status": 503,
                        "headers": [
                            (b"content-type", b"application/json"),
                            (b"retry-after", b"1"),
                        ],
                    }
                )
                await send({"type": "http.response.body", "body": body})
        finally:
            self._in_flight.discard(task)
            self._cut.discard(task)
