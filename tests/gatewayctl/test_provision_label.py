"""`gatewayctl provision` and the claim token checks: the label's QR code (PNG made with
qrcode) decodes back to the token with zxing-cpp, and HTML and PDF labels are written; a used
or expired (revoked) claim token is refused with a clear message by build and provision, which
check it at the fleet's broker the way the gateway logs in; an unreachable fleet (API or MQTT)
and a refused API token say what to check."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest
import zxingcpp
from conftest import Fleet, cli_json, run_cli
from PIL import Image

from gatewayctl.claim import TokenRefused, _try_login

pytestmark = pytest.mark.timeout(60)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_label_qr_code_decodes_back_to_the_token(tmp_path: Path) -> None:
    token = "claim_Zx8-4hQvT0mB3nYw9LcR2pKsE7uJ1aGdF5oHiVbN"
    got = cli_json("provision", "--token", token, "--gateway-id", "gs-sued-1",
                   "--site", "Grundschule Süd", "--out", str(tmp_path))  # fmt: skip
    files = got["label_files"]
    decoded = zxingcpp.read_barcodes(Image.open(files["png"]))
    assert [(b.format.name, b.text) for b in decoded] == [("QRCode", token)]
    html = Path(files["html"]).read_text()
    assert token in html and "gs-sued-1" in html and "Grundschule Süd" in html
    assert Path(files["pdf"]).read_bytes().startswith(b"%PDF")


def test_provision_makes_a_claim_token_for_the_site(fleet: Fleet, tmp_path: Path) -> None:
    h = {"Authorization": f"Bearer {fleet.api_token}"}
    site = httpx.post(f"{fleet.url}/api/v1/sites", json={"name": "Hallenbad"}, headers=h).json()
    got = cli_json("provision", "--fleet", fleet.url, "--api-token", fleet.tech_token,
                   "--site", str(site["id"]), "--ttl", "2h", "--out", str(tmp_path), "--no-pdf")  # fmt: skip
    claims = httpx.get(f"{fleet.url}/api/v1/claim-tokens", headers=h).json()["items"]
    mine = next(c for c in claims if c["id"] == got["claim_token_id"])
    assert mine["site_id"] == site["id"] and mine["used_ts_ms"] is None
    assert 7100_000 < mine["expires_ts_ms"] - mine["created_ts_ms"] <= 7200_000
    assert "pdf" not in got["label_files"]
    code, _o, err = run_cli("provision", "--fleet", fleet.url, "--api-token", fleet.tech_token,
                            "--site", "Nirgendwo", "--out", str(tmp_path))  # fmt: skip
    assert code == 1 and "site 'Nirgendwo': no site(s) of that name" in err


def wait_refused(fleet: Fleet, token: str) -> None:
    """The broker drops a used or revoked token's login within a second (account refresh)."""
    deadline = time.monotonic() + 10
    while True:
        try:
            _try_login(fleet.mqtt_url, token, None, 5)
        except TokenRefused:
            return
        assert time.monotonic() < deadline, "the broker kept accepting the token"
        time.sleep(0.2)


def test_used_or_expired_claim_token_is_refused_by_build_and_provision(
    fleet: Fleet, tmp_path: Path
) -> None:
    h = {"Authorization": f"Bearer {fleet.api_token}"}
    used, revoked = (
        cli_json("provision", "--fleet", fleet.url, "--api-token", fleet.tech_token,
                 "--out", str(tmp_path / name), "--no-pdf")
        for name in ("a", "b")
    )  # fmt: skip
    r = httpx.post(f"{fleet.url}/api/v1/provision/claim", json={"token": used["token"]})
    assert r.status_code == 201
    r = httpx.delete(f"{fleet.url}/api/v1/claim-tokens/{revoked['claim_token_id']}", headers=h)
    assert r.status_code == 204  # revoking makes it expire now
    for tok in (used, revoked):
        wait_refused(fleet, tok["token"])
        code, _o, err = run_cli(
            "build", "--board", "unix", "--out", str(tmp_path / "build"),
            "--fleet-mqtt", fleet.mqtt_url, "--claim-token", tok["token"],
        )  # fmt: skip
        assert code == 1, err
        assert "claim token refused by the fleet's broker: it is used, expired or revoked" in err
        assert not (tmp_path / "build" / "fs.img").exists()  # nothing built with a dead token
    code, _o, err = run_cli("provision", "--token", used["token"], "--fleet-mqtt",
                            fleet.mqtt_url, "--out", str(tmp_path / "c"))  # fmt: skip
    assert code == 1 and "used, expired or revoked" in err


def test_unreachable_fleet_and_refused_api_token_say_what_to_check(
    fleet: Fleet, tmp_path: Path
) -> None:
    port = free_port()
    code, _o, err = run_cli("provision", "--fleet", f"http://127.0.0.1:{port}",
                            "--api-token", "x", "--out", str(tmp_path))  # fmt: skip
    assert code == 1 and f"fleet unreachable at http://127.0.0.1:{port}/api/v1" in err, err
    code, _o, err = run_cli("build", "--board", "unix", "--out", str(tmp_path / "b"),
                            "--fleet-mqtt", f"mqtt://127.0.0.1:{port}", "--claim-token",
                            "claim_" + "a" * 40)  # fmt: skip
    assert code == 1 and f"fleet unreachable: its MQTT broker 127.0.0.1:{port}" in err, err
    code, _o, err = run_cli("provision", "--fleet", fleet.url, "--api-token", "not-a-token",
                            "--out", str(tmp_path))  # fmt: skip
    assert code == 1 and "the fleet refused the API token" in err
    code, _o, err = run_cli("commission", "--fleet", fleet.url, "--api-token", fleet.tech_token,
                            "--gateway", "nie-gesehen", "--timeout", "0.5", "--poll-s", "0.1",
                            "--out", str(tmp_path))  # fmt: skip
    assert code == 1
    assert "waiting for the gateway to claim its identity: nothing within 0.5 s" in err
