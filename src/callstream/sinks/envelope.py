"""What non-webhook drivers read from a queued CloudEvent: its id, type, time, and the call
it belongs to.

The queue holds each CloudEvent as compact JSON bytes. Kinesis needs the call to pick a
partition key and Segment maps the envelope onto a track call, so both decode only the
envelope here; ``data`` stays raw bytes (msgspec ``Raw``) and is spliced into the output
without being decoded and encoded again.
"""

from __future__ import annotations

import msgspec


class Envelope(msgspec.Struct, frozen=True):
    id: str
    type: str = ""
    time: str | None = None
    data: msgspec.Raw = msgspec.Raw(b"null")

    @property
    def data_is_object(self) -> bool:
        return bytes(self.data).lstrip().startswith(b"{")

    @property
    def call_sid(self) -> str | None:
        """``data.call_sid``; None for events of no call (the Sink Test event) or data that
        is not an object."""
        if not self.data_is_object:
            return None
        try:
            sid = _call_decoder.decode(self.data).call_sid
        except msgspec.DecodeError:
            return None
        return sid or None

    @property
    def subject(self) -> str:
        """The call the event is about, or the event's own id when it is about no call."""
        return self.call_sid or self.id


class _CallData(msgspec.Struct):
    call_sid: str | None = None


_call_decoder = msgspec.json.Decoder(_CallData)
_decoder = msgspec.json.Decoder(Envelope)


def read_envelope(event: bytes) -> Envelope:
    """The envelope of one queued CloudEvent; raises ``msgspec.DecodeError`` when the bytes
    are not a CloudEvent with an ``id``."""
    return _decoder.decode(event)
