"""Waking readers of a JetStream log when it grows, in any process of the cluster.

The log streams republish each stored message, headers only, on
``cs.appended.<log>.<key>`` (layout.py). A subscription on those keeps the
highest sequence seen per key, so a waiting reader wakes as soon as the server
has stored an entry past its cursor, whoever appended it. Republished messages
are not themselves durable: a missed one only delays a reader until its timeout.
"""

from __future__ import annotations

from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription

from callstream.store.nats.layout import appended_subject
from callstream.store.signal import HighWater


class Arrivals:
    def __init__(self, subject: str) -> None:
        self._subject = subject
        self.marks = HighWater()
        self._sub: Subscription | None = None

    async def start(self, nc: Client) -> None:
        self._sub = await nc.subscribe(f"{appended_subject(self._subject)}.*", cb=self._on_msg)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_msg(self, msg: Msg) -> None:
        headers = msg.headers or {}
        seq = headers.get("Nats-Sequence")
        if seq is None:
            return
        key = msg.subject.rsplit(".", 1)[-1]
        await self.marks.advance({key: int(seq), "*": int(seq)})
