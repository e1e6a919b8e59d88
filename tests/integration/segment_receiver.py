"""A stand-in for Segment's batch API on 127.0.0.1 (there is no local Segment server), which
checks what Segment checks of a request (the write key in Basic auth, a JSON batch within the
size limits) and records it."""

from __future__ import annotations

import asyncio
import base64
import json
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.integration.server import free_port

MAX_REQUEST = 500 * 1024
MAX_MESSAGE = 32 * 1024


@dataclass
class BatchRequest:
    authorization: str
    content_type: str
    body: bytes
    status: int = 0
    """What the receiver answered."""

    @property
    def batch(self) -> list[dict[str, Any]]:
        batch: list[dict[str, Any]] = json.loads(self.body)["batch"]
        return batch


@dataclass
class SegmentReceiver:
    write_key: str
    respond: Callable[[BatchRequest], int] = lambda request: 200
    requests: list[BatchRequest] = field(default_factory=list)
    port: int = field(default_factory=free_port)
    _loop: asyncio.AbstractEventLoop | None = None
    _runner: web.AppRunner | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _batch(self, request: web.Request) -> web.Response:
        recorded = BatchRequest(
            authorization=request.headers.get("Authorization", ""),
            content_type=request.headers.get("Content-Type", ""),
            body=await request.read(),
        )
        recorded.status = self._status(recorded)
        with self._lock:
            self.requests.append(recorded)
        return web.json_response({"success": recorded.status < 300}, status=recorded.status)

    def _status(self, request: BatchRequest) -> int:
        expected = "Basic " + base64.b64encode(f"{self.write_key}:".encode()).decode()
        if request.authorization != expected:
            return 401
        if len(request.body) > MAX_REQUEST:
            return 413
        if any(len(json.dumps(m, separators=(",", ":"))) > MAX_MESSAGE for m in request.batch):
            return 400
        return self.respond(request)

    def start(self) -> SegmentReceiver:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application(client_max_size=8 * 2**20)
            app.router.add_post("/v1/batch", self._batch)
            self._runner = web.AppRunner(app)
            await self._runner.setup()
            await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
            ready.set()

        def run() -> None:
            assert self._loop is not None
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        assert ready.wait(10)
        return self

    def stop(self) -> None:
        assert self._loop is not None and self._runner is not None
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)

    def snapshot(self) -> list[BatchRequest]:
        with self._lock:
            return list(self.requests)

    def accepted_messages(self) -> list[dict[str, Any]]:
        """The calls of every request the receiver answered with a 2xx."""
        return [m for r in self.snapshot() if r.status < 300 for m in r.batch]
