"""`callstream tail`: follow the live events feed of a running server."""

from __future__ import annotations

import json
from typing import Any

import httpx
from rich.console import Console

FEED = "/callstream/v1/Events"
WAIT_SECONDS = 10


class TailError(RuntimeError):
    """The server could not be reached or refused the request."""


def _line(event: dict[str, Any]) -> str:
    data = event.get("data") or {}
    kind = str(event.get("type", "")).removeprefix("com.twilio.voice.insights.")
    detail = ""
    if "name" in data:
        detail = f"{data.get('edge', '')} {data.get('group', '')}/{data['name']}"
    elif "direction" in data:
        detail = f"{data.get('edge', '')} {data['direction']}"
    elif "processing_version" in data:
        detail = f"v{data['processing_version']} {data.get('call_state', '')} {data.get('tags')}"
    when = event.get("time", "")
    return f"[dim]{when}[/dim] [bold]{kind:<33}[/bold] {data.get('call_sid', '')} {detail}"


def follow_events(
    url: str,
    auth: tuple[str, str],
    *,
    types: list[str],
    call_sid: str | None,
    from_start: bool,
    follow: bool,
    as_json: bool,
) -> None:
    console = Console(highlight=False, soft_wrap=True)
    params: dict[str, Any] = {"Type": types, "Limit": 500}
    if call_sid:
        params["CallSid"] = call_sid
    after = 0 if from_start else -1
    with httpx.Client(base_url=url, auth=auth, timeout=WAIT_SECONDS + 10) as client:
        while True:
            wait = WAIT_SECONDS if follow else 0
            try:
                response = client.get(FEED, params={**params, "After": after, "Wait": wait})
            except httpx.TransportError as exc:
                raise TailError(f"cannot reach {url}: {exc}") from None
            if response.status_code != 200:
                raise TailError(f"{response.status_code}: {response.text[:300]}")
            body = response.json()
            for event in body["events"]:
                if as_json:
                    print(json.dumps(event, separators=(",", ":")), flush=True)
                else:
                    console.print(_line(event))
            caught_up = body["next_after"] == after
            after = body["next_after"]
            if caught_up and not follow:
                return
