"""The catalogue of event types and schemas that callstream can stream.

The facts live in ``event_types.toml`` beside this module, so a new event type
(the Conference Insights ones, say) is data plus a schema file and a renderer,
not a change here.
"""

from __future__ import annotations

import tomllib
from datetime import datetime
from functools import cache
from importlib import resources
from typing import Any

import msgspec


class UnknownEventType(LookupError):
    """The event type is not in the catalogue."""


class UnknownSchema(LookupError):
    """The schema id (or one of its versions) is not in the catalogue."""


class Schema(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    versions: tuple[int, ...]
    date_created: datetime
    dataschema_suffix: str = ""

    @property
    def latest_version(self) -> int:
        return self.versions[-1]

    def dataschema(self, version: int, base_url: str) -> str:
        """The CloudEvent ``dataschema`` URL of one version of this schema."""
        if version not in self.versions:
            raise UnknownSchema(f"{self.id} has no version {version}")
        return f"{base_url.rstrip('/')}/{self.id}/{version}{self.dataschema_suffix}"


class EventType(msgspec.Struct, frozen=True, kw_only=True):
    type: str
    schema_id: str
    source: str
    status: str
    documentation_url: str | None
    description: str

    def source_for(self, **fields: str) -> str:
        """The CloudEvent ``source`` for one event, filled from its fields."""
        return self.source.format(**fields)


class Catalogue(msgspec.Struct, frozen=True):
    schemas: dict[str, Schema]
    types: tuple[EventType, ...]

    def event_type(self, type_: str) -> EventType:
        for event_type in self.types:
            if event_type.type == type_:
                return event_type
        raise UnknownEventType(type_)

    def schema(self, schema_id: str) -> Schema:
        try:
            return self.schemas[schema_id]
        except KeyError:
            raise UnknownSchema(schema_id) from None

    def schema_of(self, type_: str) -> Schema:
        return self.schema(self.event_type(type_).schema_id)

    def resolve_version(self, type_: str, version: int | None) -> int:
        """The schema version a subscription gets: the one asked for, or the latest."""
        schema = self.schema_of(type_)
        if version is None:
            return schema.latest_version
        if version not in schema.versions:
            raise UnknownSchema(f"{type_} has no schema version {version}")
        return version

    def call_insights_types(self) -> tuple[str, ...]:
        """The seven Call Insights event types (what `--types all` subscribes to)."""
        return tuple(t.type for t in self.types if t.type.startswith("com.twilio.voice.insights."))


def _parse(document: dict[str, Any]) -> Catalogue:
    schemas = {
        schema_id: msgspec.convert({"id": schema_id, **fields}, Schema, strict=False)
        for schema_id, fields in document["schemas"].items()
    }
    types = msgspec.convert(document["types"], tuple[EventType, ...])
    for event_type in types:
        if event_type.schema_id not in schemas:
            raise UnknownSchema(f"{event_type.type} names unknown schema {event_type.schema_id}")
    return Catalogue(schemas, types)


@cache
def catalogue() -> Catalogue:
    """The packaged catalogue (read once; it never changes while running)."""
    text = resources.files(__package__).joinpath("event_types.toml").read_text("utf-8")
    return _parse(tomllib.loads(text))
