"""Fixtures of the gatewayctl tests: one running fleet (fleet.serve with the Mosquitto it
starts, SQLite) for the module, an organisation with a technician's API token, and helpers to
run the gatewayctl CLI in-process and the firmware from a built image."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fleet import admin
from fleet.mqtt.broker import find_mosquitto
from fleet.serve import Running, ServeOptions, serve
from gatewayctl.cli import main as gatewayctl

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@pytest.fixture(scope="session", autouse=True)
def compile_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One cache of compiled firmware for the session, never the user's own."""
    old = os.environ.get("GATEWAYCTL_CACHE")
    os.environ["GATEWAYCTL_CACHE"] = str(tmp_path_factory.mktemp("gatewayctl-cache"))
    yield
    if old is None:
        os.environ.pop("GATEWAYCTL_CACHE", None)
    else:
        os.environ["GATEWAYCTL_CACHE"] = old


@dataclass
class Fleet:
    running: Running
    api_token: str
    tech_token: str

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.running.http_port}"

    @property
    def mqtt_url(self) -> str:
        return f"mqtt://127.0.0.1:{self.running.mqtt_port}"


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    if find_mosquitto() is None:
        pytest.skip(reason="mosquitto is not installed: skipped on a user's machine only, CI fails")
    opts = ServeOptions(
        data_dir=tmp_path_factory.mktemp("fleet"), broker="mosquitto", mqtt_port=0,
        mqtt_bind="127.0.0.1", http_host="127.0.0.1", http_port=0,
    )  # fmt: skip
    loop = asyncio.new_event_loop()
    stop = asyncio.Event()
    ready: list[Running] = []
    started = threading.Event()

    def on_ready(r: Running) -> None:
        ready.append(r)
        started.set()

    async def run() -> None:
        try:
            await serve(opts, stop, on_ready=on_ready)
        finally:
            started.set()

    thread = threading.Thread(target=loop.run_until_complete, args=(run(),), daemon=True)
    thread.start()
    assert started.wait(30) and ready, "the fleet did not start"
    engine = ready[0].engine
    admin.create_org(engine, "musterstadt", "Stadt Musterstadt")
    admin.create_user(engine, "it@musterstadt.example", "long-password-1", "musterstadt", "admin")
    admin.create_user(engine, "tech@musterstadt.example", "long-password-2", "musterstadt",
                      "technician")  # fmt: skip
    api_token = admin.create_token(engine, "it@musterstadt.example", "musterstadt", "tests")
    tech = admin.create_token(engine, "tech@musterstadt.example", "musterstadt", "gatewayctl")
    try:
        yield Fleet(ready[0], api_token, tech)
    finally:
        loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def run_cli(*argv: str, runner: Any = None) -> tuple[int, str, str]:
    """gatewayctl in-process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = gatewayctl(list(argv), runner=runner)
    return code, out.getvalue(), err.getvalue()


def cli_json(*argv: str) -> dict[str, Any]:
    code, out, err = run_cli(*argv, "--json")
    assert code == 0, err
    return dict(json.loads(out))


def micropython_env() -> dict[str, str]:
    return dict(os.environ, MICROPYPATH=f"{ROOT}:.frozen")
