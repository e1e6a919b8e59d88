"""The OpenAPI 3.1 fragment of the Voice Insights v1 read API (``api/voice_insights.py``).

The record schemas are not written twice: they are the stream schemas the bodies are
rendered from (``CallEvent/3``, ``CallMetric/2``, ``CallSummary/2`` in ``schemas/json``),
lifted into components under Twilio's names (``insights.v1.call.event`` ...), and for the
summary adjusted by the REST differences ``summary_json`` makes. So a schema-driven test
of this API also proves that what it answers is what the stream schemas allow.
"""

from __future__ import annotations

from typing import Any, Final, get_args

from callstream.api.openapi_core import (
    CALL_SID,
    PAGING,
    SECURITY,
    errors,
    json_response,
    query_param,
    schema_ref,
)
from callstream.api.voice_insights import (
    LIST_STATES,
    SORTS,
    SUMMARY_STATES,
    UNSUPPORTED_TWILIO_FILTERS,
)
from callstream.model.insights import (
    EDGES,
    AnsweredBy,
    CallDirection,
    CallState,
    CallTag,
    CallType,
    Direction,
)
from callstream.schemas import load_schema

Schema = dict[str, Any]

_EVENT: Final = "insights.v1.call.event"
_METRIC: Final = "insights.v1.call.metric"
_SUMMARY: Final = "insights.v1.call.summary"
_CALL: Final = "insights.v1.call"


def _lift(schema_id: str, version: int, prefix: str) -> dict[str, Schema]:
    """A stream schema's root as component ``prefix`` and each of its definitions as
    ``prefix.<Name>``, with ``#/definitions/...`` references pointed at the components."""
    document = load_schema(schema_id, version)
    definitions: dict[str, Schema] = document.pop("definitions", {})
    document.pop("$schema", None)

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                key: (
                    f"#/components/schemas/{prefix}.{value.removeprefix('#/definitions/')}"
                    if key == "$ref" and isinstance(value, str)
                    else rewrite(value)
                )
                for key, value in node.items()
            }
        if isinstance(node, list):
            return [rewrite(item) for item in node]
        return node

    lifted = {f"{prefix}.{name}": rewrite(schema) for name, schema in definitions.items()}
    lifted[prefix] = rewrite(document)
    return lifted


def _summary_components() -> dict[str, Schema]:
    lifted = _lift("VoiceInsights.CallSummary", 2, _SUMMARY)
    root = lifted[_SUMMARY]
    stream_only = ("parent_call_sid", "parent_account_sid", "processing_version")
    for name in stream_only:
        del root["properties"][name]
    root["properties"] |= {
        "answered_by": {"type": "string", "enum": list(get_args(AnsweredBy))},
        "url": {"type": "string", "format": "uri"},
        "annotation": {
            "type": "null",
            "description": "Always null: callstream has no Annotation resource to write one.",
        },
    }
    root["required"] = [
        *(name for name in root["required"] if name not in stream_only),
        "answered_by",
        "url",
        "annotation",
    ]
    root["title"] = "Call Summary (REST)"
    root["description"] = (
        "CallSummary/2 data less parent_call_sid, parent_account_sid and processing_version, "
        "plus answered_by, url and annotation."
    )
    return lifted


def _list(key: str, item: str) -> Schema:
    return {
        "type": "object",
        "required": [key, "meta"],
        "additionalProperties": False,
        "properties": {
            key: {"type": "array", "items": schema_ref(item)},
            "meta": schema_ref("callstream.list_meta"),
        },
    }


def _comma_list(values: tuple[str, ...]) -> Schema:
    alternatives = "|".join(values)
    return {"type": "string", "pattern": f"^({alternatives})(,({alternatives}))*$"}


def _operation(
    operation_id: str, summary: str, parameters: list[Schema], responses: dict[str, Schema]
) -> Schema:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["Voice Insights"],
        "security": SECURITY,
        "parameters": parameters,
        "responses": responses,
    }


_CALL_SID_PARAM: Final[Schema] = {
    "name": "CallSid",
    "in": "path",
    "required": True,
    "description": "The call's SID (calls of other accounts are not found).",
    "schema": {"type": "string", "pattern": CALL_SID},
}
_EDGE: Final = query_param(
    "Edge", "Only this edge's records.", {"type": "string", "enum": list(EDGES)}
)
_TIME_FILTER: Final[Schema] = {
    "type": "string",
    "description": "30m, 4h, 3d, 1w (that long before now) or an ISO 8601 date or date-time "
    "(UTC unless it has an offset).",
}
_FLAG: Final[Schema] = {"type": "boolean"}

