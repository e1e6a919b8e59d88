"""Who is on a simulated call and where: numbers, SIP URIs, client identities, media regions.

Numbers come from the fictional 555-01xx range and IP addresses from the documentation
ranges (RFC 5737), so simulated data can never point at a real person or host.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import Random
from typing import Final

from callstream.model.telemetry import GatewayMetadata, Location, Party
from callstream.sim.calls import CallPlan

__all__ = ["CallParties", "draw_parties"]


@dataclass(frozen=True, slots=True)
class _Place:
    country_calling_code: str
    area: str
    city: str
    subdivision: str
    country: str
    lat: float
    lon: float


_PLACES: Final = (
    _Place("1", "415", "San Francisco", "CA", "US", 37.77, -122.42),
    _Place("1", "212", "New York", "NY", "US", 40.71, -74.01),
    _Place("1", "312", "Chicago", "IL", "US", 41.88, -87.63),
    _Place("1", "512", "Austin", "TX", "US", 30.27, -97.74),
    _Place("1", "206", "Seattle", "WA", "US", 47.61, -122.33),
    _Place("44", "207", "London", "England", "GB", 51.51, -0.13),
    _Place("49", "301", "Berlin", "Berlin", "DE", 52.52, 13.40),
    _Place("55", "119", "Sao Paulo", "SP", "BR", -23.55, -46.63),
    _Place("61", "291", "Sydney", "NSW", "AU", -33.87, 151.21),
)
_CARRIERS: Final = {
    "mobile": ("Verizon Wireless", "T-Mobile USA, Inc.", "AT&T Wireless", "Vodafone"),
    "landline": ("Lumen", "Frontier Communications", "BT"),
    "voip": ("Bandwidth.com", "Twilio"),
}
# (region, edge location, Twilio media subnet, external subnet)
_REGIONS: Final = (
    ("us1", "ashburn", "198.51.100.", "203.0.113."),
    ("us1", "umatilla", "198.51.100.", "203.0.113."),
    ("us2", "umatilla", "198.51.100.", "192.0.2."),
    ("ie1", "dublin", "198.51.100.", "192.0.2."),
    ("au1", "sydney", "198.51.100.", "192.0.2."),
)
_IDENTITIES: Final = ("alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi")
_SIP_DOMAINS: Final = ("acme.sip.twilio.com", "contoso.sip.twilio.com", "pbx.example.com")


@dataclass(frozen=True, slots=True)
class CallParties:
    from_party: Party
    to_party: Party
    metadata: GatewayMetadata
    region: str
    identity: str
    """The SDK user's identity (client calls)."""
    client_ip: str


def _number(rng: Random, place: _Place) -> str:
    return f"+{place.country_calling_code}{place.area}55501{rng.randrange(100):02d}"


def _phone_party(rng: Random, caller: bool, connection: str | None = None) -> Party:
    place = rng.choice(_PLACES)
    kind = connection or rng.choice(("mobile", "mobile", "landline", "voip"))
    number = _number(rng, place)
    return Party(
        caller=number if caller else None,
        callee=None if caller else number,
        carrier=rng.choice(_CARRIERS[kind]),
        connection=kind,
        number_prefix=f"{place.country_calling_code}{place.area}",
        location=Location(lat=place.lat, lon=place.lon),
        city=place.city,
        country_code=place.country,
        country_subdivision=place.subdivision,
    )


def _address_party(address: str, caller: bool, connection: str, ip: str | None = None) -> Party:
    return Party(
        caller=address if caller else None,
        callee=None if caller else address,
        connection=connection,
        ip_address=ip,
    )


def draw_parties(plan: CallPlan, rng: Random) -> CallParties:
    region, location, twilio_net, external_net = rng.choice(_REGIONS)
    metadata = GatewayMetadata(
        region=region,
        twilio_ip=f"{twilio_net}{rng.randrange(1, 255)}",
        external_ip=f"{external_net}{rng.randrange(1, 255)}",
        edge_location=location,
    )
    identity = f"{rng.choice(_IDENTITIES)}{rng.randrange(1000)}"
    client_ip = f"203.0.113.{rng.randrange(1, 255)}"
    sip_user = f"sip:{identity}@{rng.choice(_SIP_DOMAINS)}"
    twilio_number = _phone_party(rng, caller=True, connection="voip")
    inbound = plan.direction in ("inbound", "trunking_terminating")
    remote_is_caller = inbound
    if plan.call_type == "client":
        local = _address_party(f"client:{identity}", inbound, "twilio_sdk", client_ip)
        # The SDK user calls out (Twilio sees an inbound call) or is rung.
        remote = _phone_party(rng, caller=not inbound)
        from_party, to_party = (local, remote) if inbound else (remote, local)
        return CallParties(from_party, to_party, metadata, region, identity, client_ip)
    if plan.call_type == "sip":
        sip = _address_party(sip_user, remote_is_caller, "voip")
        phone = _phone_party(rng, caller=not remote_is_caller)
        from_party, to_party = (sip, phone) if remote_is_caller else (phone, sip)
        return CallParties(from_party, to_party, metadata, region, identity, client_ip)
    remote = _phone_party(rng, caller=remote_is_caller)
    own = twilio_number if not remote_is_caller else _as_callee(twilio_number)
    from_party, to_party = (remote, own) if remote_is_caller else (own, remote)
    return CallParties(from_party, to_party, metadata, region, identity, client_ip)


def _as_callee(party: Party) -> Party:
    return Party(
        callee=party.caller,
        carrier=party.carrier,
        connection=party.connection,
        number_prefix=party.number_prefix,
        location=party.location,
        city=party.city,
        country_code=party.country_code,
        country_subdivision=party.country_subdivision,
    )
