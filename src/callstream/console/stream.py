"""A live feed of an account's insight events as Server-Sent Events:
``GET /callstream/v1/Events/Stream``.

The long-poll ``GET /callstream/v1/Events`` (``api/live.py``) asks the browser to come back
after every answer; this keeps one response open and writes a message whenever the events
log grows, which is what the console's overview and call pages follow. Browsers read it with
``fetch()`` and a ``ReadableStream`` (``EventSource`` cannot send the Basic credentials).

Each message is ``event: events``, ``id:`` the events-log offset it reaches (a reconnecting
client sends it back as ``Last-Event-ID`` or ``After``), and ``data:`` a JSON object
``{"next_after", "counts": {type: n}, "events": [CloudEvent, ...]}``. ``counts`` covers
every event of the account in the batch, whatever the ``Type``/``CallSid`` filters;
``events`` holds the filtered CloudEvents unless ``Events=false`` asks for counts only (what
the overview needs, without decoding a single body). A comment line is written every
``KEEPALIVE`` seconds of silence so proxies keep the connection and a gone client is noticed.

The stream has no end of its own. ``Timeout=N`` asks the server to end the response once
``N`` seconds have passed (after the message being written): a script or a test can read a
bounded slice, and ``Timeout=0`` sends what one read finds past ``After`` and ends.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.api.live import decode_output
from callstream.cloudevents import CloudEvent, to_cloudevent
from callstream.model.catalogue import catalogue
from callstream.store.interfaces import AccountStore, EventLog

INVALID_PARAMETER: Final = 20001
BATCH: Final = 1000
KEEPALIVE: Final = 15.0
MAX_TIMEOUT: Final = 86400
"""The largest ``Timeout`` (a day); without one the stream is unbounded."""
PACE: Final = 0.25
"""Least time between two messages: a busy log is sent in batches of up to ``PACE`` seconds
of events, so a browser gets a few messages a second rather than one per commit."""

_encoder: Final = msgspec.json.Encoder()


class StreamMessage(msgspec.Struct, frozen=True):
    next_after: int
    counts: dict[str, int]
    events: list[CloudEvent]


def _after(request: Request) -> int | None:
    raw = request.query_params.get("After") or request.headers.get("last-event-id")
    if raw is None or raw == "":
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ApiError(400, INVALID_PARAMETER, "After must be an integer") from None
    if not 0 <= value < 2**62:
        raise ApiError(400, INVALID_PARAMETER, "After must be between 0 and 2^62")
    return value


def _timeout(request: Request) -> int | None:
    raw = request.query_params.get("Timeout")
    if raw is None or raw == "":
        return None
    if not raw.isascii() or not raw.isdigit() or int(raw) > MAX_TIMEOUT:
        raise ApiError(
            400, INVALID_PARAMETER, f"Timeout must be an integer from 0 to {MAX_TIMEOUT}"
        )
    return int(raw)


def _flag(request: Request, name: str, default: bool) -> bool:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if raw.lower() not in ("true", "false"):
        raise ApiError(400, INVALID_PARAMETER, f"{name} must be true or false")
    return raw.lower() == "true"


class EventStreamRoute:
    def __init__(self, accounts: AccountStore, events: EventLog, schema_base_url: str) -> None:
        self._accounts = accounts
        self._events = events
        self._schema_base_url = schema_base_url
        self._waits: set[asyncio.Task[None]] = set()

    async def _wait(self, after: int, timeout: float) -> None:
        """``events.wait``, shielded from this response's cancellation.

        When the client goes, Starlette cancels the response through an anyio cancel scope,
        which cancels the task again at every await until it ends. Delivered inside the log's
        wait (an asyncio.Condition under wait_for), a second cancellation can leave the
        condition's lock taken for good, and every other waiter on the log (the router, the
        engine's commits) would hang on it. So the wait runs as its own task, which always
        finishes by itself within ``timeout`` (at most KEEPALIVE); the set keeps it referenced
        until then.
        """
        task = asyncio.ensure_future(self._events.wait(after, timeout))
        self._waits.add(task)
        task.add_done_callback(self._waits.discard)
        await asyncio.shield(task)

    async def stream(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        after = _after(request)
        with_events = _flag(request, "Events", True)
        timeout = _timeout(request)
        types = frozenset(request.query_params.getlist("Type"))
        unknown = types - {t.type for t in catalogue().types}
        if unknown:
            raise ApiError(400, 91104, f"Unknown event type: {sorted(unknown)[0]}")
        call_sid = request.query_params.get("CallSid") or None
        start = after if after is not None else await self._events.last_offset()
        body = self._messages(account.sid, start, with_events, types, call_sid, timeout)
        return StreamingResponse(
            body,
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    async def _messages(
        self,
        account_sid: str,
        after: int,
        with_events: bool,
        types: frozenset[str],
        call_sid: str | None,
        timeout: int | None,
    ) -> AsyncIterator[bytes]:
        # The first bytes go out at once, so the client knows the stream is open.
        yield f"retry: 2000\nid: {after}\n: connected\n\n".encode()
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout

        def left() -> float:
            """Seconds until the client's Timeout; KEEPALIVE stands in for "no end"."""
            return KEEPALIVE if deadline is None else min(KEEPALIVE, deadline - loop.time())

        # The end is checked after each read, not before, so Timeout=0 still gets one read.
        while True:
            # The log's end before reading: when the read finds fewer than BATCH events of
            # this account, none of its events lie at or below `end` unread, so the cursor
            # may jump there and another account's traffic does not wake this loop again.
            end = await self._events.last_offset()
            batch = await self._events.read(after, BATCH, account_sid)
            if batch:
                last = batch[-1].offset
                counts = Counter(entry.event.type for entry in batch)
                selected = [
                    to_cloudevent(decode_output(entry.event), schema_base_url=self._schema_base_url)
                    for entry in batch
                    if with_events
                    and (not types or entry.event.type in types)
                    and (call_sid is None or entry.event.call_sid == call_sid)
                ]
                after = max(last, end) if len(batch) < BATCH else last
                message = StreamMessage(next_after=after, counts=dict(counts), events=selected)
                yield b"event: events\nid: %d\ndata: %s\n\n" % (after, _encoder.encode(message))
                if left() <= 0:
                    return
                if len(batch) == BATCH:
                    continue  # behind: catch up without pausing
                await asyncio.sleep(min(PACE, left()))
                continue
            after = max(after, end)
            if left() <= 0:
                return
            waited_from = loop.time()
            await self._wait(after, left())
            if loop.time() - waited_from >= KEEPALIVE:
                yield b": keepalive\n\n"
