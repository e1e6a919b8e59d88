"""The webhook sink driver: POST a JSON array of CloudEvents, signed as Twilio signs it.

Wire format (event-streams-api.md §2.2, §2.5): the body is a compact JSON array; the request
goes to the destination with ``bodySHA256=<hex sha256 of the body>`` appended to its query
(``&`` when it already has one), and ``X-Twilio-Signature`` is base64(HMAC-SHA1(auth token,
that URL)), which twilio-python's ``RequestValidator.validate(url, raw_body, signature)``
accepts. Credentials embedded in the destination (``https://user:pass@host/...``) are sent
as a Basic ``Authorization`` header and are not part of the URL that is requested or signed:
a receiver never sees userinfo in the request it gets, so it can only validate a signature
over the URL without it.

Standard Webhooks (optional, per sink): with ``"standard_webhooks_secret": "whsec_..."`` in
the sink's configuration a request also carries ``webhook-id`` (the event's CloudEvent id, or
``batch_`` + a hash of the ids of a batch), ``webhook-timestamp`` and ``webhook-signature``
made by the ``standardwebhooks`` package over the exact body, so
``standardwebhooks.Webhook(secret).verify(body, headers)`` accepts it. X-Twilio-Signature
is sent as always.

GET sinks (``"method": "GET"``; docs/decisions/0012-delivery-get-sinks.md): one event per
request, the CloudEvent's compact JSON base64url-encoded (no padding) in the ``event`` query
parameter, no body and no ``bodySHA256``; X-Twilio-Signature signs the full URL as
requested, which twilio-python's ``RequestValidator.validate(url, {}, signature)`` accepts.
Standard Webhooks, if configured, signs the decoded event JSON.

SSRF: unless private destinations are allowed, a destination is refused when it *resolves*
to an address that is not globally routable (loopback, private, link-local such as the cloud
metadata service, shared, reserved, multicast). The check runs in the connector's resolver,
on the addresses actually connected to, so a public name that resolves to a private address
(or is re-bound to one) is refused too; IP literals, which aiohttp does not resolve, are
checked before the request.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import ipaddress
import socket
from collections.abc import Sequence
from datetime import UTC, datetime
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp
import msgspec
import yarl
from aiohttp.abc import AbstractResolver, ResolveResult
from standardwebhooks.webhooks import Webhook

from callstream.cloudevents import CloudEvent, encode_batch
from callstream.sinks.drivers import Outcome, failure_outcome, status_outcome
from callstream.store.control import Sink

DEFAULT_TIMEOUT = 5.0
USER_AGENT = "callstream-event-streams/1"
STANDARD_WEBHOOKS_KEY = "standard_webhooks_secret"
"""The sink-configuration member holding a Standard Webhooks secret (``whsec_`` + base64)."""
GET_PARAMETER = "event"
"""The query parameter a GET sink's event travels in."""


class _EventId(msgspec.Struct):
    id: str


_id_decoder = msgspec.json.Decoder(_EventId)


def standard_webhooks_secret_error(value: object) -> str | None:
    """Why ``value`` cannot be a Standard Webhooks secret; None when it can (the spec: 24 to
    64 random bytes, base64, after a ``whsec_`` prefix)."""
    if not isinstance(value, str) or not value.startswith("whsec_"):
        return "must be a string starting with whsec_"
    try:
        key = base64.b64decode(value[len("whsec_") :], validate=True)
    except (binascii.Error, ValueError):
        return "must be whsec_ followed by base64"
    if not 24 <= len(key) <= 64:
        return f"must encode 24 to 64 bytes, not {len(key)}"
    return None


def webhook_id(events: Sequence[bytes]) -> str:
    """The Standard Webhooks message id: the event's CloudEvent id, or for a batch a hash of
    its ids (the same batch retried keeps it)."""
    ids = [_id_decoder.decode(event).id for event in events]
    if len(ids) == 1:
        return ids[0]
    return "batch_" + hashlib.sha256("\n".join(ids).encode()).hexdigest()[:32]


def standard_webhooks_headers(secret: str, message_id: str, payload: bytes) -> dict[str, str]:
    now = datetime.now(UTC)
    signature = Webhook(secret).sign(message_id, now, payload.decode("utf-8"))
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(now.timestamp())),
        "webhook-signature": signature,
    }


def get_url(url: str, event: bytes) -> str:
    """``url`` with the event base64url-encoded in the ``event`` query parameter."""
    base = url.partition("#")[0]
    separator = "&" if "?" in base else "?"
    encoded = base64.urlsafe_b64encode(event).decode("ascii").rstrip("=")
    return f"{base}{separator}{GET_PARAMETER}={encoded}"


class ForbiddenDestination(OSError):
    """The destination is (or resolves to) an address sinks may not reach."""


