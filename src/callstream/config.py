"""Settings: command-line flags, ``CALLSTREAM_*`` environment variables, a TOML file.

Precedence is flag, then environment, then file, then default (DESIGN.md, Settings).
Durations accept plain seconds or ``30s``, ``10m``, ``1h``.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import msgspec

ENV_PREFIX = "CALLSTREAM_"

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class SettingsError(ValueError):
    """A setting has a value that cannot be used; the message names it."""


def parse_duration(value: str | float | int) -> float:
    """Seconds from ``90``, ``1.5``, ``250ms``, ``30s``, ``10m``, ``1h`` or ``1d``."""
    if isinstance(value, bool):
        raise SettingsError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        match = _DURATION.match(value)
        if match is None:
            raise SettingsError(f"not a duration: {value!r} (use seconds or 30s, 10m, 1h)")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds < 0:
        raise SettingsError(f"durations cannot be negative: {value!r}")
    return seconds


class Settings(msgspec.Struct, frozen=True, kw_only=True):
    data_dir: Path = Path("./callstream-data")
    host: str = "127.0.0.1"
    port: int = 8080
    account_sid: str | None = None
    auth_token: str | None = None
    public_url: str | None = None
    partial_after: float = 10.0
    complete_after: float = 1800.0
    allow_private_destinations: bool = False
    backend: Literal["embedded", "nats"] = "embedded"
    nats_url: str | None = None
    """BACKEND=nats: the NATS servers, a comma list of URLs (credentials in the URL)."""
    database_url: str | None = None
    """BACKEND=nats: the PostgreSQL connection URL."""
    nats_replicas: int = 1
    """BACKEND=nats: replicas of each stream and bucket created (3 on a 3-node cluster)."""
    database_pool_size: int = 10
    """BACKEND=nats: PostgreSQL connections per process at most."""
    lease_ttl: float = 5.0
    """BACKEND=nats: how long a partition's (router's, indexer's) lease lasts unrenewed;
    a dead worker's share is taken over after about this long."""
    schema_base_url: str = "https://events-schemas.twilio.com"
    segment_base_url: str = "https://api.segment.io"
    """Where Segment sinks send their batches (``<segment_base_url>/v1/batch``)."""
    log_format: Literal["console", "json"] = "console"
    log_level: str = "info"
    roles: str = "all"
    """The stages this process runs: all, or a comma list of api, ingest, engine, delivery."""
    # Delivery (streams/delivery.py); docs/api.md "Delivery settings" says more.
    delivery_concurrency: int = 4
    """Requests in flight per sink."""
    delivery_batch_size: int = 100
    """Events per request at most, for ``batch_events`` sinks."""
    delivery_batch_bytes: int = 1024 * 1024
    """Bytes of events per request at most, for ``batch_events`` sinks."""
    delivery_linger: float = 0.05
    """How long a batch may wait to fill."""
    delivery_timeout: float = 5.0
    """How long a sink has to answer a request (Twilio: 5 s)."""
    delivery_retry_base: float = 1.0
    """First retry delay; it doubles per attempt, with jitter."""
    delivery_retry_cap: float = 600.0
    """Longest retry delay."""
    delivery_retry_window: float = 4 * 3600.0
    """How long an event is retried before it is dead-lettered (Twilio: 4 hours)."""
    delivery_lease: float = 60.0
    """How long a claimed queue item stays hidden from other claims."""
    delivery_attempts_kept: int = 200
    """Attempt-log rows kept per sink."""
    delivery_idle_exit: float = 10.0
    """A sink's worker task ends after this long with nothing to do."""
    delivery_throttle_rate: float = 100.0
    """Events/s a sink is capped at on its first 429/5xx/timeout (Twilio: 100)."""
    delivery_throttle_recovery: float = 300.0
    """Time without errors before a throttled sink's cap ramps back up (Twilio: 5 min)."""
    sink_failure_threshold: int = 10
    """Consecutive failed requests before a sink is marked ``failed`` (0: never)."""
    metrics_token: str | None = None
    """Bearer token that opens ``GET /metrics``; unset: /metrics answers 404."""

    @property
    def role_set(self) -> frozenset[str]:
        names = {part.strip() for part in self.roles.split(",") if part.strip()}
        return ROLES if "all" in names else frozenset(names)

    @property
    def base_url(self) -> str:
        """Where callstream says it lives in ``url``, ``links`` and ``meta`` fields."""
        return (self.public_url or f"http://{self.host}:{self.port}").rstrip("/")


ROLES = frozenset({"api", "ingest", "engine", "delivery"})
_DURATIONS = frozenset(
    {
        "partial_after",
        "complete_after",
        *("delivery_linger", "delivery_timeout", "delivery_retry_base", "delivery_retry_cap"),
        *("delivery_retry_window", "delivery_lease", "delivery_idle_exit"),
        "delivery_throttle_recovery",
        "lease_ttl",
    }
)
_FIELDS = frozenset(Settings.__struct_fields__)


def _from_env(env: Mapping[str, str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for name in _FIELDS:
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and value != "":
            found[name] = value
    return found


def _from_file(path: Path) -> dict[str, Any]:
    try:
        document = tomllib.loads(path.read_text("utf-8"))
    except OSError as exc:
        raise SettingsError(f"cannot read settings file {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"settings file {path} is not valid TOML: {exc}") from exc
    unknown = sorted(set(document) - _FIELDS)
    if unknown:
        raise SettingsError(f"settings file {path} has unknown settings: {', '.join(unknown)}")
    return document


def _normalise(values: dict[str, Any]) -> dict[str, Any]:
    if "roles" in values:
        names = {part.strip() for part in str(values["roles"]).split(",") if part.strip()}
        unknown = names - ROLES - {"all"}
        if unknown or not names:
            raise SettingsError(
                f"ROLES must be all or a comma list of {', '.join(sorted(ROLES))}, "
                f"not {values['roles']!r}"
            )
    if "data_dir" in values:
        values["data_dir"] = Path(values["data_dir"])
    for name in _DURATIONS & values.keys():
        values[name] = parse_duration(values[name])
    if "allow_private_destinations" in values and isinstance(
        values["allow_private_destinations"], str
    ):
        text = values["allow_private_destinations"].strip().lower()
        if text not in {"1", "0", "true", "false", "yes", "no", "on", "off"}:
            raise SettingsError(f"ALLOW_PRIVATE_DESTINATIONS must be true or false, not {text!r}")
        values["allow_private_destinations"] = text in {"1", "true", "yes", "on"}
    return values


def load_settings(
    flags: Mapping[str, Any] | None = None,
    env: Mapping[str, str] | None = None,
    config_file: Path | None = None,
) -> Settings:
    """Merge the sources; flags given as None count as not given."""
    env = env if env is not None else {}
    if config_file is None and env.get(ENV_PREFIX + "CONFIG"):
        config_file = Path(env[ENV_PREFIX + "CONFIG"])
    merged: dict[str, Any] = {}
    if config_file is not None:
        merged.update(_from_file(config_file))
    merged.update(_from_env(env))
    merged.update({k: v for k, v in (flags or {}).items() if v is not None})
    try:
        return msgspec.convert(_normalise(merged), Settings, strict=False)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"invalid setting: {exc}") from exc
