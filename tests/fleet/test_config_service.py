"""Configuration documents: validation errors with paths (422 over the API), versions,
signatures the gateway accepts, the outbox message, history, diff and rollback."""

from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from api_helpers import NOW_MS, add_gateway, bearer, client, config, make_org
from sqlalchemy import Engine

from fleet import config_service
from fleet.config_service import ConfigInvalid
from fleet.db import tables as t
from fleet.db.engine import read, transaction
from fleet.db.tables_ops import mqtt_outbox
from protocols import config as protocol_config
from protocols import sign


@pytest.fixture
def gw(db: Engine) -> str:
    with transaction(db) as conn:
        org_id = conn.execute(
            sa.insert(t.organisations)
            .values(slug="t", name="T", created_ts_ms=0)
            .returning(t.organisations.c.id)
        ).scalar_one()
    return add_gateway(db, org_id, "gw-cfg-1")  # has version 1 = api_helpers.CONFIG


def test_set_desired_signs_the_stored_text_and_queues_it_retained(db: Engine, gw: str) -> None:
    doc = config()
    doc["uplink"] = {"batch_interval_s": 60}
    with transaction(db) as conn:
        stored, envelope = config_service.set_desired(conn, gw, doc, NOW_MS + 1)
        key = bytes(
            conn.execute(
                sa.select(t.gateways.c.signing_key).where(t.gateways.c.id == gw)
            ).scalar_one()
        )
    assert stored.version == 2
    text = sign.open_envelope(envelope, key)  # what the gateway does
    assert text == stored.body
    parsed = json.loads(text)
    assert parsed["version"] == 2 and parsed["gateway"] == gw
    protocol_config.check_config(parsed)  # valid for the gateway's own validator
    with read(db) as conn:
        rows = conn.execute(sa.select(mqtt_outbox).order_by(mqtt_outbox.c.id)).mappings().all()
        desired = conn.execute(
            sa.select(t.gateways.c.desired_config_version).where(t.gateways.c.id == gw)
        ).scalar()
    assert desired == 2
    assert rows[-1]["topic"] == f"gw/{gw}/config/desired" and rows[-1]["retain"]
    assert bytes(rows[-1]["payload"]) == envelope


def test_invalid_document_lists_every_error_with_its_path_and_stores_nothing(
    db: Engine, gw: str
) -> None:
    doc = config()
    doc["meters"][0]["interval_s"] = 0
    doc["buses"][0]["parity"] = "X"
    doc["intervall_s"] = 5
    with transaction(db) as conn, pytest.raises(ConfigInvalid) as e:
        config_service.set_desired(conn, gw, doc, NOW_MS)
    text = "\n".join(e.value.errors)
    assert "meters[0].interval_s" in text and "buses[0].parity" in text and "intervall_s" in text
    with read(db) as conn:
        assert config_service.latest_version(conn, gw) == 1


def test_version_and_gateway_fields_must_match_if_given(db: Engine, gw: str) -> None:
    with transaction(db) as conn, pytest.raises(ConfigInvalid) as e:
        config_service.set_desired(conn, gw, dict(config(), version=7, gateway="gw-other"), NOW_MS)
    assert any(err.startswith("version:") for err in e.value.errors)
    assert any(err.startswith("gateway:") for err in e.value.errors)


def test_unknown_meter_profile_is_refused() -> None:
    doc = dict(config(), version=1, gateway="gw-x")
    doc["meters"][0]["profile"] = "no_such_meter"
    assert any("meters[0].profile" in e for e in config_service.validate(doc))


def test_diff_reports_paths() -> None:
    old = {"uplink": {"batch_interval_s": 10}, "meters": [{"id": 1}], "lora": {"port": "a"}}
    new = {"uplink": {"batch_interval_s": 60}, "meters": [{"id": 1}, {"id": 2}]}
    changes = {(c["path"], c["op"]) for c in config_service.diff(old, new)}
    assert changes == {
        ("uplink.batch_interval_s", "changed"),
        ("meters[1]", "added"),
        ("lora", "removed"),
    }


def test_merge_patch_follows_rfc_7386() -> None:
    # RFC 7386 section 3 example
    target = {
        "title": "Goodbye!",
        "author": {"givenName": "John", "familyName": "Doe"},
        "tags": ["example", "sample"],
        "content": "This will be unchanged",
    }
    patch = {
        "title": "Hello!",
        "phoneNumber": "+01-123-456-7890",
        "author": {"familyName": None},
        "tags": ["example"],
    }
    assert config_service.merge_patch(target, patch) == {
        "title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"],
        "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890",
    }  # fmt: skip


