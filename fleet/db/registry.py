"""Repository functions of the registry: organisations, sites, gateways, presence, status and
the devices/channels a gateway's configuration defines. Every function takes a Connection
inside the caller's transaction (fleet.db.engine.transaction) and never commits by itself."""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from sqlalchemy import Connection, RowMapping, and_, case, or_, select, update

from fleet.db import upsert
from fleet.db.tables import (
    GATEWAY_STATUSES,
    channels,
    devices,
    gateways,
    latest,
    organisations,
    sites,
)
from protocols import quantities as q
from protocols.profiles import ProfileError
from protocols.profiles import load_profile as _load_profile

GATEWAY_ID_RE = re.compile(r"^[a-z0-9-]{3,64}$")
# A sensor without a `quantities` list may send any quantity of the LoRa part of the catalogue.
LORA_MIN_CODE = 64


class RegistryError(ValueError):
    """A registry change that cannot be made; the message says what to correct."""


class NotFound(RegistryError):
    """No such organisation, site or gateway."""


@functools.lru_cache(maxsize=256)
def load_profile(name: str, dirs: tuple[str, ...] | None = None) -> Any:
    """Profiles are read-only data: parse each file once, not once per gateway and config
    (a rollout to 10,000 gateways re-read the same profile 10,000 times)."""
    return _load_profile(name, list(dirs) if dirs else None)


def now_ms() -> int:
    return int(time.time() * 1000)


# --- organisations and sites -----------------------------------------------------------


