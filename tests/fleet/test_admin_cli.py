"""The admin commands of `fleet` as an operator runs them: migrate, create-org, create-user,
create-token, claim-tokens in bulk (--json), status, export and import into an empty database
(SQLite and PostgreSQL, both ways); and refusals print one line saying what to do, exit 1 and
no traceback."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from api_helpers import add_gateway

from fleet import auth
from fleet.cli import main
from fleet.db import registry
from fleet.db import tables as t
from fleet.db.engine import make_engine, read, transaction

NOW_MS = registry.now_ms()


def fleet(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run `fleet ARGS` in this process: (exit status, stdout, stderr)."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def ok_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = fleet(capsys, *args, "--json")
    assert code == 0, err
    return json.loads(out)


def _normalised(export: dict[str, Any]) -> dict[str, Any]:
    """An export without what an import renumbers or resets by design: site ids (remapped),
    gateway status and presence (imported gateways are revoked until re-provisioned)."""
    site_names = {s["id"]: s["name"] for s in export["sites"]}
    gateways = []
    for g in export["gateways"]:
        g = dict(g, site=site_names.get(g["site_id"]))
        for key in ("org_id", "site_id", "status", "online"):
            g.pop(key)
        gateways.append(g)

    def rows(name: str) -> list[str]:
        return sorted(json.dumps(r, sort_keys=True, default=str) for r in export[name])

    return {
        "organisation": export["organisation"],
        "sites": sorted(
            json.dumps({k: v for k, v in s.items() if k not in ("id", "org_id")}, sort_keys=True)
            for s in export["sites"]
        ),
        "gateways": sorted(json.dumps(g, sort_keys=True, default=str) for g in gateways),
        "devices": rows("devices"),
        "channels": rows("channels"),
        "config_documents": rows("config_documents"),
        "users": export["users"],
    }


def test_admin_commands_and_export_import_into_an_empty_database(
    db_url: str, empty_db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = ("--database", db_url)
    org = ok_json(capsys, "create-org", "town", "--name", "Musterstadt", *src)
    user = ok_json(
        capsys, "create-user", "Admin@Town.example", "--password", "long-password",
        "--org", "town", "--role", "admin", "--name", "Ada", *src,
    )  # fmt: skip
    token = ok_json(capsys, "create-token", "admin@town.example", "--org", "town", *src)["token"]
    engine = make_engine(db_url)
    try:
        with transaction(engine) as conn:
            principal = auth.authenticate_token(conn, token, NOW_MS)
            site = registry.create_site(conn, org["id"], "Schule Nord", "Weg 1", 1500.0, "school")
        assert principal is not None and principal.role == "admin"
        assert principal.user_id == user["id"] and principal.org_id == org["id"]
        add_gateway(engine, org["id"], "school-1", site_id=site, tags=("school",))
        add_gateway(engine, org["id"], "school-2")

        claims = ok_json(capsys, "claim-tokens", "--org", "town", "--count", "25", *src)
        tokens = [c["token"] for c in claims["claim_tokens"]]
        assert len(set(tokens)) == 25 and all(tok.startswith("claim_") for tok in tokens)
        with read(engine) as conn:
            stored = set(
                conn.execute(
                    sa.select(t.claim_tokens.c.token_hash).where(
                        t.claim_tokens.c.org_id == org["id"], t.claim_tokens.c.used_ts_ms.is_(None)
                    )
                ).scalars()
            )
        assert stored == {auth.token_hash(tok) for tok in tokens}  # only hashes are kept

        status = ok_json(capsys, "status", *src)
        (town,) = status["organisations"]
        assert town["slug"] == "town" and town["gateways"]["accepted"] == 2
        assert town["online"] == 0 and status["batches_stored"] == 0

        export_file = tmp_path / "town.json"
        code, _, err = fleet(capsys, "export", "--org", "town", "-o", str(export_file), *src)
        assert code == 0, err
        exported = json.loads(export_file.read_text())
        assert "signing_key" not in export_file.read_text()  # no secrets
        assert "credential_hash" not in export_file.read_text()
        assert "password" not in export_file.read_text()
    finally:
        engine.dispose()

    dst = ("--database", empty_db_url)
    assert ok_json(capsys, "migrate", *dst)["revision"]
    # users are matched by email: the admin exists in the new database, with no organisation
    ok_json(
        capsys, "create-user", "admin@town.example", "--password", "other-password",
        "--name", "Ada", *dst,
    )  # fmt: skip
    counts = ok_json(capsys, "import", str(export_file), *dst)["imported"]
    assert counts == {"sites": 1, "gateways": 2, "devices": 2, "channels": 4,
                      "config_documents": 2, "users": 1}  # fmt: skip
    code, out, _ = fleet(capsys, "export", "--org", "town", *dst)
    assert code == 0
    again = json.loads(out)
    assert _normalised(again) == _normalised(exported)
    assert {g["status"] for g in again["gateways"]} == {"revoked"}  # until re-provisioned
    # the imported admin can work in the imported organisation
    token2 = ok_json(capsys, "create-token", "admin@town.example", "--org", "town", *dst)["token"]
    target = make_engine(empty_db_url)
    try:
        with transaction(target) as conn:
            p = auth.authenticate_token(conn, token2, NOW_MS)
        assert p is not None and p.role == "admin"
    finally:
        target.dispose()
    # importing twice is refused, with what to do instead
    code, out, err = fleet(capsys, "import", str(export_file), *dst)
    assert code == 1 and "exists already" in err and "Traceback" not in err


def test_refusals_print_what_to_do_and_exit_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = ("--database", str(tmp_path / "fleet.db"))
    code, _, err = fleet(capsys, "status", *db)
    assert code == 1 and "run `fleet migrate`" in err  # no database file yet
    assert fleet(capsys, "migrate", *db)[0] == 0
    assert fleet(capsys, "create-org", "town", *db)[0] == 0
    cases = [
        (("create-org", "town"), "organisation 'town' exists already"),
        (("create-org", "Town Hall"), "use 1..64 characters a-z"),
        (("create-token", "nobody@town.example", "--org", "town"), "create-user"),
        (("claim-tokens", "--org", "nowhere"), "fleet create-org nowhere"),
        (("claim-tokens", "--org", "town", "--count", "0"), "count: 1 .. 100000"),
        (("claim-tokens", "--org", "town", "--site", "99"), "site 99 is not a site of town"),
        (("create-user", "not-an-email", "--password", "long-password"), "not an email"),
    ]
    for args, message in cases:
        code, _, err = fleet(capsys, *args, *db)
        assert code == 1, (args, err)
        assert message in err and "Traceback" not in err, (args, err)
        assert err.startswith(f"fleet {args[0]}: "), err
    ok_json(capsys, "create-user", "tech@town.example", "--password", "long-password", *db)
    code, _, err = fleet(capsys, "create-token", "tech@town.example", "--org", "town", *db)
    assert code == 1 and "not a member of town" in err
    (tmp_path / "other.json").write_text('{"format": "something-else"}')
    code, _, err = fleet(capsys, "import", str(tmp_path / "other.json"), *db)
    assert code == 1 and "not a fleet export" in err
    # a database without tables, and one that cannot be reached
    (tmp_path / "empty.db").touch()
    code, _, err = fleet(capsys, "status", "--database", str(tmp_path / "empty.db"))
    assert code == 1 and "has no fleet tables" in err and "fleet migrate" in err
    unreachable = "postgresql://fleet:secret@127.0.0.1:1/fleet"
    code, _, err = fleet(capsys, "status", "--database", unreachable)
    assert code == 1 and "cannot use the database" in err and "secret" not in err
    assert "Traceback" not in err


def test_the_fleet_command_exits_1_with_the_message(tmp_path: Path) -> None:
    db = str(tmp_path / "fleet.db")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "fleet.cli", *args, "--database", db],
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip

    assert run("migrate").returncode == 0
    assert run("create-org", "town").returncode == 0
    again = run("create-org", "town")
    assert again.returncode == 1
    assert again.stderr.strip() == "fleet create-org: organisation 'town' exists already"
