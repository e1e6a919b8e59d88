"""One call's insight state: what the engine stores between steps.

Kept small on purpose (the engine stores it per call and caches thousands): every struct is
encoded as a msgpack array, SDK parts exist only for calls that have an SDK, and samples are
kept only while their 10-second window is open (plus the last ten for the warnings). New
members go at the end of a struct, with a default, so that stored states still decode.

Kept cheap to decode and encode too, as the runtime does both on every step of a call: the
call facts (``GatewayState.facts``, ``SdkEventState.facts``), which only events that report
facts and summaries read, stay encoded in between, and values only a summary reads are kept
as their encoding or a plain tuple rather than as nested structs. The state is a tree (no
cycles), so its structs are not tracked by the garbage collector (``gc=False``).
"""

from __future__ import annotations

from typing import Final

import msgspec

from callstream.insights.gateway import GatewayState
from callstream.insights.quality import WarningState
from callstream.insights.sdk_events import SdkEventState
from callstream.insights.sdk_metrics import SdkMetricsState

__all__ = ["CallState", "decode", "encode"]


class CallState(msgspec.Struct, array_like=True, gc=False):
    account_sid: str
    call_sid: str
    seq: int = 0
    """Call events emitted so far: the next one's ``seq``."""
    records: int = 0
    first_arrival: float | None = None
    last_arrival: float | None = None
    """Processing time (Unix seconds) of the first and latest batch of records."""
    first_record: float | None = None
    last_record: float | None = None
    """Smallest and largest record timestamp."""
    ended_at: float | None = None
    """Processing time at which the end of the call became known; summary timers count
    from here."""
    idle_ended: bool = False
    summaries: int = 0
    """Summaries emitted so far: the last one's ``processing_version``."""
    partial_sent: bool = False
    predicted: bool = False
    completed: bool = False
    repartial_pending: bool = False
    digest: bytes = b""
    """Digest of the last emitted summary's content."""
    late_records: int = 0
    """Records that arrived after the complete summary."""
    flush_due: float | None = None
    gateway: GatewayState | None = None
    sdk: SdkEventState | None = None
    samples: SdkMetricsState | None = None
    warnings: WarningState | None = None

    def gateway_state(self) -> GatewayState:
        if self.gateway is None:
            self.gateway = GatewayState()
        return self.gateway

    def sdk_state(self) -> SdkEventState:
        if self.sdk is None:
            self.sdk = SdkEventState()
        return self.sdk

    def sample_state(self) -> SdkMetricsState:
        if self.samples is None:
            self.samples = SdkMetricsState()
        return self.samples

    def warning_state(self) -> WarningState:
        if self.warnings is None:
            self.warnings = WarningState()
        return self.warnings


_encoder: Final = msgspec.msgpack.Encoder()
_decoder: Final = msgspec.msgpack.Decoder(CallState)


def encode(state: CallState) -> bytes:
    return _encoder.encode(state)


def decode(raw: bytes) -> CallState:
    return _decoder.decode(raw)