def create_org(conn: Connection, slug: str, name: str, shares_benchmarks: bool = False) -> int:
    """A new organisation; returns its id."""
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,63}", slug):
        raise RegistryError(
            f"organisation slug {slug!r}: use 1..64 characters a-z, 0-9 and '-', e.g. 'goettingen'"
        )
    result = conn.execute(
        organisations.insert().values(
            slug=slug, name=name, shares_benchmarks=shares_benchmarks, created_ts_ms=now_ms()
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


def get_org_by_slug(conn: Connection, slug: str) -> RowMapping | None:
    return (
        conn.execute(select(organisations).where(organisations.c.slug == slug)).mappings().first()
    )


def create_site(
    conn: Connection,
    org_id: int,
    name: str,
    address: str = "",
    floor_area_m2: float | None = None,
    building_type: str = "",
    tags: Sequence[str] = (),
) -> int:
    """A new site (building) of an organisation; returns its id."""
    if floor_area_m2 is not None and floor_area_m2 <= 0:
        raise RegistryError(f"site {name!r}: floor_area_m2 must be > 0, got {floor_area_m2}")
    result = conn.execute(
        sites.insert().values(
            org_id=org_id,
            name=name,
            address=address,
            floor_area_m2=floor_area_m2,
            building_type=building_type,
            tags=list(tags),
            created_ts_ms=now_ms(),
        )
    )
    return int(result.inserted_primary_key[0])  # type: ignore[index]


# --- gateways --------------------------------------------------------------------------


def check_gateway_id(gateway_id: str) -> str:
    if not GATEWAY_ID_RE.match(gateway_id):
        raise RegistryError(
            f"gateway id {gateway_id!r}: use 3..64 characters a-z, 0-9 and '-' (it is the MQTT "
            "client id and user name)"
        )
    return gateway_id


def create_gateway(
    conn: Connection,
    gateway_id: str,
    org_id: int,
    *,
    site_id: int | None = None,
    name: str = "",
    tags: Sequence[str] = (),
    status: str = "accepted",
    credential_hash: str | None = None,
    signing_key: bytes | None = None,
    next_expected_seq: int = 1,
) -> None:
    """Register a gateway (provisioning calls this with the hashed credential and the key)."""
    check_gateway_id(gateway_id)
    if status not in GATEWAY_STATUSES:
        raise RegistryError(f"gateway status {status!r}: one of {', '.join(GATEWAY_STATUSES)}")
    conn.execute(
        gateways.insert().values(
            id=gateway_id,
            org_id=org_id,
            site_id=site_id,
            name=name or gateway_id,
            tags=list(tags),
            status=status,
            credential_hash=credential_hash,
            signing_key=signing_key,
            next_expected_seq=next_expected_seq,
            created_ts_ms=now_ms(),
        )
    )


def get_gateway(conn: Connection, gateway_id: str) -> RowMapping | None:
    """The gateway's row (all columns of tables.gateways), or None."""
    return conn.execute(select(gateways).where(gateways.c.id == gateway_id)).mappings().first()


def set_gateway_status(conn: Connection, gateway_id: str, status: str) -> None:
    if status not in GATEWAY_STATUSES:
        raise RegistryError(f"gateway status {status!r}: one of {', '.join(GATEWAY_STATUSES)}")
    done = conn.execute(update(gateways).where(gateways.c.id == gateway_id).values(status=status))
    if done.rowcount == 0:
        raise NotFound(f"no gateway {gateway_id!r}")


def next_free_seq(conn: Connection, gateway_id: str) -> int:
    """The seq a re-provisioned gateway (storage wiped) must continue with (docs/protocol.md)."""
    row = conn.execute(
        select(gateways.c.next_expected_seq).where(gateways.c.id == gateway_id)
    ).first()
    if row is None:
        raise NotFound(f"no gateway {gateway_id!r}")
    return int(row[0])


def set_presence(
    conn: Connection,
    gateway_id: str,
    *,
    online: bool,
    boot: int,
    session: int,
    ts_ms: int,
    fw_version: str | None = None,
    config_version: int | None = None,
) -> bool:
    """Apply a birth or will (contract 3); False if an older session's message was ignored.

    The same rule as protocols.messages.state_supersedes, as one conditional UPDATE so that two
    fleet instances cannot interleave: a message of an older (boot, session) never wins; within
    one session, offline follows online."""
    g = gateways.c
    newer = or_(
        g.boot.is_(None),
        g.boot < boot,
        and_(g.boot == boot, g.session < session),
        and_(g.boot == boot, g.session == session, or_(g.online.is_(True), not online)),
    )
    values: dict[str, Any] = {"online": online, "boot": boot, "session": session}
    if online:
        values["last_seen_ts_ms"] = ts_ms
    if fw_version is not None:
        values["fw_version"] = fw_version
    if config_version is not None:
        # Only a birth of a new session says which configuration runs now: a repeated birth of
        # the current session (a retained copy, or one handled after the session's reports)
        # must not set back what a report of that session recorded.
        new_session = or_(
            g.boot.is_(None), g.boot < boot, and_(g.boot == boot, g.session < session)
        )
        values["reported_config_version"] = case(
            (new_session, config_version), else_=g.reported_config_version
        )
    done = conn.execute(update(gateways).where(g.id == gateway_id, newer).values(**values))
    return done.rowcount > 0


def touch_last_seen(conn: Connection, gateway_id: str, ts_ms: int) -> None:
    conn.execute(
        update(gateways)
        .where(
            gateways.c.id == gateway_id,
            or_(gateways.c.last_seen_ts_ms.is_(None), gateways.c.last_seen_ts_ms < ts_ms),
        )
        .values(last_seen_ts_ms=ts_ms)
    )


def record_status(conn: Connection, gateway_id: str, status: Mapping[str, Any], ts_ms: int) -> None:
    """Keep the gateway's newest status message (decoded protocols.messages.decode_status)."""
    conn.execute(
        update(gateways)
        .where(gateways.c.id == gateway_id)
        .values(last_status=dict(status), last_status_ts_ms=ts_ms)
    )
    touch_last_seen(conn, gateway_id, ts_ms)


# --- latest values ---------------------------------------------------------------------


class LatestValue(NamedTuple):
    channel: int
    ts_ms: int
    value: float
    received_ts_ms: int


def latest_values(
    conn: Connection, gateway_id: str, channel_ids: Iterable[int] | None = None
) -> list[LatestValue]:
    """The newest reading (by reading timestamp, contract 2) of each channel of a gateway."""
    stmt = select(latest.c.channel, latest.c.ts_ms, latest.c.value, latest.c.received_ts_ms).where(
        latest.c.gateway_id == gateway_id
    )
    if channel_ids is not None:
        stmt = stmt.where(latest.c.channel.in_(list(channel_ids)))
    return [LatestValue(*row) for row in conn.execute(stmt.order_by(latest.c.channel))]


# --- devices and channels from a configuration document -------------------------------


class ChannelSpec(NamedTuple):
    channel: int
    device_id: int
    quantity: str
    unit: str
    resolution: float


def channels_of_config(
    doc: Mapping[str, Any], profile_dirs: Sequence[str] | None = None
) -> list[ChannelSpec]:
    """The channels a configuration document makes a gateway send: per meter the quantities
    listed (or all of its profile's), per sensor the listed ones (or every LoRa quantity)."""
    specs: list[ChannelSpec] = []
    for meter in doc.get("meters", ()):
        names = meter.get("quantities")
        res: dict[str, float] = {}
        try:
            profile = load_profile(meter["profile"], tuple(profile_dirs) if profile_dirs else None)
            res = {n: s.resolution for n, s in profile.quantities.items() if s.resolution}
            if names is None:
                names = list(profile.quantities)
        except ProfileError as exc:
            if names is None:
                raise RegistryError(
                    f"meter {meter['id']} ({meter.get('name', '')}): profile "
                    f"{meter['profile']!r} is unknown to the fleet, so its channels are unknown: "
                    f"list the meter's quantities in the configuration or add the profile ({exc})"
                ) from exc
        for name in names:
            if name in q.QUANTITIES:
                specs.append(_spec(meter["id"], name, res.get(name)))
    for sensor in doc.get("sensors", ()):
        names = sensor.get("quantities")
        if names is None:
            names = [n for n, v in q.QUANTITIES.items() if v[0] >= LORA_MIN_CODE]
        for name in names:
            if name in q.QUANTITIES:
                specs.append(_spec(sensor["id"], name, None))
    return specs


def _spec(device_id: int, name: str, resolution: float | None) -> ChannelSpec:
    return ChannelSpec(
        q.channel_id(device_id, name),
        device_id,
        name,
        q.unit_of(name),
        float(resolution if resolution else q.resolution_of(name)),
    )


def sync_devices_from_config(
    conn: Connection,
    gateway_id: str,
    doc: Mapping[str, Any],
    profile_dirs: Sequence[str] | None = None,
) -> list[ChannelSpec]:
    """Make the gateway's devices and channels those of a (validated) configuration document.

    Devices and channels that left the configuration are kept (their stored readings refer to
    them) but marked inactive; ingest rejects readings of inactive channels. Returns the active
    channels. Bumps gateways.channels_rev so ingest's channel cache notices."""
    if get_gateway(conn, gateway_id) is None:
        raise NotFound(f"no gateway {gateway_id!r}")
    specs = channels_of_config(doc, profile_dirs)
    dev_rows: list[dict[str, Any]] = []
    for m in doc.get("meters", ()):
        dev_rows.append(
            {
                "gateway_id": gateway_id,
                "device_id": m["id"],
                "kind": "meter",
                "name": m.get("name", ""),
                "profile": m.get("profile"),
                "unit": m.get("unit"),
                "bus": m.get("bus"),
                "active": True,
            }
        )
    for s in doc.get("sensors", ()):
        dev_rows.append(
            {
                "gateway_id": gateway_id,
                "device_id": s["id"],
                "kind": "sensor",
                "name": s.get("name", ""),
                "profile": s.get("format"),
                "unit": None,
                "bus": s.get("address"),
                "active": True,
            }
        )
    conn.execute(update(devices).where(devices.c.gateway_id == gateway_id).values(active=False))
    if dev_rows:
        upsert.insert_or_update(
            conn,
            devices,
            dev_rows,
            ("gateway_id", "device_id"),
            ("kind", "name", "profile", "unit", "bus", "active"),
        )
    conn.execute(update(channels).where(channels.c.gateway_id == gateway_id).values(active=False))
    if specs:
        rows = [
            {
                "gateway_id": gateway_id,
                "channel": s.channel,
                "device_id": s.device_id,
                "quantity": s.quantity,
                "unit": s.unit,
                "resolution": s.resolution,
                "active": True,
            }
            for s in specs
        ]
        upsert.insert_or_update(
            conn,
            channels,
            rows,
            ("gateway_id", "channel"),
            ("device_id", "quantity", "unit", "resolution", "active"),
        )
    conn.execute(
        update(gateways)
        .where(gateways.c.id == gateway_id)
        .values(channels_rev=gateways.c.channels_rev + 1)
    )
    return specs


def active_channels(conn: Connection, gateway_id: str) -> dict[int, RowMapping]:
    """channel number -> channels row (id, quantity, unit, resolution) of a gateway's active
    channels."""
    rows = conn.execute(
        select(channels).where(channels.c.gateway_id == gateway_id, channels.c.active.is_(True))
    ).mappings()
    return {int(r["channel"]): r for r in rows}
