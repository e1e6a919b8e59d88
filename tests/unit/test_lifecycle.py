"""/readyz through the app's lifecycle: starting, ready, stopping."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from callstream.config import Settings
from callstream.server import create_app


def test_readyz_follows_the_lifecycle(tmp_path: Path) -> None:
    app = create_app(Settings(data_dir=tmp_path, roles="api,ingest"))

    async def scenario() -> None:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://callstream") as client:
            # Before the lifespan has started the stages: not ready.
            starting = await client.get("/readyz")
            assert starting.status_code == 503 and starting.json()["status"] == "starting"
            async with app.router.lifespan_context(app):
                ready = await client.get("/readyz")
                assert ready.status_code == 200
                assert ready.json() == {"status": "ready", "roles": ["api", "ingest"]}
                app.state.readiness.stopping()  # what SIGTERM does first
                stopping = await client.get("/readyz")
                assert stopping.status_code == 503 and stopping.json()["status"] == "stopping"
                assert (await client.get("/healthz")).status_code == 200  # alive while stopping

    asyncio.run(scenario())
