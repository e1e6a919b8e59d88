"""The console's routes: its static single-page app, and the data endpoints only it needs.

| route | what |
|---|---|
| ``GET /console/...`` | the app's HTML, CSS and ES modules (no data; strict CSP) |
| ``GET /`` | a redirect to ``/console/`` |
| ``GET /callstream/v1/Account`` | who the credentials are (the console's login check) |
| ``GET /callstream/v1/ActiveCalls`` | calls in progress (events, no summary yet) |
| ``GET /callstream/v1/Events/Stream`` | the live events feed as Server-Sent Events |

Every data endpoint authenticates like the REST API; everything else the console shows it
reads from the REST API itself with the user's credentials.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.console.headers import SecurityHeaders
from callstream.console.stream import EventStreamRoute
from callstream.store.insights import InsightsStore
from callstream.store.interfaces import AccountStore, EventLog

INVALID_PARAMETER: Final = 20001
MAX_ACTIVE: Final = 200
_encoder: Final = msgspec.json.Encoder()


class AccountResource(msgspec.Struct, frozen=True):
    account_sid: str
    friendly_name: str


class ActiveCallResource(msgspec.Struct, frozen=True):
    call_sid: str
    first_event_time: str
    last_event_time: str


class ActiveCallsResource(msgspec.Struct, frozen=True):
    total: int
    calls: list[ActiveCallResource]


def _iso(seconds: float) -> str:
    moment = datetime.fromtimestamp(seconds, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _json(body: msgspec.Struct) -> Response:
    return Response(_encoder.encode(body), media_type="application/json")


class ConsoleData:
    def __init__(self, accounts: AccountStore, insights: InsightsStore) -> None:
        self._accounts = accounts
        self._insights = insights

    async def account(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        return _json(AccountResource(account.sid, account.friendly_name))

    async def active_calls(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        raw = request.query_params.get("PageSize") or "50"
        # isdigit() alone admits digits such as "²" that int() refuses (a 500).
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_ACTIVE:
            raise ApiError(
                400, INVALID_PARAMETER, f"PageSize must be an integer from 1 to {MAX_ACTIVE}"
            )
        active = await self._insights.active_calls(account.sid, int(raw))
        calls = [
            ActiveCallResource(c.call_sid, _iso(c.first_event_time), _iso(c.last_event_time))
            for c in active.calls
        ]
        return _json(ActiveCallsResource(total=active.total, calls=calls))


async def _to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=307)


def console_routes(
    accounts: AccountStore, events: EventLog, insights: InsightsStore, schema_base_url: str
) -> list[BaseRoute]:
    """The console's routes, ready for the application's route list."""
    data = ConsoleData(accounts, insights)
    stream = EventStreamRoute(accounts, events, schema_base_url)
    static = StaticFiles(packages=[("callstream.console", "static")], html=True)
    return [
        Route("/", _to_console, methods=["GET"]),
        Route("/console", _to_console, methods=["GET"]),
        Mount("/console", app=SecurityHeaders(static), name="console"),
        Route("/callstream/v1/Account", data.account, methods=["GET"]),
        Route("/callstream/v1/ActiveCalls", data.active_calls, methods=["GET"]),
        Route("/callstream/v1/Events/Stream", stream.stream, methods=["GET"]),
    ]
