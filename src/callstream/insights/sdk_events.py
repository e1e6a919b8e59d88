"""Voice SDK events: the raw twilio-voice.js shape turned into ``call-event.sdk``.

How Twilio maps the SDK's payload into ``sdk_edge`` is not public; the mapping here is the
one the reference infers (voice-insights-model.md §2.4):

* ``payload.data.{threshold, values | value}`` -> ``metric {threshold, values}``;
* ``payload.{code, message}`` (or ``payload.data.error``) -> ``error``;
* feedback ``{issue_name, quality_score}`` -> ``feedback {reason, score}``;
* ``selected-ice-candidate-pair`` ``{local_candidate, remote_candidate}`` -> ``ice_candidate_pair``;
* the SDK's default payload (version, platform, browser, os, device, app) -> ``metadata.sdk``.

The events also feed the summary's ``sdk_edge``: counts by level, group and error code, the
latest feedback, settings, and who disconnected. Those facts are kept encoded in the state
(``SdkEventState.facts``): only SDK events, the SDK's metric windows and summaries read them,
and the state is decoded and encoded on every step of the call.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, TypeGuard

import msgspec

from callstream.insights.aggregates import Stamped, newer
from callstream.model import insights as out
from callstream.model.telemetry import SdkEvent

__all__ = [
    "SdkEventState",
    "SdkFacts",
    "client_metadata",
    "load_facts",
    "sdk_event",
    "store_facts",
    "summary_group",
]

# Connection events after which the SDK's leg of the call is over.
END_NAMES: Final = frozenset(
    {
        "disconnected-by-local",
        "disconnected-by-remote",
        "rejected-by-local",
        "ignored-by-local",
        "cancel",
    }
)
_DISCONNECTED_BY: Final = {"disconnected-by-local": "local", "disconnected-by-remote": "remote"}
_ANSWER_NAMES: Final = frozenset({"accepted-by-local", "accepted-by-remote"})
_ICE_CONNECTED: Final = frozenset({"connected", "completed"})
_NO_PAYLOAD: Final[Mapping[str, Any]] = MappingProxyType({})


class SdkFacts(msgspec.Struct, array_like=True, gc=False):
    """What the SDK says about itself and the call, latest report first."""

    sdk: Stamped[out.TwilioSdk] | None = None
    client_name: Stamped[str] | None = None
    direction: Stamped[str] | None = None
    dscp: Stamped[bool] | None = None
    ice_restart_enabled: Stamped[bool] | None = None
    edge: Stamped[str] | None = None
    selected_edges: Stamped[tuple[str, ...]] | None = None
    disconnected_by: Stamped[out.DisconnectedBy] | None = None
    feedback: Stamped[out.FeedbackInfo] | None = None


class SdkEventState(msgspec.Struct, array_like=True, gc=False):
    levels: dict[out.Level, int] = {}
    groups: dict[str, int] = {}
    errors: dict[int, int] = {}
    facts: bytes = b""
    """The encoded ``SdkFacts`` (``load_facts`` / ``store_facts``); empty when none."""
    first_event: float | None = None
    answered: float | None = None
    ended: float | None = None
    ice_failed: bool = False
    ice_connected: bool = False


_encoder: Final = msgspec.msgpack.Encoder()
_facts_decoder: Final = msgspec.msgpack.Decoder(SdkFacts)


def load_facts(state: SdkEventState) -> SdkFacts:
    """The SDK's facts, decoded; hand them back with ``store_facts`` after changing them."""
    return _facts_decoder.decode(state.facts) if state.facts else SdkFacts()


def store_facts(state: SdkEventState, facts: SdkFacts) -> None:
    state.facts = _encoder.encode(facts)


def client_metadata(facts: SdkFacts) -> out.ClientMetadata | None:
    """What the SDK said about itself, for its metric records."""
    sdk = None if facts.sdk is None else facts.sdk[1]
    client_name = facts.client_name[1] if facts.client_name is not None else None
    if sdk is None and client_name is None:
        return None
    return out.ClientMetadata(client_name=client_name, sdk=sdk)


def summary_group(group: str) -> str:
    """The summary spells groups with underscores (``get_user_media``), events with dashes."""
    return group.replace("-", "_")


def sdk_event(
    state: SdkEventState, facts: SdkFacts, record: SdkEvent, account_sid: str, seq: int
) -> out.CallEvent:
    """Count the event, note what it says about the call (in ``facts``, loaded by the caller)
    and return its call event."""
    ts = record.timestamp.timestamp()
    group, name, level = record.group, record.name, record.level
    payload = record.payload or _NO_PAYLOAD
    data = payload.get("data")
    metadata = _client_metadata(record)
    error = _error(payload, data)
    feedback = _feedback(record, payload)

    # Counts, by level, group (as the summary spells it) and error code.
    state.levels[level] = state.levels.get(level, 0) + 1
    counted = summary_group(group)
    state.groups[counted] = state.groups.get(counted, 0) + 1
    if error is not None and error.code is not None:
        state.errors[error.code] = state.errors.get(error.code, 0) + 1
    if state.first_event is None or ts < state.first_event:
        state.first_event = ts

    # Progress: answered, ended, ICE outcome.
    if group == "connection":
        if name in END_NAMES:
            state.ended = ts if state.ended is None else min(state.ended, ts)
        elif name in _ANSWER_NAMES:
            state.answered = ts if state.answered is None else min(state.answered, ts)
    elif group == "ice-connection-state":
        if name == "failed":
            state.ice_failed = True
        elif name in _ICE_CONNECTED:
            state.ice_connected = True

    _note_facts(facts, record, metadata, feedback, payload, ts)
    return out.CallEvent(
        account_sid=account_sid,
        call_sid=record.call_sid,
        time=record.timestamp,
        seq=seq,
        edge="sdk_edge",
        group=group,
        name=name,
        level=level,
        sdk=out.SdkEventData(
            error=error,
            feedback=feedback,
            metric=_metric(data if _is_mapping(data) else payload),
            ice_candidate_pair=_ice_pair(record, payload),
            metadata=metadata,
        ),
    )


