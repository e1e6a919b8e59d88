"""Publishing a batch of messages to JetStream in order, with every ack awaited.

Messages go out on one connection in the order given (asynchronous publish
writes them before any ack is awaited), so the stream stores them in that
order; the call returns once the server acknowledged all of them, or raises.
An unacknowledged publish may or may not be stored: callers make publishes
idempotent with Nats-Msg-Id and simply publish again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence

from nats.js import JetStreamContext
from nats.js.api import PubAck

# How long to wait for the acks of one batch (a leader election takes a few seconds).
ACK_TIMEOUT = 10.0

Message = tuple[str, bytes, Mapping[str, str]]


async def publish_all(
    js: JetStreamContext, messages: Sequence[Message], timeout: float = ACK_TIMEOUT
) -> list[PubAck]:
    futures: list[asyncio.Future[PubAck]] = []
    try:
        for subject, payload, headers in messages:
            futures.append(await js.publish_async(subject, payload, headers=dict(headers)))
        return list(await asyncio.wait_for(asyncio.gather(*futures), timeout))
    finally:
        # A future whose ack never came must not hold the client's in-flight slot.
        for future in futures:
            if not future.done():
                future.cancel()