def forbidden_reason(address: str) -> str | None:
    """Why ``address`` (an IP literal) may not be a sink's destination; None when it may."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_global and not ip.is_multicast:
        return None
    kind = (
        "loopback"
        if ip.is_loopback
        else "link-local (cloud metadata)"
        if ip.is_link_local
        else "private"
        if ip.is_private
        else "non-global"
    )
    return (
        f"{ip} is a {kind} address; sinks may reach only public addresses "
        "(set CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS=true to allow it)"
    )


class GuardedResolver(AbstractResolver):
    """Resolves with ``inner`` and drops addresses sinks may not reach; refuses a name
    that has nothing else left."""

    def __init__(self, inner: AbstractResolver | None = None) -> None:
        self._inner = inner if inner is not None else aiohttp.ThreadedResolver()

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        results = await self._inner.resolve(host, port, family)
        allowed = [r for r in results if forbidden_reason(r["host"]) is None]
        if not allowed:
            reasons = "; ".join(
                reason for r in results if (reason := forbidden_reason(r["host"])) is not None
            )
            raise ForbiddenDestination(f"destination host {host} resolves to {reasons}")
        return allowed

    async def close(self) -> None:
        await self._inner.close()


def split_credentials(destination: str) -> tuple[str, str | None]:
    """The destination without userinfo, and a Basic Authorization header for the userinfo
    (None when there is none)."""
    parts = urlsplit(destination)
    if "@" not in parts.netloc:
        return destination, None
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    credentials = f"{unquote(user)}:{unquote(password)}".encode()
    header = "Basic " + base64.b64encode(credentials).decode("ascii")
    return urlunsplit(parts._replace(netloc=hostport)), header


def body_sha256(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def signed_url(url: str, body: bytes) -> str:
    """``url`` with ``bodySHA256`` appended to its query."""
    base = url.partition("#")[0]
    separator = "&" if "?" in base else "?"
    return f"{base}{separator}bodySHA256={body_sha256(body)}"


def signature(auth_token: str, url: str) -> str:
    """``X-Twilio-Signature`` for a request to ``url`` with a JSON body (no form params)."""
    digest = hmac.new(auth_token.encode("utf-8"), url.encode("utf-8"), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


class WebhookClient:
    """One pooled aiohttp session for every webhook sink of the process."""

    def __init__(self, *, allow_private: bool, timeout: float = DEFAULT_TIMEOUT) -> None:
        self._allow_private = allow_private
        self._timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            resolver: AbstractResolver = (
                aiohttp.ThreadedResolver() if self._allow_private else GuardedResolver()
            )
            connector = aiohttp.TCPConnector(resolver=resolver, limit=0, limit_per_host=0)
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=self._timeout),
                headers={"User-Agent": USER_AGENT},
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, sink: Sink, auth_token: str, events: Sequence[bytes]) -> Outcome:
        """The ``SinkDriver`` entry point: one request with ``events`` as a JSON array (a GET
        sink: one request per event, in its URL)."""
        config = sink.configuration
        destination = str(config.get("destination", ""))
        secret = config.get(STANDARD_WEBHOOKS_KEY)
        secret = secret if isinstance(secret, str) and secret else None
        if str(config.get("method", "POST")).upper() == "GET":
            return await self._get_each(destination, auth_token, events, secret)
        body = b"[" + b",".join(events) + b"]"
        extra = None
        if secret is not None:
            extra = standard_webhooks_headers(secret, webhook_id(events), body)
        return await self.post(destination, auth_token, body, extra_headers=extra)

    async def _get_each(
        self, destination: str, auth_token: str, events: Sequence[bytes], secret: str | None
    ) -> Outcome:
        delivered: list[int] = []
        for index, event in enumerate(events):
            extra = None
            if secret is not None:
                extra = standard_webhooks_headers(secret, webhook_id([event]), event)
            outcome = await self._request(
                "GET", destination, auth_token, None, event=event, extra_headers=extra
            )
            if not outcome.ok:
                return msgspec.structs.replace(outcome, delivered=tuple(delivered))
            delivered.append(index)
        return Outcome(ok=True, retry=False, status=200)

    async def post_events(
        self, destination: str, auth_token: str, events: list[CloudEvent]
    ) -> Outcome:
        return await self.post(destination, auth_token, encode_batch(events))

    async def post(
        self,
        destination: str,
        auth_token: str,
        body: bytes,
        *,
        extra_headers: dict[str, str] | None = None,
    ) -> Outcome:
        """POST ``body`` (a JSON array of CloudEvents) to the sink's ``destination``."""
        return await self._request(
            "POST", destination, auth_token, body, extra_headers=extra_headers
        )

    async def _request(
        self,
        method: str,
        destination: str,
        auth_token: str,
        body: bytes | None,
        *,
        event: bytes = b"",
        extra_headers: dict[str, str] | None = None,
    ) -> Outcome:
        url, authorization = split_credentials(destination)
        headers: dict[str, str] = {}
        if body is not None:
            target = signed_url(url, body)
            headers["Content-Type"] = "application/json"
        else:
            target = get_url(url, event)
        headers["X-Twilio-Signature"] = signature(auth_token, target)
        headers.update(extra_headers or {})
        if authorization is not None:
            headers["Authorization"] = authorization
        if not self._allow_private:
            host = urlsplit(url).hostname or ""
            try:
                ipaddress.ip_address(host.split("%", 1)[0])
            except ValueError:
                pass  # a name: checked on its resolved addresses at connect time
            else:
                reason = forbidden_reason(host)
                if reason is not None:
                    return Outcome(ok=False, retry=False, error=f"forbidden destination: {reason}")
        try:
            async with self._get_session().request(
                method,
                yarl.URL(target, encoded=True),
                data=body,
                headers=headers,
                allow_redirects=False,
            ) as response:
                await response.read()
                status = response.status
        except aiohttp.ClientConnectorError as exc:
            if isinstance(exc.os_error, ForbiddenDestination):
                return Outcome(
                    ok=False, retry=False, error=f"forbidden destination: {exc.os_error}"
                )
            return failure_outcome(exc, self._timeout)
        except (TimeoutError, aiohttp.ClientError, OSError) as exc:
            return failure_outcome(exc, self._timeout)
        return status_outcome(status)
