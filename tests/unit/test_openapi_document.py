"""The OpenAPI document: assembled from fragments, every reference resolves, clashes fail."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest

from callstream.api import openapi_core, openapi_voice_insights
from callstream.api.openapi import FragmentConflict, build_document
from callstream.schemas import load_schema


def _refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref" and isinstance(value, str):
                yield value
            else:
                yield from _refs(value)
    elif isinstance(node, list):
        for item in node:
            yield from _refs(item)


METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}


def _operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:  # a path item may also hold shared "parameters"
                yield path, method, operation


def _resolve(document: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = document
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def test_every_reference_resolves_and_every_operation_is_secured_or_public() -> None:
    document = build_document("http://127.0.0.1:8080")
    assert document["openapi"] == "3.1.0"
    for ref in set(_refs(document)):
        _resolve(document, ref)
    schemes = document["components"]["securitySchemes"]
    for path, method, operation in _operations(document):
        assert operation["responses"], (method, path)
        for requirement in operation["security"]:
            assert set(requirement) <= set(schemes), (method, path)
    public = {path for path, _, operation in _operations(document) if operation["security"] == []}
    assert {"/healthz"} <= public
    assert "/v1/Voice/Summaries" not in public


def test_the_document_builds_without_the_event_streams_fragment() -> None:
    parts = [openapi_core.FRAGMENT, openapi_voice_insights.FRAGMENT]
    document = build_document("http://example.test", parts)
    assert "/v1/Voice/{CallSid}/Summary" in document["paths"]
    assert "/v1/Sinks" not in document["paths"]
    for ref in set(_refs(document)):
        _resolve(document, ref)


def test_fragments_that_clash_fail_and_a_shared_scheme_may_differ_in_words() -> None:
    scheme = {"accountSid_authToken": {"type": "http", "scheme": "basic"}}
    same = {"paths": {}, "components": {"securitySchemes": scheme}}
    document = build_document("http://x", [openapi_core.FRAGMENT, same])
    assert document["components"]["securitySchemes"]["accountSid_authToken"]["scheme"] == "basic"
    other_path = {"paths": {"/healthz": {"get": {"responses": {}}}}}
    with pytest.raises(FragmentConflict, match="/healthz"):
        build_document("http://x", [openapi_core.FRAGMENT, other_path])
    other_schema = {"components": {"schemas": {"callstream.error": {"type": "string"}}}}
    with pytest.raises(FragmentConflict, match=r"callstream\.error"):
        build_document("http://x", [openapi_core.FRAGMENT, other_schema])


def test_voice_insights_records_are_the_stream_schemas() -> None:
    # The event and metric records are CallEvent/3 and CallMetric/2 data: a document valid
    # against the stream schema is valid against the lifted component, and the other way.
    document = build_document("http://x")
    for component, schema_id, version in [
        ("insights.v1.call.event", "VoiceInsights.CallEvent", 3),
        ("insights.v1.call.metric", "VoiceInsights.CallMetric", 2),
    ]:
        lifted = document["components"]["schemas"][component]
        stream = load_schema(schema_id, version)
        assert lifted["required"] == stream["required"]
        assert set(lifted["properties"]) == set(stream["properties"])
    summary = document["components"]["schemas"]["insights.v1.call.summary"]
    assert {"answered_by", "url", "annotation"} <= set(summary["required"])
    assert not {"parent_call_sid", "processing_version"} & set(summary["properties"])
    # The lifted summary schema, with its components, checks a body like any JSON Schema.
    resolver_document = {**summary, "components": document["components"]}
    validator = jsonschema.Draft202012Validator(resolver_document)
    assert list(validator.iter_errors({"call_sid": "nope"}))
