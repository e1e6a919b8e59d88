"""Voice SDK telemetry of a simulated client call: events (reference §2.4) and 1-s samples.

Events follow twilio-voice.js: the connection lifecycle, settings, getUserMedia, ICE and
peer-connection state changes, network information, user feedback and errors. Samples are
built the way its StatsMonitor builds them (§6): per-second deltas, running totals, loss
fraction in percent, and MOS from the SDK's formula with the first sample's MOS null.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any, Final, Literal

from callstream.model.mos import calculate_mos, round_mos
from callstream.model.telemetry import (
    Browser,
    DeviceInfo,
    Level,
    OsInfo,
    PublisherMetadata,
    SdkEvent,
    SdkSample,
)
from callstream.sim.context import CallContext
from callstream.sim.gateway import PACKETS_PER_SECOND
from callstream.sim.profiles import NetworkPath, SpeechActivity

__all__ = ["QualityMonitor", "SdkRecords", "TimedEvent"]

TimedEvent = tuple[float, SdkEvent]
Payload = dict[str, Any]

_SDK_VERSIONS: Final = ("2.18.1", "2.17.0", "2.16.0")
_FEEDBACK_ISSUES: Final = {
    "congested_wifi": ("choppy-audio", "audio-latency", "noisy-call"),
    "lossy_mobile": ("choppy-audio", "dropped-call", "audio-latency"),
    "one_way_audio": ("one-way-audio",),
    "good": ("echo", "noisy-call"),
}
# SDK error for each way a call can fail to connect (twilio-voice.js error codes).
_ERRORS: Final = {
    "busy": (31486, "Busy Here"),
    "no-answer": (31480, "Temporarily Unavailable"),
    "not-found": (31404, "Not Found"),
    "failed": (31005, "Connection error"),
    "ice": (53405, "Media connection failed."),
}


class SdkRecords:
    """Builds the SDK records of one client call."""

    def __init__(self, ctx: CallContext, dead: Literal["inbound", "outbound"] | None) -> None:
        self._ctx = ctx
        rng = ctx.rng
        plan = ctx.plan
        mobile = ctx.profile.connection_type == "cellular"
        self._direction = plan.sdk_direction
        self._version = rng.choice(_SDK_VERSIONS)
        self._gateway = f"chunderw-vpc-gll-{ctx.parties.region}.twilio.com"
        self._publisher = PublisherMetadata(app_name="callstream-softphone", app_version="3.2.1")
        self._browser = Browser(
            name="Chrome Mobile" if mobile else "Chrome", major="124", version="124.0.6367.91"
        )
        self._os = OsInfo(name="Android", version="14") if mobile else OsInfo(name="Mac OS")
        self._device = DeviceInfo(vendor="Google", model="Pixel 8") if mobile else None
        # Gateway "inbound" is the SDK's upload; a dead one silences the SDK's microphone side.
        self._mic_dead = dead == "inbound"
        self._speaker_dead = dead == "outbound"
        self._bytes_per_packet_in = 80 + rng.randrange(40)
        self._bytes_per_packet_out = 80 + rng.randrange(40)
        self._local = SpeechActivity(rng)
        self._remote = SpeechActivity(rng)
        self._totals = [0, 0, 0, 0, 0]  # bytes rx, bytes tx, lost, received, sent
        self._first_sample = True
        self.publishes_warnings = rng.random() < ctx.mix.sdk_warning_share
        self.reconnect: tuple[float, float] | None = self._draw_reconnect()

    # --- events ---

    def event(
        self, t: float, group: str, name: str, level: Level = "INFO", payload: Payload | None = None
    ) -> TimedEvent:
        ctx = self._ctx
        return t, SdkEvent(
            id=ctx.new_id(),
            call_sid=ctx.sid,
            timestamp=ctx.at(t),
            group=group,
            name=name,
            level=level,
            payload=payload,
            publisher_metadata=self._publisher,
            sdk_version=self._version,
            platform="WebRTC",
            direction=self._direction,
            gateway=self._gateway,
            region=ctx.parties.region,
            client_name=ctx.parties.identity,
            audio_codec="opus",
            dscp=True,
            ice_restart_enabled=True,
            browser=self._browser,
            os=self._os,
            device=self._device,
        )

    def lifecycle(self) -> list[TimedEvent]:
        """Every event whose time the plan decides, in no particular order."""
        events = self._outgoing() if self._direction == "OUTGOING" else self._incoming()
        if self._ctx.plan.has_media:
            events += self._feedback(self._ctx.plan.ended)
        if self.reconnect is not None:
            events += self._reconnect_events(*self.reconnect)
        return events

    def _draw_reconnect(self) -> tuple[float, float] | None:
        plan, rng, mix = self._ctx.plan, self._ctx.rng, self._ctx.mix
        if plan.answered is None or plan.profile != "lossy_mobile":
            return None
        talk = plan.ended - plan.answered
        if talk < 30 or rng.random() >= mix.reconnect_share:
            return None
        lost_at = plan.answered + talk * (0.2 + 0.5 * rng.random())
        return lost_at, lost_at + 2.0 + 8.0 * rng.random()

    def _setup(self, t: float) -> list[TimedEvent]:
        # What the SDK logs while it creates the peer connection and gathers candidates.
        rng = self._ctx.rng
        edge = self._ctx.parties.metadata.edge_location
        candidate = {
            "candidate_type": "host",
            "deleted": False,
            "ip": self._ctx.parties.client_ip,
            "is_remote": False,
            "network-cost": 10 if self._ctx.profile.connection_type == "cellular" else None,
            "port": 50000 + rng.randrange(10000),
            "priority": 2122260223,
            "protocol": "udp",
            "transport_id": "T01",
        }
        srflx = {**candidate, "candidate_type": "srflx", "priority": 1686052607}
        media = {"MediaStream": True, "RTCPeerConnection": True}
        return [
            self.event(t, "settings", "init", payload={**media, "getUserMedia": True}),
            self.event(t, "settings", "edge", payload={"edge": "roaming", "selected_edge": [edge]}),
            self.event(
                t + 0.05,
                "get-user-media",
                "succeeded",
                payload={"data": {"audioConstraints": True}},
            ),
            self.event(t + 0.08, "signaling-state", "have-local-offer", "DEBUG"),
            self.event(t + 0.09, "ice-gathering-state", "gathering", "DEBUG"),
            self.event(t + 0.1, "ice-candidate", "ice-candidate", "DEBUG", candidate),
            self.event(t + 0.15, "ice-candidate", "ice-candidate", "DEBUG", srflx),
            self.event(t + 0.2, "ice-gathering-state", "complete", "DEBUG"),
        ]

    def _connect(self, t: float) -> list[TimedEvent]:
        """ICE and DTLS come up: either the media path works or the call fails here."""
        if self._ctx.profile.ice_failure:
            return self._ice_failure(t)
        pair = {
            "local_candidate": {"candidate_type": "srflx", "protocol": "udp"},
            "remote_candidate": {"candidate_type": "relay", "protocol": "udp"},
        }
        codec = {"codec_params": "maxaveragebitrate=40000", "selected_codec": "audio/opus"}
        events = [
            self.event(t, "signaling-state", "stable", "DEBUG"),
            self.event(t, "ice-connection-state", "checking", "DEBUG"),
            self.event(t + 0.1, "pc-connection-state", "connecting", "DEBUG"),
            self.event(t + 0.15, "ice-connection-state", "connected", "DEBUG"),
            self.event(t + 0.16, "ice-candidate", "selected-ice-candidate-pair", "DEBUG", pair),
            self.event(t + 0.2, "dtls-transport-state", "connected", "DEBUG"),
            self.event(t + 0.2, "pc-connection-state", "connected", "DEBUG"),
            self.event(t + 0.25, "settings", "codec", payload=codec),
        ]
        if self._ctx.profile.poor:
            events.append(self._network_change(t + 0.3))
        return events

    def _ice_failure(self, t: float) -> list[TimedEvent]:
        end = self._ctx.plan.ended
        code, message = _ERRORS["ice"]
        return [
            self.event(t, "signaling-state", "stable", "DEBUG"),
            self.event(t, "ice-connection-state", "checking", "DEBUG"),
            self.event(t + 0.1, "pc-connection-state", "connecting", "DEBUG"),
            self.event(end - 0.2, "ice-connection-state", "failed", "ERROR"),
            self.event(end - 0.2, "pc-connection-state", "failed", "ERROR"),
            self.event(
                end - 0.15, "connection", "error", "ERROR", {"code": code, "message": message}
            ),
        ]

    def _network_change(self, t: float) -> TimedEvent:
        rng = self._ctx.rng
        cellular = self._ctx.profile.connection_type == "cellular"
        payload = {
            "connection_type": "cellular" if cellular else "wifi",
            "downlink": round((0.4 + 2 * rng.random()) if cellular else 2 + 20 * rng.random(), 2),
            "downlinkMax": None,
            "effective_type": "3g" if cellular else "4g",
            "rtt": 50 * (2 + rng.randrange(8)),
        }
        return self.event(t, "network-information", "network-change", payload=payload)

    def _outgoing(self) -> list[TimedEvent]:
        plan, rng = self._ctx.plan, self._ctx.rng
        start = plan.created - 0.1 - 0.4 * rng.random()
        events = [*self._setup(start)]
        events.append(self.event(start, "connection", "outgoing", payload=_OUTGOING))
        # Twilio answers the SDP offer at once: ICE runs while the far end still rings.
        connect_at = plan.created + 0.2 + 0.3 * rng.random()
        if plan.ringing is not None:
            early = {"hasEarlyMedia": False}
            events.append(self.event(plan.ringing, "connection", "outgoing-ringing", payload=early))
        if connect_at < plan.ended - 0.3 or self._ctx.profile.ice_failure:
            events += self._connect(min(connect_at, plan.ended - 0.4))
        if plan.answered is not None:
            events.append(self.event(plan.answered, "connection", "accepted-by-remote"))
        events += self._outgoing_end()
        return events

    def _outgoing_end(self) -> list[TimedEvent]:
        plan = self._ctx.plan
        outcome = plan.outcome
        if outcome == "completed":
            local = plan.disconnected_by == "caller"  # the SDK user placed the call
            return self._hangup(local)
        if outcome == "canceled":
            return self._hangup(local=True)
        if outcome == "failed" and self._ctx.profile.ice_failure:
            return self._hangup(local=True)
        if outcome == "failed":
            key = "not-found" if plan.sip_response_code == 404 else "failed"
        else:
            key = outcome
        code, message = _ERRORS[key]
        error = self.event(
            plan.ended - 0.05, "connection", "error", "ERROR", {"code": code, "message": message}
        )
        return [error, *self._hangup(local=False)]

    def _incoming(self) -> list[TimedEvent]:
        plan, rng = self._ctx.plan, self._ctx.rng
        if plan.outcome == "failed" and not self._ctx.profile.ice_failure:
            return []  # the call never reached the SDK
        rings = plan.ringing if plan.ringing is not None else plan.created + 0.3
        rings = min(rings, plan.ended - 0.2)
        events = [self.event(rings, "connection", "incoming")]
        if plan.outcome in ("busy", "no-answer", "canceled"):
            name = {"busy": "rejected-by-local", "no-answer": "cancel", "canceled": "cancel"}
            events.append(self.event(plan.ended, "connection", name[plan.outcome]))
            return events
        accept = plan.answered if plan.answered is not None else rings + 1 + rng.random()
        accept = min(accept, plan.ended - 0.5)
        events += self._setup(accept - 0.3)
        events.append(self.event(accept, "connection", "accepted-by-local"))
        events += self._connect(accept + 0.1)
        # The SDK user was called; after an ICE failure the SDK itself gives up.
        local = plan.disconnected_by == "callee" or self._ctx.profile.ice_failure
        events += self._hangup(local)
        return events

    def _hangup(self, local: bool) -> list[TimedEvent]:
        end = self._ctx.plan.ended
        name = "disconnected-by-local" if local else "disconnected-by-remote"
        return [
            self.event(end, "connection", name),
            self.event(end + 0.01, "ice-connection-state", "closed", "DEBUG"),
            self.event(end + 0.01, "pc-connection-state", "closed", "DEBUG"),
            self.event(end + 0.01, "signaling-state", "closed", "DEBUG"),
        ]

    def _feedback(self, end: float) -> list[TimedEvent]:
        ctx, rng = self._ctx, self._ctx.rng
        if rng.random() >= ctx.mix.feedback_share:
            return []
        at = end + 2 + 28 * rng.random()
        if rng.random() < 0.25:
            return [self.event(at, "feedback", "received-none")]
        poor = ctx.profile.poor
        score = 1 + rng.randrange(3) if poor else 4 + rng.randrange(2)
        payload: Payload = {"quality_score": score}
        if poor or rng.random() < 0.1:
            payload["issue_name"] = rng.choice(_FEEDBACK_ISSUES[ctx.plan.profile])
        return [self.event(at, "feedback", "received", payload=payload)]

    def _reconnect_events(self, lost: float, back: float) -> list[TimedEvent]:
        message = {"message": "ICE connectivity lost"}
        return [
            self.event(lost, "ice-connection-state", "disconnected", "DEBUG"),
            self.event(
                lost, "network-quality-warning-raised", "ice-connectivity-lost", "WARNING", message
            ),
            self.event(lost + 0.01, "connection", "reconnecting"),
            self._network_change(lost + 0.5),
            self.event(back, "ice-connection-state", "connected", "DEBUG"),
            self.event(
                back, "network-quality-warning-cleared", "ice-connectivity-lost", "INFO", message
            ),
            self.event(back + 0.01, "connection", "reconnected"),
        ]

    # --- samples ---

    def sample(self, t: float, path: NetworkPath, outage: bool) -> SdkSample:
        """The 1-second stats sample taken at ``t``; ``outage`` means no media flows."""
        ctx, rng = self._ctx, self._ctx.rng
        # int(x + 0.5) rounds half up, as the SDK's Math.round does, and costs less than round().
        rtt = int(path.rtt + 0.5)
        if outage or self._speaker_dead:
            received = lost = bytes_received = jitter = 0
        else:
            lost = int(PACKETS_PER_SECOND * path.loss / 100 + rng.random())
            lost = PACKETS_PER_SECOND if lost > PACKETS_PER_SECOND else lost
            received = PACKETS_PER_SECOND - lost
            bytes_received = received * self._bytes_per_packet_in
            if received:
                bytes_received += rng.randrange(64)
            jitter = int(path.jitter + 0.5)
        sent = 0 if outage or self._mic_dead else PACKETS_PER_SECOND
        bytes_sent = sent * self._bytes_per_packet_out
        fraction = round(lost / (received + lost) * 100, 2) if lost else 0.0
        mos = None if self._first_sample else round_mos(calculate_mos(rtt, jitter, fraction))
        self._first_sample = False
        level_in = 0 if self._mic_dead else self._local.level()
        level_out = 0 if self._speaker_dead or outage else self._remote.level()
        totals = self._totals
        totals[0] += bytes_received
        totals[1] += bytes_sent
        totals[2] += lost
        totals[3] += received
        totals[4] += sent
        return SdkSample(
            id=ctx.new_id(),
            call_sid=ctx.sid,
            timestamp=ctx.at(t),
            audio_codec="opus",
            audio_level_in=level_in,
            audio_level_out=level_out,
            bytes_received=bytes_received,
            bytes_sent=bytes_sent,
            call_volume_input=int(level_in * 1000 / 32767 + 0.5) / 1000,
            call_volume_output=int(level_out * 1000 / 32767 + 0.5) / 1000,
            jitter=jitter,
            mos=mos,
            packets_lost=lost,
            packets_lost_fraction=fraction,
            packets_received=received,
            packets_sent=sent,
            rtt=rtt,
            total_bytes_received=totals[0],
            total_bytes_sent=totals[1],
            total_packets_lost=totals[2],
            total_packets_received=totals[3],
            total_packets_sent=totals[4],
        )


_OUTGOING: Final = {"preflight": False, "reconnect": False}

# --- the SDK's own quality warnings -----------------------------------------------------------

_WINDOW: Final = 10  # samples kept by StatsMonitor with the current default thresholds
_RAISE_COUNT: Final = 3
_WARNING_TIMEOUT: Final = 5.0
_METRICS_DELAY: Final = 5.0
_AUDIO_MIN_STDDEV: Final = 327.67
_LOSS_AVERAGE_COUNT: Final = 7
_BYTES_COUNT: Final = 3

Warning = tuple[float, str, str, Level, Payload]
"""(time, group, name, level, payload) of a warning raised or cleared."""


class _Threshold:
    """How many of the last samples cross one limit, kept up to date as samples come in."""

    __slots__ = ("above", "crossings", "limit", "missing", "name", "values")

    def __init__(self, name: str, limit: float, above: bool) -> None:
        self.name = name
        self.limit = limit
        self.above = above
        self.values: deque[float | None] = deque(maxlen=_WINDOW)
        self.crossings = 0
        self.missing = 0

    def _crosses(self, value: float) -> bool:
        return value > self.limit if self.above else value < self.limit

    def push(self, value: float | None) -> None:
        values = self.values
        if len(values) == _WINDOW:
            old = values[0]
            if old is None:
                self.missing -= 1
            elif self._crosses(old):
                self.crossings -= 1
        values.append(value)
        if value is None:
            self.missing += 1
        elif self._crosses(value):
            self.crossings += 1


class _Spread:
    """Standard deviation of the last ten audio levels, from running sums."""

    __slots__ = ("levels", "total", "total_sq")

    def __init__(self) -> None:
        self.levels: deque[float] = deque(maxlen=_WINDOW)
        self.total = self.total_sq = 0.0

    def push(self, level: float) -> None:
        if len(self.levels) == _WINDOW:
            old = self.levels[0]
            self.total -= old
            self.total_sq -= old * old
        self.levels.append(level)
        self.total += level
        self.total_sq += level * level

    def stddev(self) -> float:
        n = len(self.levels)
        mean = self.total / n
        return math.sqrt(max(self.total_sq / n - mean * mean, 0.0))


class QualityMonitor:
    """The SDK's StatsMonitor warning rules (reference §5) over the samples we generate, so
    the warnings an SDK publishes agree with the samples it sends."""

    def __init__(self, media_start: float) -> None:
        self._start = media_start
        self._thresholds = (
            _Threshold("high-rtt", 400, above=True),
            _Threshold("high-jitter", 30, above=True),
            _Threshold("low-mos", 3, above=False),
            _Threshold("high-packet-loss", 1, above=True),
        )
        self._loss: deque[float] = deque(maxlen=_LOSS_AVERAGE_COUNT)
        self._starved = {"low-bytes-received": 0, "low-bytes-sent": 0}
        self._audio = {
            "constant-audio-input-level": _Spread(),
            "constant-audio-output-level": _Spread(),
        }
        self._raised: dict[str, float] = {}

    def observe(self, t: float, sample: SdkSample) -> list[Warning]:
        """Warnings raised or cleared by the sample taken at ``t``."""
        rtt, jitter, mos, loss = self._thresholds
        rtt.push(sample.rtt)
        jitter.push(sample.jitter)
        mos.push(sample.mos)
        loss.push(sample.packets_lost_fraction)
        self._loss.append(sample.packets_lost_fraction)
        starved = self._starved
        starved["low-bytes-received"] = (
            starved["low-bytes-received"] + 1 if sample.bytes_received < 1 else 0
        )
        starved["low-bytes-sent"] = starved["low-bytes-sent"] + 1 if sample.bytes_sent < 1 else 0
        self._audio["constant-audio-input-level"].push(sample.audio_level_in)
        self._audio["constant-audio-output-level"].push(sample.audio_level_out)
        if t - self._start < _METRICS_DELAY:
            return []
        out: list[Warning] = []
        for threshold in self._thresholds:
            if threshold.missing:
                continue  # the SDK skips a check while its window holds a missing value
            count = threshold.crossings
            if self._change(t, threshold.name, count >= _RAISE_COUNT, count == 0):
                values = [round(v, 2) for v in threshold.values if v is not None]
                data: Payload = {"threshold": threshold.limit, "values": values}
                out.append(self._warning(t, threshold.name, data))
        if len(self._loss) == _LOSS_AVERAGE_COUNT:
            average = sum(self._loss) / _LOSS_AVERAGE_COUNT
            if self._change(t, "high-packets-lost-fraction", average > 3, average <= 1):
                data = {"threshold": 3, "value": round(average, 2)}
                out.append(self._warning(t, "high-packets-lost-fraction", data))
        for name, streak in starved.items():
            low = streak >= _BYTES_COUNT
            if self._change(t, name, low, not low):
                out.append(self._warning(t, name, {"threshold": 1, "value": streak}))
        for name, spread in self._audio.items():
            if len(spread.levels) < _WINDOW:
                continue
            deviation = spread.stddev()
            flat = deviation < _AUDIO_MIN_STDDEV
            if self._change(t, name, flat, not flat):
                data = {"threshold": _AUDIO_MIN_STDDEV, "value": round(deviation, 2)}
                out.append(self._warning(t, name, data))
        return out

    def _change(self, t: float, name: str, raise_now: bool, clear_now: bool) -> bool:
        """Whether ``name`` is raised or cleared now, under the SDK's raise-once rule and
        its rule that a warning stays raised for at least five seconds."""
        raised_at = self._raised.get(name)
        if raised_at is None:
            if raise_now:
                self._raised[name] = t
                return True
        elif clear_now and t - raised_at >= _WARNING_TIMEOUT:
            del self._raised[name]
            return True
        return False

    def _warning(self, t: float, name: str, data: Payload) -> Warning:
        raised = name in self._raised
        audio = name.startswith("constant-audio")
        group = f"{'audio-level' if audio else 'network-quality'}-warning-"
        group += "raised" if raised else "cleared"
        level: Level = "INFO"
        # Output-level warnings are published at INFO to avoid false alarms (reference §2.4).
        if raised and name != "constant-audio-output-level":
            level = "WARNING"
        return t, group, name, level, {"data": data}
