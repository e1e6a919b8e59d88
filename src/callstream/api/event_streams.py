"""The Event Streams v1 REST API: the paths and shapes of events.twilio.com/v1.

Each resource's handlers live in their own module (``sinks``, ``subscriptions``,
``event_types``); this one maps paths and methods to them. A path whose method is not
listed answers 405. twilio-python puts path values into URLs without encoding them
(event-streams-api.md §1.3), and event types and schema ids need none.
The OpenAPI description of these paths is ``api/openapi_event_streams.py``.
"""

from __future__ import annotations

from starlette.routing import BaseRoute, Route

from callstream.api.event_types import CatalogueRoutes
from callstream.api.sinks import SinkRoutes
from callstream.api.subscriptions import SubscriptionRoutes
from callstream.config import Settings
from callstream.store.control import ControlStore
from callstream.store.interfaces import AccountStore


def event_streams_routes(
    accounts: AccountStore, control: ControlStore, settings: Settings
) -> list[BaseRoute]:
    base_url = settings.base_url
    sinks = SinkRoutes(accounts, control, base_url, settings.allow_private_destinations)
    subscriptions = SubscriptionRoutes(accounts, control, base_url)
    types = CatalogueRoutes(accounts, base_url)
    events = "/v1/Subscriptions/{sid}/SubscribedEvents"
    return [
        Route("/v1/Sinks", sinks.read, methods=["GET"]),
        Route("/v1/Sinks", sinks.create, methods=["POST"]),
        Route("/v1/Sinks/{sid}", sinks.fetch, methods=["GET"]),
        Route("/v1/Sinks/{sid}", sinks.update, methods=["POST"]),
        Route("/v1/Sinks/{sid}", sinks.delete, methods=["DELETE"]),
        Route("/v1/Sinks/{sid}/Test", sinks.test, methods=["POST"]),
        Route("/v1/Sinks/{sid}/Validate", sinks.validate, methods=["POST"]),
        Route("/v1/Subscriptions", subscriptions.read, methods=["GET"]),
        Route("/v1/Subscriptions", subscriptions.create, methods=["POST"]),
        Route("/v1/Subscriptions/{sid}", subscriptions.fetch, methods=["GET"]),
        Route("/v1/Subscriptions/{sid}", subscriptions.update, methods=["POST"]),
        Route("/v1/Subscriptions/{sid}", subscriptions.delete, methods=["DELETE"]),
        Route(events, subscriptions.read_events, methods=["GET"]),
        Route(events, subscriptions.create_event, methods=["POST"]),
        Route(events + "/{type}", subscriptions.fetch_event, methods=["GET"]),
        Route(events + "/{type}", subscriptions.update_event, methods=["POST"]),
        Route(events + "/{type}", subscriptions.delete_event, methods=["DELETE"]),
        Route("/v1/Types", types.read_types, methods=["GET"]),
        Route("/v1/Types/{type}", types.fetch_type, methods=["GET"]),
        Route("/v1/Schemas/{id}", types.fetch_schema, methods=["GET"]),
        Route("/v1/Schemas/{id}/Versions", types.read_versions, methods=["GET"]),
        Route("/v1/Schemas/{id}/Versions/{version:int}", types.fetch_version, methods=["GET"]),
        Route("/schemas/{id}/{document}", types.raw_schema, methods=["GET"]),
    ]
