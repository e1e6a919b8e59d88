"""A fast webhook receiver for bench_delivery, in its own process: the same HTTP stack as
callstream (Starlette on uvicorn, uvloop, httptools). ``POST /hook`` takes a JSON array of
CloudEvents, answers 200 and notes per event its id and, per call, when its first event
arrived; ``GET /stats`` reports that; ``POST /reset`` forgets it."""

from __future__ import annotations

import sys
import time
from typing import Any

import msgspec
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


class _Event(msgspec.Struct):
    id: str
    data: Any = None


class Tally:
    def __init__(self) -> None:
        self._decoder = msgspec.json.Decoder(list[_Event])
        self.reset()

    def reset(self) -> None:
        self.events = 0
        self.requests = 0
        self.ids: set[str] = set()
        self.first_at: float | None = None
        self.last_at: float | None = None
        self.calls: dict[str, float] = {}

    async def hook(self, request: Request) -> Response:
        body = await request.body()
        now = time.time()
        events = self._decoder.decode(body)
        self.requests += 1
        self.events += len(events)
        for event in events:
            self.ids.add(event.id)
            data = event.data
            if isinstance(data, dict):
                call_sid = data.get("call_sid")
                if isinstance(call_sid, str) and call_sid not in self.calls:
                    self.calls[call_sid] = now
        if self.first_at is None:
            self.first_at = now
        self.last_at = now
        return Response(status_code=200)

    async def stats(self, request: Request) -> Response:
        body = {
            "events": self.events,
            "unique": len(self.ids),
            "requests": self.requests,
            "first_at": self.first_at,
            "last_at": self.last_at,
            "calls": self.calls if request.query_params.get("calls") else {},
        }
        return Response(msgspec.json.encode(body), media_type="application/json")

    async def clear(self, request: Request) -> Response:
        self.reset()
        return Response(status_code=204)


def app() -> Starlette:
    tally = Tally()
    return Starlette(
        routes=[
            Route("/hook", tally.hook, methods=["POST"]),
            Route("/stats", tally.stats, methods=["GET"]),
            Route("/reset", tally.clear, methods=["POST"]),
        ]
    )


if __name__ == "__main__":
    uvicorn.run(
        app(),
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
