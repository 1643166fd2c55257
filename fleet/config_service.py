"""Desired configuration per gateway (contract 4): versioned documents validated by the shared
schema (protocols/config.py), serialised once, signed with the gateway's key (protocols/sign.py);
history, diff, rollback, targeting by org/site/tags, and the gateway's reports. It stores and
signs, and queues the signed envelope in the MQTT outbox in the same transaction (fleet/mqtt/store.py),
so it goes out if and only if the document is committed; the bridge publishes it."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from fleet.db import registry
from fleet.db import tables as t
from fleet.mqtt import store as outbox
from protocols import config as protocol_config
from protocols import sign
from protocols.lora import FORMATS
from protocols.profiles import load_all

MAX_VERSION = 2147483647


class ConfigInvalid(ValueError):
    """A document the schema refuses; errors: "path: problem" strings, every one at once."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = errors
        super().__init__("invalid configuration: " + "; ".join(errors))


class UnknownGateway(LookupError):
    """No gateway with that id (in the organisation asked about)."""


class UnknownVersion(LookupError):
    """The gateway has no configuration document of that version."""


@dataclass(frozen=True)
class StoredDocument:
    gateway_id: str
    version: int
    body: str  # the JSON text exactly as signed
    created_ts_ms: int
    created_by: int | None
    comment: str
    rollout_id: int | None

    @property
    def doc(self) -> dict[str, Any]:
        return json.loads(self.body)


@lru_cache(maxsize=1)
def known_profiles() -> dict[str, list[str]]:
    """Meter model -> the quantity names it reads, for the bundled profiles (validation)."""
    return {p.model: sorted(p.quantities) for p in load_all()}


def validate(doc: Any) -> list[str]:
    """Every problem of a configuration document ("path: problem"), [] if valid."""
    return protocol_config.validate_config(doc, known_profiles(), FORMATS)


