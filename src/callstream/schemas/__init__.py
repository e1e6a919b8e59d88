"""The JSON Schema documents callstream streams against, one file per schema id and version.

The files live in ``json/<SchemaId>/<version>.json`` inside the package. This module only reads
them; validating against them is the tests' job, so the runtime does not depend on a validator.
"""

import functools
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from typing import Any, Final

import msgspec

__all__ = ["UnknownSchema", "load_schema", "schema_ids", "schema_versions"]

# Schema ids name a directory, so only the dotted-words shape Twilio uses is accepted: an id is
# never a path.
_SCHEMA_ID: Final = re.compile(r"[A-Za-z][A-Za-z0-9]*\.[A-Za-z][A-Za-z0-9]*")
_VERSION_FILE: Final = re.compile(r"([1-9][0-9]*)\.json")


class UnknownSchema(LookupError):
    """No schema document exists for this schema id (and version)."""


def _root() -> Traversable:
    return files(__name__).joinpath("json")


def schema_ids() -> list[str]:
    """Every schema id that has at least one version, sorted."""
    return sorted(
        entry.name
        for entry in _root().iterdir()
        if entry.is_dir() and _SCHEMA_ID.fullmatch(entry.name)
    )


def schema_versions(schema_id: str) -> list[int]:
    """The versions of ``schema_id``, ascending; the last one is the latest."""
    directory = _directory(schema_id)
    versions = (_VERSION_FILE.fullmatch(entry.name) for entry in directory.iterdir())
    return sorted(int(match.group(1)) for match in versions if match is not None)


def load_schema(schema_id: str, version: int) -> dict[str, Any]:
    """The schema document for ``schema_id`` at ``version``, as a fresh dict the caller may keep."""
    # The cache holds immutable bytes and every call decodes anew, so no caller can change what
    # the next one sees.
    document: dict[str, Any] = msgspec.json.decode(_schema_bytes(schema_id, version))
    return document


@functools.cache
def _schema_bytes(schema_id: str, version: int) -> bytes:
    entry = _directory(schema_id).joinpath(f"{version}.json")
    if not entry.is_file():
        raise UnknownSchema(f"{schema_id} has no version {version}")
    return entry.read_bytes()


def _directory(schema_id: str) -> Traversable:
    if _SCHEMA_ID.fullmatch(schema_id) is None:
        raise UnknownSchema(f"not a schema id: {schema_id!r}")
    directory = _root().joinpath(schema_id)
    if not directory.is_dir():
        raise UnknownSchema(f"unknown schema id: {schema_id!r}")
    return directory
