"""The ceiling: the same HTTP stack as callstream (Starlette on uvicorn, uvloop,
httptools) serving an endpoint that only reads the body and answers 202."""

from __future__ import annotations

import sys

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route


async def sink(request: Request) -> Response:
    await request.body()
    return Response(b'{"accepted":0,"duplicates":0}', 202, media_type="application/json")


app = Starlette(routes=[Route("/v1/Telemetry", sink, methods=["POST"])])

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        loop="uvloop",
        http="httptools",
        log_level="warning",
    )
