"""The web UI end to end in Debian's headless chromium (Playwright, no browser download)
against a running `fleet serve` (in-process, SQLite, the Mosquitto it starts) with simulated
gateways talking real MQTT: sign in; gateways come online on the open page; a meter chart
with data and its CSV; a claim token whose printed QR code decodes to the token; a
configuration with a validation error at its field, then a valid one the gateway reports
applied; a rollout reaching both gateways; halting another; the language switch; and an
operator of another organisation seeing none of it."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
from pathlib import Path

import pytest
from playwright.async_api import Browser, Page, async_playwright, expect

from fleet.mqtt.broker import find_mosquitto
from fleet.serve import Running, ServeOptions, serve
from fleet.ui.sample import PASSWORD, SimGateway, make_sample

pytestmark = [
    pytest.mark.timeout(120),
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
TIMEOUT_MS = 15_000


async def sign_in(page: Page, base: str, org: str, email: str) -> None:
    await page.goto(base + "/ui/")
    await page.get_by_label("Organisation").fill(org)
    await page.get_by_label("E-Mail").fill(email)
    await page.get_by_label("Passwort").fill(PASSWORD)
    await page.get_by_role("button", name="Anmelden").click()
    await expect(page.locator("h1")).to_contain_text("Übersicht")


def decode_qr(png: bytes) -> str:
    import zxingcpp
    from PIL import Image

    found = zxingcpp.read_barcodes(Image.open(io.BytesIO(png)))
    assert found, "no QR code in the label"
    return found[0].text


async def scenario(running: Running, browser: Browser) -> None:
    base = f"http://127.0.0.1:{running.http_port}"
    sample = await asyncio.to_thread(make_sample, running.engine)
    sims = [SimGateway(gw, running.mqtt_port) for gw in sample.gateways]
    school, hall = sims
    try:
        context = await browser.new_context(viewport={"width": 1100, "height": 900})
        context.set_default_timeout(TIMEOUT_MS)
        page = await context.new_page()
        await sign_in(page, base, sample.org_slug, sample.admin_email)

        # gateways come online while the list is open: no reload, the live update shows it
        await page.goto(base + "/ui/gateways")
        row = page.locator(f'[data-gw-state="{school.gw.id}"]')
        await expect(row).to_have_class(re.compile("state-offline"))
        await page.evaluate("window.__sameDocument = true")
        await asyncio.gather(school.start(), hall.start())
        for sim in sims:
            cell = page.locator(f'[data-gw-state="{sim.gw.id}"]')
            await expect(cell).to_have_class(re.compile("state-online"))
            await expect(cell).to_contain_text("online")
        assert await page.evaluate("window.__sameDocument") is True

        # a meter with data: charts drawn from the readings, CSV export of the same
        n = await school.send_history(minutes=90)
        await page.goto(f"{base}/ui/gateways/{school.gw.id}/devices/1")
        power = page.locator('[data-chart="power_total"] svg')
        assert int(await power.get_attribute("data-points") or 0) >= 80
        assert (
            int(await page.locator('[data-chart="profile"] svg').get_attribute("data-points") or 0)
            >= 5
        )
        assert await page.locator('[data-chart="energy_import"] svg rect.bar').count() >= 5
        href = await page.get_by_role("link", name="Rohwerte").get_attribute("href")
        csv = await page.request.get(base + str(href))
        assert csv.ok and len((await csv.text()).strip().splitlines()) == n + 1  # header + rows

        # a claim token and its printable label: the QR code carries the token
        await page.goto(base + "/ui/provisioning")
        await page.get_by_label("Bezeichnung").fill("Schule Süd")
        await page.get_by_role("button", name="Erstellen und Etiketten anzeigen").click()
        token = (await page.locator("[data-claim-token]").inner_text()).strip()
        assert token.startswith("claim_")
        assert decode_qr(await page.locator(".qr-box").screenshot()) == token

        # configuration: an invalid value is shown at its field, nothing is stored ...
        await page.goto(f"{base}/ui/gateways/{school.gw.id}/config")
        unit = page.locator('[data-path="meters[0].unit"] input')
        await unit.fill("999")
        await page.get_by_role("button", name="Speichern und senden").click()
        field = page.locator('[data-path="meters[0].unit"]')
        await expect(field).to_have_class(re.compile("invalid"))
        await expect(field.locator(".field-error")).to_contain_text("must be")
        await expect(unit).to_have_attribute("aria-invalid", "true")
        # ... then a valid change goes to the gateway, which reports it applied (live)
        await unit.fill("2")
        await page.locator('[data-path="uplink.batch_interval_s"] input').fill("60")
        await page.get_by_role("button", name="Speichern und senden").click()
        await expect(page.locator(".notice")).to_contain_text("Version 2")
        await expect(page.locator(f'[data-gw-reported="{school.gw.id}"]')).to_have_text("2")
        assert school.version == 2

        # a staged rollout to both gateways, started from the list's bulk actions
        await page.goto(base + "/ui/gateways")
        for sim in sims:
            await page.locator(f'input[name="gw"][value="{sim.gw.id}"]').check()
        await page.get_by_label("Änderung (JSON Merge Patch)").fill(
            '{"uplink": {"batch_interval_s": 120}}'
        )
        await page.get_by_label("Stufengröße in % der Gateways").fill("50")
        await page.get_by_role("button", name="Rollout starten").click()
        await expect(page.locator("h1")).to_contain_text("Rollout")
        rollout_url = page.url.split("?")[0]
        rid = rollout_url.rsplit("/", 1)[1]
        await expect(page.locator(f'[data-rollout-count="{rid}:applied"]')).to_have_text("2")
        await expect(page.locator(f'[data-rollout-state="{rid}"]')).to_contain_text("abgeschlossen")
        assert (school.version, hall.version) == (3, 2)

        # a rollout that does not finish (the gateways stop answering) is halted
        school.apply = hall.apply = False
        await page.goto(base + "/ui/rollouts")
        await page.get_by_label("Änderung (JSON Merge Patch)").fill(
            '{"uplink": {"batch_interval_s": 90}}'
        )
        await page.get_by_label("Gateway-Kennungen").fill(f"{school.gw.id}, {hall.gw.id}")
        await page.get_by_role("button", name="Rollout starten").click()
        await expect(page.locator("[data-rollout-state]")).to_contain_text("läuft")
        halted_url = page.url.split("?")[0]
        await page.get_by_role("button", name="Anhalten").click()
        await expect(page.locator("[data-rollout-state]")).to_contain_text("angehalten")
        await expect(page.get_by_role("button", name="Fortsetzen")).to_be_visible()

        # switch to English: the same page, in English, and it stays so
        await page.get_by_role("link", name="EN", exact=True).click()
        await expect(page.locator("[data-rollout-state]")).to_contain_text("halted")
        await expect(page.get_by_role("button", name="Resume")).to_be_visible()
        await expect(page.get_by_role("navigation", name="Main navigation")).to_contain_text(
            "Overview"
        )
        await page.goto(base + "/ui/")
        await expect(page.locator("h1")).to_contain_text("Overview")

        # an operator of another organisation sees nothing of it, not even by id
        other = await browser.new_context()
        other.set_default_timeout(TIMEOUT_MS)
        page2 = await other.new_page()
        await sign_in(page2, base, sample.other_slug, sample.other_email)
        await page2.goto(base + "/ui/gateways")
        await expect(page2.locator("table.gateways tbody")).to_contain_text("Keine Gateways")
        for path in (f"/ui/gateways/{school.gw.id}", f"/ui/gateways/{school.gw.id}/config",
                     f"/ui/gateways/{school.gw.id}/devices/1", halted_url.removeprefix(base),
                     rollout_url.removeprefix(base)):  # fmt: skip
            response = await page2.goto(base + path)
            assert response is not None and response.status == 404, path
            await expect(page2.locator("h1")).to_have_text("Nicht gefunden")
        await page2.goto(base + "/ui/rollouts")
        assert school.gw.id not in await page2.content()
        await other.close()
        await context.close()
    finally:
        for sim in sims:
            await sim.stop()


def test_operator_journey_in_chromium(tmp_path: Path) -> None:
    opts = ServeOptions(
        data_dir=tmp_path / "fleet-data", broker="mosquitto", mqtt_port=0,
        mqtt_bind="127.0.0.1", http_host="127.0.0.1", http_port=0, rollout_tick_s=0.3,
    )  # fmt: skip

    async def main() -> None:
        ready: asyncio.Queue[Running] = asyncio.Queue()
        stop = asyncio.Event()
        server = asyncio.create_task(serve(opts, stop, on_ready=ready.put_nowait))
        try:
            running = await asyncio.wait_for(ready.get(), 30)
            async with async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
                try:
                    await scenario(running, browser)
                finally:
                    await browser.close()
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(server, 20)

    asyncio.run(main())
