"""`python -m fleet.ui.screenshots DIR`: start a fleet (temporary data directory, SQLite, the
embedded broker) with sample data and simulated gateways, and render the UI's main pages to
PNG files in DIR with Debian's chromium (`make screenshots`). For the docs; not a test."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import tempfile
from pathlib import Path

from fleet import rollouts
from fleet.api.queries import get_gateway
from fleet.db.engine import transaction
from fleet.db.registry import now_ms
from fleet.serve import Running, ServeOptions, serve
from fleet.ui.sample import PASSWORD, SimGateway, make_sample

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]  # fmt: skip
GATEWAYS = ("schule-nord-1", "rathaus-1", "hallenbad-1", "bauhof-1")
EN_PAGES = ("overview", "gateways", "meter", "config", "energy", "energy-site")


async def _shoot(running: Running, out: Path, width: int, height: int) -> list[Path]:
    from playwright.async_api import async_playwright

    base = f"http://127.0.0.1:{running.http_port}"
    sample = await asyncio.to_thread(make_sample, running.engine, GATEWAYS, True)
    sims = [SimGateway(gw, running.mqtt_port) for gw in sample.gateways[:3]]  # one stays offline
    written: list[Path] = []
    try:
        await asyncio.gather(*(s.start() for s in sims))
        for s in sims:
            await s.send_history(minutes=6 * 60, step_s=120)
        with transaction(running.engine) as conn:
            org_id = sample_org_id(conn, sample.org_slug)
            rid = rollouts.create(conn, org_id,
                                  {"uplink": {"batch_interval_s": 60}}, now_ms(),
                                  name="Sendeintervall 60 s", batch_share=0.5)  # fmt: skip
            site_id = get_gateway(conn, org_id, sample.gateways[0].id)["site_id"]  # type: ignore[index]
        await asyncio.sleep(1.5)
        async with async_playwright() as pw:
            browser = await pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            for lang in ("de", "en"):
                context = await browser.new_context(viewport={"width": width, "height": height})
                await context.add_cookies([{"name": "fleet_lang", "value": lang, "url": base}])
                page = await context.new_page()
                await page.goto(base + "/ui/login")
                await _save(page, out / f"{lang}-login.png", written)
                await page.locator("#organisation").fill(sample.org_slug)
                await page.locator("#email").fill(sample.admin_email)
                await page.locator("#password").fill(PASSWORD)
                await page.locator("button[type=submit].primary").click()
                await page.wait_for_url(base + "/ui/")
                gw = sample.gateways[0].id
                pages = {
                    "overview": "/ui/", "gateways": "/ui/gateways", "gateway": f"/ui/gateways/{gw}",
                    "meter": f"/ui/gateways/{gw}/devices/1", "config": f"/ui/gateways/{gw}/config",
                    "provisioning": "/ui/provisioning", "rollouts": "/ui/rollouts",
                    "rollout": f"/ui/rollouts/{rid}", "alerts": "/ui/alerts", "users": "/ui/users",
                    "tokens": "/ui/tokens", "audit": "/ui/audit", "energy": "/ui/energy",
                    "energy-site": f"/ui/energy/sites/{site_id}",
                    "energy-factors": "/ui/energy/factors",
                }  # fmt: skip
                for name, path in pages.items():
                    if lang == "en" and name not in EN_PAGES:
                        continue
                    await page.goto(base + path)
                    await page.wait_for_timeout(300)  # a live update or two
                    await _save(page, out / f"{lang}-{name}.png", written)
                if lang == "de":
                    await page.goto(f"{base}/ui/gateways/{gw}/config")
                    await page.locator('[data-path="meters[0].unit"] input').fill("300")
                    await page.locator('button[value="save"]').click()
                    await _save(page, out / "de-config-error.png", written)
                    await page.goto(base + "/ui/provisioning")
                    await page.locator("#c-count").fill("2")
                    await page.locator("#c-label").fill("Kita Sonnenschein")
                    await page.locator("form[action='/ui/provisioning/claims'] button").click()
                    await _save(page, out / "de-claim-labels.png", written)
                await context.close()
            await browser.close()
    finally:
        for s in sims:
            await s.stop()
    return written


def sample_org_id(conn: object, slug: str) -> int:
    from fleet.db.registry import get_org_by_slug

    return int(get_org_by_slug(conn, slug)["id"])  # type: ignore[arg-type, index]


async def _save(page: object, path: Path, written: list[Path]) -> None:
    await page.screenshot(path=str(path), full_page=True)  # type: ignore[attr-defined]
    written.append(path)
    print(path, flush=True)


async def run(out: Path, width: int, height: int) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="fleet-screenshots-") as tmp:
        opts = ServeOptions(data_dir=Path(tmp), mqtt_port=0, mqtt_bind="127.0.0.1",
                            http_host="127.0.0.1", http_port=0, rollout_tick_s=0.5)  # fmt: skip
        ready: asyncio.Queue[Running] = asyncio.Queue()
        stop = asyncio.Event()
        server = asyncio.create_task(serve(opts, stop, on_ready=ready.put_nowait))
        try:
            running = await asyncio.wait_for(ready.get(), 60)
            return await _shoot(running, out, width, height)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(server, 20)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m fleet.ui.screenshots",
        description="Render the web UI's main pages (German and English) to PNG files, from a "
        "temporary fleet with sample data and simulated gateways. Needs /usr/bin/chromium.",
    )
    parser.add_argument("out", type=Path, help="folder for the PNG files (e.g. docs/screenshots)")
    parser.add_argument("--width", type=int, default=1280, help="viewport width (tablet: 1024)")
    parser.add_argument("--height", type=int, default=900, help="viewport height")
    args = parser.parse_args(argv)
    if not Path(CHROMIUM).exists():
        print(f"error: {CHROMIUM} not found: apt-get install chromium", file=sys.stderr)
        return 2
    written = asyncio.run(run(args.out, args.width, args.height))
    print(f"{len(written)} screenshots in {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
