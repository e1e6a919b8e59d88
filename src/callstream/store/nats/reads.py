"""Reading JetStream streams by subject: batched direct gets and leader gets.

Two ways, for two needs. Logs (telemetry, events) are read in batches with one
direct-get request (``next_by_subj`` + ``batch``, NATS 2.11+): any replica may
answer, and since a replica applies the log in order it holds a prefix of it, so
a lagging one returns fewer entries, never wrong ones. State (cursors, calls,
timers, leases) is read from the stream leader, one message per request, because
a worker must see what it wrote a moment ago.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass

from nats.aio.client import Client
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.errors import NotFoundError

# The end-of-batch and no-message markers of a batched direct get.
_END_STATUSES = {"204", "404", "408", "413"}
_KV_OPERATION = "KV-Operation"


@dataclass(frozen=True, slots=True)
class StoredMsg:
    seq: int
    subject: str
    headers: Mapping[str, str]
    data: bytes


async def direct_batch(
    nc: Client,
    stream: str,
    subject: str,
    after: int,
    batch: int,
    timeout: float = 5.0,
) -> list[StoredMsg]:
    """Up to ``batch`` messages on ``subject`` (wildcards allowed) with sequence > ``after``."""
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    found: list[StoredMsg] = []
    try:
        request = {"seq": after + 1, "next_by_subj": subject, "batch": batch}
        await nc.publish(f"$JS.API.DIRECT.GET.{stream}", json.dumps(request).encode(), reply=inbox)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                msg = await sub.next_msg(timeout=max(0.001, deadline - loop.time()))
            except NatsTimeoutError:
                if found:
                    return found  # a partial batch is still a prefix
                raise
            headers = msg.headers or {}
            status = headers.get("Status")
            if status is not None and not msg.data:
                if status in _END_STATUSES:
                    return found
                raise RuntimeError(f"direct get from {stream} failed: {status} {headers}")
            found.append(
                StoredMsg(
                    seq=int(headers["Nats-Sequence"]),
                    subject=headers["Nats-Subject"],
                    headers=headers,
                    data=msg.data,
                )
            )
    finally:
        await sub.unsubscribe()


async def leader_get(js: JetStreamContext, stream: str, subject: str) -> StoredMsg | None:
    """The last message on ``subject`` as the stream leader has it, or None."""
    try:
        raw = await js.get_msg(stream, subject=subject)
    except NotFoundError:
        return None
    return StoredMsg(raw.seq or 0, raw.subject or subject, raw.headers or {}, raw.data or b"")


async def leader_scan(js: JetStreamContext, stream: str, subject: str) -> AsyncIterator[StoredMsg]:
    """Every message on ``subject`` (a wildcard filter) in sequence order, from the leader."""
    after = 0
    while True:
        try:
            raw = await js.get_msg(stream, seq=after + 1, subject=subject, next=True)
        except NotFoundError:
            return
        after = raw.seq or after + 1
        yield StoredMsg(after, raw.subject or "", raw.headers or {}, raw.data or b"")


def is_deleted(msg: StoredMsg) -> bool:
    """A KV delete or purge marker rather than a value."""
    return msg.headers.get(_KV_OPERATION) in ("DEL", "PURGE") or not msg.data