def test_api_put_history_diff_and_rollback(db: Engine) -> None:
    a = make_org(db, "town-a", roles=("operator",))
    c = client(db)
    h = bearer(a.tokens["operator"])
    url = f"/api/v1/gateways/{a.gateway}/config"
    bad = config()
    bad["meters"][0]["unit"] = 999
    r = c.put(url, json=bad, headers=h)
    assert r.status_code == 422
    assert r.headers["content-type"].startswith("application/problem+json")
    assert {"path": "meters[0].unit", "message": r.json()["errors"][0]["message"]} in r.json()[
        "errors"
    ]
    doc = config()
    doc["uplink"] = {"batch_interval_s": 60}
    r = c.put(url, json=doc, headers=h, params={"comment": "slower"})
    assert r.status_code == 201 and r.json()["version"] == 2
    r = c.get(f"{url}/diff", params={"from": 1, "to": 2}, headers=h)
    assert [(x["path"], x["old"], x["new"]) for x in r.json()["changes"]] == [
        ("uplink", None, {"batch_interval_s": 60})
    ]
    r = c.post(f"{url}/rollback", json={"version": 1}, headers=h)
    assert r.status_code == 201 and r.json()["version"] == 3
    assert "uplink" not in r.json()["document"]
    r = c.get(f"{url}/history", headers=h)
    assert [v["version"] for v in r.json()["items"]] == [3, 2, 1] and r.json()["total"] == 3
    assert c.get(f"{url}/diff", params={"from": 1, "to": 3}, headers=h).json()["changes"] == []
    r = c.get(url, headers=h)
    assert r.json()["version"] == 3
    r = c.get("/api/v1/audit", headers=h)  # operator may not read the audit log
    assert r.status_code == 403


def test_set_desired_many_stores_each_and_refuses_only_the_gateways_it_cannot_configure(
    db: Engine, gw: str
) -> None:
    with read(db) as conn:
        org_id = conn.execute(sa.select(t.gateways.c.org_id).where(t.gateways.c.id == gw)).scalar()
    other = add_gateway(db, org_id, "gw-cfg-2")
    keyless = add_gateway(db, org_id, "gw-cfg-3")
    with transaction(db) as conn:
        conn.execute(
            sa.update(t.gateways).where(t.gateways.c.id == keyless).values(signing_key=None)
        )
    good = config()
    good["uplink"] = {"batch_interval_s": 60}
    bad = config()
    bad["uplink"] = {"batch_interval_s": 0}
    docs = {gw: good, other: bad, keyless: good, "gw-nowhere": good}
    with transaction(db) as conn:
        before = conn.execute(sa.select(sa.func.count()).select_from(mqtt_outbox)).scalar_one()
        done, refused = config_service.set_desired_many(
            conn, docs, NOW_MS + 1, comment="batch", rollout_id=None
        )
    assert list(done) == [gw]
    assert isinstance(refused[other], ConfigInvalid)
    assert "uplink.batch_interval_s" in str(refused[other])
    assert "no signing key" in str(refused[keyless])
    assert isinstance(refused["gw-nowhere"], config_service.UnknownGateway)
    stored, envelope = done[gw]
    assert stored.version == 2 and stored.comment == "batch"
    with read(db) as conn:
        key = bytes(
            conn.execute(
                sa.select(t.gateways.c.signing_key).where(t.gateways.c.id == gw)
            ).scalar_one()
        )
        rows = conn.execute(sa.select(mqtt_outbox).order_by(mqtt_outbox.c.id)).mappings().all()
        assert config_service.latest_version(conn, other) == 1  # nothing stored for it
        assert config_service.current_documents(conn, [gw, other, "gw-nowhere"]) == {
            gw: json.loads(stored.body),
            other: config_service.get_document(conn, other).doc,
        }
    assert sign.open_envelope(envelope, key) == stored.body
    assert len(rows) == before + 1  # one message, for the one stored document
    assert rows[-1]["topic"] == f"gw/{gw}/config/desired" and rows[-1]["retain"]
    assert bytes(rows[-1]["payload"]) == envelope
