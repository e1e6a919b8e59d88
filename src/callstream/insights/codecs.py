"""Audio codec names and their static RTP payload types (RFC 3551, plus opus's usual 111)."""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = ["codec_name", "payload_type"]

_PAYLOAD_TYPES: Final = MappingProxyType(
    {"pcmu": 0, "gsm": 3, "pcma": 8, "g722": 9, "g729": 18, "opus": 111}
)
_NAMES: Final = MappingProxyType({pt: name for name, pt in _PAYLOAD_TYPES.items()})


def payload_type(name: str | None) -> int | None:
    """The payload type of a codec name such as ``opus`` or ``PCMU``; None when unknown."""
    return None if name is None else _PAYLOAD_TYPES.get(name.lower())


def codec_name(pt: int | None) -> str | None:
    """The lower-case name of a static payload type; None when unknown or dynamic."""
    return None if pt is None else _NAMES.get(pt)