def _note_facts(
    facts: SdkFacts,
    record: SdkEvent,
    metadata: out.ClientMetadata,
    feedback: out.FeedbackInfo | None,
    payload: Mapping[str, Any],
    ts: float,
) -> None:
    if (
        record.sdk_version is not None
        and metadata.sdk is not None
        and newer(facts.sdk, ts, metadata.sdk)
    ):
        facts.sdk = (ts, metadata.sdk)
    for name, value in (
        ("client_name", record.client_name),
        ("direction", record.direction),
        ("dscp", record.dscp),
        ("ice_restart_enabled", record.ice_restart_enabled),
        (
            "disconnected_by",
            _DISCONNECTED_BY.get(record.name) if record.group == "connection" else None,
        ),
        ("feedback", feedback),
    ):
        if value is not None and newer(getattr(facts, name), ts, value):
            setattr(facts, name, (ts, value))
    if record.group == "settings" and record.name == "edge":
        edge = payload.get("edge")
        if isinstance(edge, str) and newer(facts.edge, ts, edge):
            facts.edge = (ts, edge)
        selected = payload.get("selected_edge")
        if isinstance(selected, list):
            edges = tuple(str(e) for e in selected)
            if newer(facts.selected_edges, ts, edges):
                facts.selected_edges = (ts, edges)


# --- payload mapping --------------------------------------------------------------------------


def _error(payload: Mapping[str, Any], data: object) -> out.ErrorInfo | None:
    source: object = payload
    if "code" not in payload and "message" not in payload:
        source = data.get("error") if _is_mapping(data) else None
        if isinstance(source, str):
            return out.ErrorInfo(message=source)
    if not _is_mapping(source):
        return None
    code = source.get("code")
    message = source.get("message")
    code = code if isinstance(code, int) and not isinstance(code, bool) else None
    message = message if isinstance(message, str) else None
    if code is None and message is None:
        return None
    return out.ErrorInfo(code=code, message=message)


def _metric(data: Mapping[str, Any]) -> out.MetricData | None:
    threshold = data.get("threshold")
    if not _is_number(threshold):
        return None
    values = data.get("values")
    if values is None and "value" in data:
        values = [data["value"]]
    numbers = (
        tuple(round(v, 2) for v in values if _is_number(v)) if isinstance(values, list) else ()
    )
    return out.MetricData(threshold=float(threshold), values=numbers)


def _feedback(record: SdkEvent, payload: Mapping[str, Any]) -> out.FeedbackInfo | None:
    if record.group != "feedback" or record.name != "received":
        return None
    score = payload.get("quality_score")
    reason = payload.get("issue_name")
    return out.FeedbackInfo(
        score=score if isinstance(score, int) and not isinstance(score, bool) else None,
        reason=reason if isinstance(reason, str) else None,
    )


def _ice_pair(record: SdkEvent, payload: Mapping[str, Any]) -> out.IceCandidatePair | None:
    if record.name != "selected-ice-candidate-pair":
        return None
    return out.IceCandidatePair(
        local=_candidate(payload.get("local_candidate")),
        remote=_candidate(payload.get("remote_candidate")),
    )


def _candidate(candidate: object) -> out.IceCandidate | None:
    if not _is_mapping(candidate):
        return None
    kind = candidate.get("candidate_type")
    protocol = candidate.get("protocol")
    return out.IceCandidate(
        type=kind if isinstance(kind, str) else None,
        protocol=protocol if isinstance(protocol, str) else None,
    )


def _client_metadata(record: SdkEvent) -> out.ClientMetadata:
    browser = record.browser
    os = record.os
    device = record.device
    app = record.publisher_metadata
    return out.ClientMetadata(
        client_name=record.client_name,
        sdk=out.TwilioSdk(
            type=record.publisher,
            version=record.sdk_version,
            platform=record.platform,
            region=record.region,
            browser=None
            if browser is None
            else out.Browser(
                name=browser.name or None,
                major=browser.major or None,
                version=browser.version or None,
            ),
            os=None
            if os is None
            else out.OperatingSystem(name=os.name or None, version=os.version or None),
            device=None
            if device is None
            else out.Device(
                model=device.model or None,
                type=device.type or None,
                vendor=device.vendor or None,
                arch=device.arch or None,
            ),
            app=None if app is None else out.AppInfo(name=app.app_name, version=app.app_version),
        ),
    )


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_mapping(value: object) -> TypeGuard[Mapping[str, Any]]:
    # Payloads decode to dicts; the ABC check, far slower, is for anything else.
    return type(value) is dict or isinstance(value, Mapping)