def serialise(doc: dict[str, Any]) -> str:
    """The one JSON text that is stored and signed (UTF-8 as is, see protocols/sign.py)."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"))


def make_envelope(body: str, key: bytes) -> bytes:
    return sign.make_envelope(body, key).encode("utf-8")


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, the rest replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _row(r: Any) -> StoredDocument:
    return StoredDocument(
        gateway_id=r["gateway_id"],
        version=r["version"],
        body=r["body"],
        created_ts_ms=r["created_ts_ms"],
        created_by=r["created_by"],
        comment=r["comment"],
        rollout_id=r["rollout_id"],
    )


def _gateway(conn: Connection, gateway_id: str, org_id: int | None = None) -> Any:
    q = sa.select(t.gateways).where(t.gateways.c.id == gateway_id)
    if org_id is not None:
        q = q.where(t.gateways.c.org_id == org_id)
    row = conn.execute(q).mappings().first()
    if row is None:
        raise UnknownGateway(f"gateway {gateway_id} not found")
    return row


def latest_version(conn: Connection, gateway_id: str) -> int:
    """The newest stored document version of a gateway; 0 if it has none."""
    v = conn.execute(
        sa.select(sa.func.max(t.config_documents.c.version)).where(
            t.config_documents.c.gateway_id == gateway_id
        )
    ).scalar()
    return int(v or 0)


def get_document(conn: Connection, gateway_id: str, version: int | None = None) -> StoredDocument:
    """A stored document (the desired one when version is None); UnknownVersion otherwise."""
    c = t.config_documents.c
    q = sa.select(t.config_documents).where(c.gateway_id == gateway_id)
    q = q.order_by(c.version.desc()).limit(1) if version is None else q.where(c.version == version)
    row = conn.execute(q).mappings().first()
    if row is None:
        raise UnknownVersion(
            f"gateway {gateway_id} has no configuration"
            + ("" if version is None else f" version {version}")
        )
    return _row(row)


def history(
    conn: Connection, gateway_id: str, limit: int = 50, offset: int = 0
) -> tuple[list[StoredDocument], int]:
    """(documents newest first, total count)."""
    c = t.config_documents.c
    total = conn.execute(
        sa.select(sa.func.count()).select_from(t.config_documents).where(c.gateway_id == gateway_id)
    ).scalar_one()
    rows = conn.execute(
        sa.select(t.config_documents)
        .where(c.gateway_id == gateway_id)
        .order_by(c.version.desc())
        .limit(limit)
        .offset(offset)
    ).mappings()
    return [_row(r) for r in rows], total


def prepare(gateway_id: str, doc: Any, version: int) -> str:
    """The body text of doc as version `version` for gateway: fills in "version" and "gateway"
    when absent, refuses other values for them, validates; ConfigInvalid lists every problem."""
    if not isinstance(doc, dict):
        raise ConfigInvalid([": must be a JSON object (the configuration document)"])
    doc = dict(doc)
    errors = []
    if doc.setdefault("version", version) != version:
        errors.append(f"version: must be {version}, the next version of this gateway (or absent)")
    if doc.setdefault("gateway", gateway_id) != gateway_id:
        errors.append(f"gateway: must be {gateway_id!r}, the gateway it is for (or absent)")
    errors += validate(doc) if not errors else []
    if errors:
        raise ConfigInvalid(errors)
    return serialise(doc)


def set_desired(
    conn: Connection,
    gateway_id: str,
    doc: Any,
    now_ms: int,
    created_by: int | None = None,
    comment: str = "",
    rollout_id: int | None = None,
) -> tuple[StoredDocument, bytes]:
    """Store doc as the gateway's next version, make it the desired one and queue its signed
    envelope for gw/<id>/config/desired (retained). Also registers the document's devices and
    channels, so ingest accepts their readings. Returns the document and the envelope."""
    done, refused = set_desired_many(
        conn, {gateway_id: doc}, now_ms, created_by, comment, rollout_id
    )
    if gateway_id in refused:
        raise refused[gateway_id]
    return done[gateway_id]


def set_desired_many(
    conn: Connection,
    docs: Mapping[str, Any],
    now_ms: int,
    created_by: int | None = None,
    comment: str = "",
    rollout_id: int | None = None,
) -> tuple[dict[str, tuple[StoredDocument, bytes]], dict[str, ConfigInvalid | UnknownGateway]]:
    """set_desired for many gateways (a rollout's batch) with a few statements for all of them
    instead of several per gateway. Returns (document and envelope per gateway stored, the
    refusal per gateway not stored: UnknownGateway or ConfigInvalid); a refusal stores nothing
    for that gateway and costs the others nothing."""
    g, cd = t.gateways.c, t.config_documents.c
    keys: dict[str, bytes | None] = {}
    latest: dict[str, int] = {}
    for chunk in _chunks(list(docs)):
        for gid, key in conn.execute(sa.select(g.id, g.signing_key).where(g.id.in_(chunk))):
            keys[gid] = None if key is None else bytes(key)
        latest.update(
            conn.execute(
                sa.select(cd.gateway_id, sa.func.max(cd.version))
                .where(cd.gateway_id.in_(chunk))
                .group_by(cd.gateway_id)
            ).all()
        )
    refused: dict[str, ConfigInvalid | UnknownGateway] = {}
    ready: list[tuple[str, int, str, bytes]] = []
    for gid, doc in docs.items():
        if gid not in keys:
            refused[gid] = UnknownGateway(f"gateway {gid} not found")
            continue
        key = keys[gid]
        if key is None:
            refused[gid] = ConfigInvalid(
                [f": gateway {gid} has no signing key; provision it first"]
            )
            continue
        version = int(latest.get(gid) or 0) + 1
        if version > MAX_VERSION:
            refused[gid] = ConfigInvalid([f"version: gateway {gid} has used every version number"])
            continue
        try:
            ready.append((gid, version, prepare(gid, doc, version), key))
        except ConfigInvalid as e:
            refused[gid] = e
    if not ready:
        return {}, refused
    conn.execute(
        sa.insert(t.config_documents),
        [
            {"gateway_id": gid, "version": version, "body": body, "created_by": created_by,
             "created_ts_ms": now_ms, "rollout_id": rollout_id, "comment": comment}
            for gid, version, body, _ in ready
        ],
    )  # fmt: skip
    conn.execute(
        sa.update(t.gateways)
        .where(g.id == sa.bindparam("b_id"))
        .values(desired_config_version=sa.bindparam("b_version")),
        [{"b_id": gid, "b_version": version} for gid, version, _, _ in ready],
    )
    done: dict[str, tuple[StoredDocument, bytes]] = {}
    for gid, version, body, key in ready:
        registry.sync_devices_from_config(conn, gid, json.loads(body))
        stored = StoredDocument(gid, version, body, now_ms, created_by, comment, rollout_id)
        done[gid] = (stored, make_envelope(body, key))
    outbox.publish_desired_many(conn, [(gid, envelope) for gid, (_, envelope) in done.items()])
    return done, refused


def current_documents(conn: Connection, gateway_ids: Iterable[str]) -> dict[str, dict[str, Any]]:
    """The desired (newest) document of each given gateway that has one, in a few queries."""
    cd = t.config_documents.c
    out: dict[str, dict[str, Any]] = {}
    for chunk in _chunks(list(gateway_ids)):
        newest = (
            sa.select(cd.gateway_id, sa.func.max(cd.version).label("version"))
            .where(cd.gateway_id.in_(chunk))
            .group_by(cd.gateway_id)
            .subquery()
        )
        rows = conn.execute(
            sa.select(cd.gateway_id, cd.body).join(
                newest, (cd.gateway_id == newest.c.gateway_id) & (cd.version == newest.c.version)
            )
        )
        out.update((gid, json.loads(body)) for gid, body in rows)
    return out


def _chunks(items: list[str], size: int = 500) -> Iterable[list[str]]:
    """Lists short enough for an IN (...) on every engine."""
    for i in range(0, len(items), size):
        yield items[i : i + size]


def rollback_to(
    conn: Connection, gateway_id: str, version: int, now_ms: int, created_by: int | None = None
) -> tuple[StoredDocument, bytes]:
    """A new version whose body is that of an earlier one (versions only grow, so a gateway
    applies it: it is greater than what it runs)."""
    old = get_document(conn, gateway_id, version).doc
    old.pop("version", None)
    return set_desired(
        conn, gateway_id, old, now_ms, created_by, comment=f"rollback to version {version}"
    )


def desired_envelope(conn: Connection, gateway_id: str) -> bytes | None:
    """The signed envelope of the gateway's desired document (None if it has none): for the
    bridge to (re)publish it retained, e.g. after the broker lost its retained messages."""
    gw = _gateway(conn, gateway_id)
    if gw["desired_config_version"] is None or gw["signing_key"] is None:
        return None
    doc = get_document(conn, gateway_id, gw["desired_config_version"])
    return make_envelope(doc.body, bytes(gw["signing_key"]))


def diff(old: Any, new: Any, path: str = "") -> list[dict[str, Any]]:
    """What changed from old to new, as [{"path", "op" (added/removed/changed), "old", "new"}],
    paths in the schema's notation (meters[1].interval_s); lists compare item by item."""
    out: list[dict[str, Any]] = []
    if isinstance(old, dict) and isinstance(new, dict):
        for key in sorted(set(old) | set(new), key=str):
            sub = f"{path}.{key}" if path else str(key)
            if key not in old:
                out.append({"path": sub, "op": "added", "old": None, "new": new[key]})
            elif key not in new:
                out.append({"path": sub, "op": "removed", "old": old[key], "new": None})
            else:
                out += diff(old[key], new[key], sub)
    elif isinstance(old, list) and isinstance(new, list):
        for i in range(max(len(old), len(new))):
            sub = f"{path}[{i}]"
            if i >= len(old):
                out.append({"path": sub, "op": "added", "old": None, "new": new[i]})
            elif i >= len(new):
                out.append({"path": sub, "op": "removed", "old": old[i], "new": None})
            else:
                out += diff(old[i], new[i], sub)
    elif old != new or type(old) is not type(new):
        out.append({"path": path, "op": "changed", "old": old, "new": new})
    return out


def select_gateways(
    conn: Connection,
    org_id: int,
    gateway_ids: Iterable[str] | None = None,
    site_ids: Iterable[int] | None = None,
    tags: Iterable[str] | None = None,
) -> list[str]:
    """Accepted gateways of an organisation matching every given criterion (tags: all of
    them), sorted by id. No criterion: every accepted gateway of the organisation."""
    g = t.gateways.c
    q = sa.select(g.id, g.tags).where(g.org_id == org_id, g.status == "accepted")
    if gateway_ids is not None:
        q = q.where(g.id.in_(list(gateway_ids)))
    if site_ids is not None:
        q = q.where(g.site_id.in_(list(site_ids)))
    wanted = set(tags or ())
    # Tags are a JSON list: filtered here, the same on SQLite and PostgreSQL.
    return sorted(gid for gid, gtags in conn.execute(q) if wanted <= set(gtags or ()))


def record_reported(
    conn: Connection, gateway_id: str, report: dict[str, Any], now_ms: int | None = None
) -> int | None:
    """Record a gateway's config/reported message (decoded by protocols.messages.decode_reported;
    the bridge calls this in a transaction). Sets the version it runs and updates the rollout
    target waiting for desired_version: applied, failed (rejected) or rolled_back. Returns that
    target's rollout (None if no rollout waited for this report), for the caller to advance."""
    ts = now_ms if now_ms is not None else report["ts_ms"]
    return next(iter(record_reported_many(conn, [(gateway_id, report)], ts)), None)


def record_reported_many(
    conn: Connection, reports: list[tuple[str, dict[str, Any]]], now_ms: int
) -> set[int]:
    """record_reported for (gateway id, report) pairs in arrival order, with a few statements
    for all of them (the bridge's group of reports); reports of unknown gateways change
    nothing. Returns the rollouts of which they settled a target."""
    from fleet import rollouts  # rollouts imports this module

    if not reports:
        return set()
    last: dict[str, int] = {}
    for gateway_id, report in reports:
        last[gateway_id] = report["version"]  # the newest report of a gateway wins
    conn.execute(
        sa.update(t.gateways)
        .where(t.gateways.c.id == sa.bindparam("b_id"))
        .values(reported_config_version=sa.bindparam("b_version")),
        [{"b_id": gid, "b_version": v} for gid, v in sorted(last.items())],
    )
    return rollouts.on_reports(
        conn,
        [
            rollouts.Report(gid, r["desired_version"], r["status"], r.get("reason"))
            for gid, r in reports
        ],
        now_ms,
    )