_SUMMARIES_PARAMETERS: Final = [
    query_param(
        "From",
        "Calls whose from.caller is this (number, SIP URI, client:name).",
        {"type": "string"},
    ),
    query_param("To", "Calls whose to.callee is this.", {"type": "string"}),
    query_param("FromCarrier", "Calls whose from.carrier is this.", {"type": "string"}),
    query_param("ToCarrier", "Calls whose to.carrier is this.", {"type": "string"}),
    query_param("FromCountryCode", "Calls from this ISO 3166-1 country.", {"type": "string"}),
    query_param("ToCountryCode", "Calls to this ISO 3166-1 country.", {"type": "string"}),
    query_param("VerifiedCaller", "Calls whose caller was (not) verified.", _FLAG),
    query_param("HasTag", "Calls with (true) or without (false) any tag.", _FLAG),
    query_param(
        "Tags",
        "callstream's own: calls with every one of these tags (comma-separated).",
        _comma_list(get_args(CallTag)),
    ),
    query_param("StartTime", "Calls that started at or after this.", _TIME_FILTER),
    query_param("EndTime", "Calls that started before this.", _TIME_FILTER),
    query_param("CallType", "Calls of any of these types.", _comma_list(get_args(CallType))),
    query_param("CallState", "Calls in any of these states.", _comma_list(get_args(CallState))),
    query_param(
        "Direction", "Calls of any of these directions.", _comma_list(get_args(CallDirection))
    ),
    query_param("AnsweredBy", "Calls answered by any of these.", _comma_list(get_args(AnsweredBy))),
    query_param(
        "AbnormalSession", "Calls whose last SIP response was (not) other than 200.", _FLAG
    ),
    query_param(
        "ProcessingState",
        "completed (or complete), partial (or started), or all (the default).",
        {"type": "string", "enum": list(LIST_STATES)},
    ),
    query_param(
        "SortBy",
        "Newest first by the call's start (the default) or end time.",
        {"type": "string", "enum": list(SORTS)},
    ),
    *PAGING,
]

PATHS: Final[dict[str, Any]] = {
    "/v1/Voice/Summaries": {
        "get": {
            **_operation(
                "ListCallSummaries",
                "The latest summary of each of the account's calls, filtered.",
                _SUMMARIES_PARAMETERS,
                {
                    "200": json_response(
                        "A page of summaries, newest first.", schema_ref(f"{_SUMMARY}_list")
                    ),
                    **errors(400, 401),
                },
            ),
            "description": "Twilio filters over data callstream does not keep are refused "
            "with a 400 naming them: " + ", ".join(UNSUPPORTED_TWILIO_FILTERS) + ".",
        }
    },
    "/v1/Voice/{CallSid}": {
        "get": _operation(
            "FetchCall",
            "A call's links to its summary, events and metrics.",
            [_CALL_SID_PARAM],
            {"200": json_response("The call.", schema_ref(_CALL)), **errors(400, 401, 404)},
        )
    },
    "/v1/Voice/{CallSid}/Summary": {
        "get": _operation(
            "FetchSummary",
            "A call's latest summary; with ProcessingState=complete only a complete one.",
            [
                _CALL_SID_PARAM,
                query_param(
                    "ProcessingState",
                    "complete: 404 until the complete summary exists; partial or all: the "
                    "latest summary, whatever its state.",
                    {"type": "string", "enum": list(SUMMARY_STATES)},
                ),
            ],
            {
                "200": json_response("The summary.", schema_ref(_SUMMARY)),
                **errors(400, 401, 404),
            },
        )
    },
    "/v1/Voice/{CallSid}/Events": {
        "get": _operation(
            "ListEvent",
            "A call's gateway and SDK events, oldest first.",
            [_CALL_SID_PARAM, _EDGE, *PAGING],
            {
                "200": json_response("A page of events.", schema_ref(f"{_EVENT}_list")),
                **errors(400, 401, 404),
            },
        )
    },
    "/v1/Voice/{CallSid}/Metrics": {
        "get": _operation(
            "ListMetric",
            "A call's ten-second metric records, oldest first.",
            [
                _CALL_SID_PARAM,
                _EDGE,
                query_param(
                    "Direction",
                    "Only records of this stream direction.",
                    {"type": "string", "enum": list(get_args(Direction))},
                ),
                *PAGING,
            ],
            {
                "200": json_response("A page of metric records.", schema_ref(f"{_METRIC}_list")),
                **errors(400, 401, 404),
            },
        )
    },
}

_LINK: Final[Schema] = {"type": "string", "format": "uri"}

COMPONENTS: Final[dict[str, Any]] = {
    "schemas": {
        **_lift("VoiceInsights.CallEvent", 3, _EVENT),
        **_lift("VoiceInsights.CallMetric", 2, _METRIC),
        **_summary_components(),
        _CALL: {
            "type": "object",
            "required": ["sid", "url", "links"],
            "additionalProperties": False,
            "properties": {
                "sid": {"type": "string", "pattern": CALL_SID},
                "url": _LINK,
                "links": {
                    "type": "object",
                    "required": ["events", "metrics", "summary"],
                    "additionalProperties": False,
                    "properties": {"events": _LINK, "metrics": _LINK, "summary": _LINK},
                },
            },
        },
        f"{_EVENT}_list": _list("events", _EVENT),
        f"{_METRIC}_list": _list("metrics", _METRIC),
        f"{_SUMMARY}_list": _list("call_summaries", _SUMMARY),
    }
}

FRAGMENT: Final[dict[str, Any]] = {"paths": PATHS, "components": COMPONENTS}
