"""callstream's OpenAPI 3.1 document, served at ``GET /openapi.json`` (public).

Each API describes itself in a fragment module exposing ``FRAGMENT = {"paths": ...,
"components": ...}``: ``openapi_core`` (ingest, live feed, health, shared pieces),
``openapi_voice_insights``, ``openapi_console`` (the web console's data endpoints),
``openapi_event_streams`` and ``openapi_delivery``. The fragments are merged here;
two fragments may define the same component only identically (the shared security scheme),
so a name clash between APIs fails at start-up rather than describing one API wrongly.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

import callstream

Document = dict[str, Any]

# Fragments that are always there, and one that may not be (it is written separately and
# the document must build with or without it).
_FRAGMENTS: Final = (
    "callstream.api.openapi_core",
    "callstream.api.openapi_voice_insights",
    "callstream.api.openapi_console",
)
_OPTIONAL_FRAGMENTS: Final = (
    "callstream.api.openapi_event_streams",
    "callstream.api.openapi_delivery",
)

_TAGS: Final = [
    {"name": "Ingest", "description": "Call telemetry in (docs/ingest.md)."},
    {"name": "Event Streams", "description": "events.twilio.com/v1: sinks and subscriptions."},
    {
        "name": "Voice Insights",
        "description": "insights.twilio.com/v1: summaries, events, metrics.",
    },
    {"name": "Live feed", "description": "callstream's own feed of insight events."},
    {"name": "Delivery", "description": "callstream's per-sink delivery status and dead letters."},
    {"name": "Console", "description": "What the web console reads besides the APIs above."},
    {"name": "Health", "description": "Liveness."},
]


class FragmentConflict(ValueError):
    """Two fragments describe the same path or component differently."""


def fragments() -> list[Mapping[str, Any]]:
    """Every fragment importable in this installation."""
    found = [importlib.import_module(name).FRAGMENT for name in _FRAGMENTS]
    for name in _OPTIONAL_FRAGMENTS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as missing:
            if missing.name != name:  # the fragment exists but something it imports does not
                raise
            continue
        found.append(module.FRAGMENT)
    return found


def build_document(base_url: str, parts: Iterable[Mapping[str, Any]] | None = None) -> Document:
    """The whole document, with ``base_url`` as its server."""
    document: Document = {
        "openapi": "3.1.0",
        "info": {
            "title": "callstream",
            "version": callstream.__version__,
            "description": "Self-hosted Voice Insights Event Streams. The Event Streams and "
            "Voice Insights APIs keep the paths, parameters and shapes of events.twilio.com "
            "and insights.twilio.com, so twilio-python works against them (docs/api.md).",
        },
        "servers": [{"url": base_url}],
        "tags": _TAGS,
        "paths": {},
        "components": {},
    }
    for fragment in fragments() if parts is None else parts:
        _merge(document, copy.deepcopy(dict(fragment)))
    return document


def _merge(document: Document, fragment: Mapping[str, Any]) -> None:
    paths: dict[str, Any] = document["paths"]
    for path, operations in fragment.get("paths", {}).items():
        existing = paths.setdefault(path, {})
        for method, operation in operations.items():
            if method in existing:
                raise FragmentConflict(f"{method.upper()} {path} is described twice")
            existing[method] = operation
    components: dict[str, dict[str, Any]] = document["components"]
    for section, entries in fragment.get("components", {}).items():
        merged = components.setdefault(section, {})
        for name, entry in entries.items():
            if name in merged and _essence(section, merged[name]) != _essence(section, entry):
                raise FragmentConflict(f"components.{section}.{name} differs between fragments")
            merged.setdefault(name, entry)


def _essence(section: str, entry: Any) -> Any:
    # A security scheme shared by several APIs may be described in different words.
    if section == "securitySchemes" and isinstance(entry, dict):
        return {key: value for key, value in entry.items() if key != "description"}
    return entry


def openapi_route(base_url: str) -> Route:
    """``GET /openapi.json``; the document is built once, when the route is made."""
    body = msgspec.json.encode(build_document(base_url.rstrip("/")))

    async def openapi_json(request: Request) -> Response:
        # Public on purpose: the document describes the API, not any account's data.
        return Response(body, media_type="application/json")

    return Route("/openapi.json", openapi_json, methods=["GET"])
