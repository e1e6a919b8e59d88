"""Event Types, Schemas and Schema Versions (event-streams-api.md §1.3, §1.4), from the catalogue.

A schema version's ``raw`` is a URL; callstream serves those documents itself at
``/schemas/{Id}/{N}`` (and ``/schemas/{Id}/{N}.json``, the form the test event's
``dataschema`` uses), so SCHEMA_BASE_URL can point at ``{PUBLIC_URL}/schemas``.
"""

from __future__ import annotations

import re

import msgspec
from starlette.requests import Request
from starlette.responses import Response

from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.api.pagination import read_page
from callstream.api.wire import json_response, list_response, memory_page, twilio_time
from callstream.model.catalogue import (
    EventType,
    Schema,
    UnknownEventType,
    UnknownSchema,
    catalogue,
)
from callstream.schemas import UnknownSchema as NoSchemaDocument
from callstream.schemas import load_schema
from callstream.store.interfaces import AccountStore

RESOURCE_NOT_FOUND = 20404

_DOCUMENT = re.compile(r"([1-9][0-9]{0,8})(\.json)?")
_encoder = msgspec.json.Encoder()


class EventTypeLinks(msgspec.Struct, frozen=True):
    schema: str


class EventTypeResource(msgspec.Struct, frozen=True, kw_only=True):
    """``events.v1.event_type``."""

    date_created: str
    date_updated: str
    description: str
    documentation_url: str | None
    links: EventTypeLinks
    schema_id: str
    status: str
    type: str
    url: str


class SchemaLinks(msgspec.Struct, frozen=True):
    versions: str


class SchemaResource(msgspec.Struct, frozen=True, kw_only=True):
    """``events.v1.schema``."""

    id: str
    latest_version: int
    latest_version_date_created: str
    links: SchemaLinks
    url: str


class SchemaVersionResource(msgspec.Struct, frozen=True, kw_only=True):
    """``events.v1.schema.schema_version``."""

    date_created: str
    id: str
    raw: str
    schema_version: int
    url: str


def _not_found(what: str) -> ApiError:
    return ApiError(404, RESOURCE_NOT_FOUND, f"{what} was not found")


class CatalogueRoutes:
    """Read-only views of the packaged catalogue; the same for every account."""

    def __init__(self, accounts: AccountStore, base_url: str) -> None:
        self._accounts = accounts
        self._base_url = base_url

    def type_resource(self, event_type: EventType) -> EventTypeResource:
        # The catalogue dates schemas, not types: a type is as old as its schema.
        created = twilio_time(catalogue().schema(event_type.schema_id).date_created)
        return EventTypeResource(
            date_created=created,
            date_updated=created,
            description=event_type.description,
            documentation_url=event_type.documentation_url,
            links=EventTypeLinks(
                schema=f"{self._base_url}/v1/Schemas/{event_type.schema_id}/Versions"
            ),
            schema_id=event_type.schema_id,
            status=event_type.status,
            type=event_type.type,
            url=f"{self._base_url}/v1/Types/{event_type.type}",
        )

    def version_resource(self, schema: Schema, version: int) -> SchemaVersionResource:
        return SchemaVersionResource(
            date_created=twilio_time(schema.date_created),
            id=schema.id,
            raw=f"{self._base_url}/schemas/{schema.id}/{version}",
            schema_version=version,
            url=f"{self._base_url}/v1/Schemas/{schema.id}/Versions/{version}",
        )

    async def read_types(self, request: Request) -> Response:
        await require_account(request, self._accounts)
        page = read_page(request)
        schema_id = request.query_params.get("SchemaId") or None
        types = [t for t in catalogue().types if schema_id is None or t.schema_id == schema_id]
        rows, has_next = memory_page(types, lambda t: t.type, page, str)
        return list_response(
            request,
            self._base_url,
            "types",
            page,
            [self.type_resource(t) for t in rows],
            first_key=[rows[0].type] if rows else None,
            last_key=[rows[-1].type] if rows else None,
            has_next=has_next,
            filters={"SchemaId": schema_id},
        )

    async def fetch_type(self, request: Request) -> Response:
        await require_account(request, self._accounts)
        type_: str = request.path_params["type"]
        try:
            return json_response(self.type_resource(catalogue().event_type(type_)))
        except UnknownEventType:
            raise _not_found(f"Event type {type_}") from None

    def _schema(self, request: Request) -> Schema:
        schema_id: str = request.path_params["id"]
        try:
            return catalogue().schema(schema_id)
        except UnknownSchema:
            raise _not_found(f"Schema {schema_id}") from None

    async def fetch_schema(self, request: Request) -> Response:
        await require_account(request, self._accounts)
        schema = self._schema(request)
        url = f"{self._base_url}/v1/Schemas/{schema.id}"
        return json_response(
            SchemaResource(
                id=schema.id,
                latest_version=schema.latest_version,
                latest_version_date_created=twilio_time(schema.date_created),
                links=SchemaLinks(versions=f"{url}/Versions"),
                url=url,
            )
        )

    async def read_versions(self, request: Request) -> Response:
        await require_account(request, self._accounts)
        page = read_page(request)
        schema = self._schema(request)
        rows, has_next = memory_page(list(schema.versions), lambda v: v, page, int)
        return list_response(
            request,
            self._base_url,
            "schema_versions",
            page,
            [self.version_resource(schema, v) for v in rows],
            first_key=[rows[0]] if rows else None,
            last_key=[rows[-1]] if rows else None,
            has_next=has_next,
        )

    async def fetch_version(self, request: Request) -> Response:
        await require_account(request, self._accounts)
        schema = self._schema(request)
        version: int = request.path_params["version"]
        if version not in schema.versions:
            raise _not_found(f"Version {version} of schema {schema.id}")
        return json_response(self.version_resource(schema, version))

    async def raw_schema(self, request: Request) -> Response:
        """The JSON Schema document itself. No authentication: Twilio publishes its schema
        documents openly (events-schemas.twilio.com), and they hold no account data."""
        schema_id: str = request.path_params["id"]
        match = _DOCUMENT.fullmatch(request.path_params["document"])
        if match is None:
            raise _not_found(f"Schema document {schema_id}/{request.path_params['document']}")
        version = int(match.group(1))
        try:
            if version not in catalogue().schema(schema_id).versions:
                raise UnknownSchema(schema_id)
            document = load_schema(schema_id, version)
        except (UnknownSchema, NoSchemaDocument):
            raise _not_found(f"Schema document {schema_id}/{version}") from None
        return Response(
            _encoder.encode(document),
            media_type="application/json",
            # A published version never changes.
            headers={"Cache-Control": "public, max-age=86400"},
        )
