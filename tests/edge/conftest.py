"""Fixtures for the agent's tests: a private Mosquitto (start, kill, restart on a free port),
an acknowledging receiver that plays the fleet, and TLS material made with openssl."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from edge.testing import AckReceiver, Mosquitto, find_mosquitto


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """A Mosquitto of this test alone, anonymous, plain TCP on 127.0.0.1."""
    if find_mosquitto() is None:
        pytest.skip(
            reason="mosquitto is not installed (apt-get install mosquitto): skipped on a user's machine only, CI fails"
        )
    broker = Mosquitto(tmp_path / "broker")
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


ReceiverFactory = Callable[..., contextlib.AbstractAsyncContextManager[AckReceiver]]


@pytest.fixture
def fleet_receiver() -> ReceiverFactory:
    """``async with fleet_receiver(broker) as rx:`` runs an AckReceiver for the block."""

    @contextlib.asynccontextmanager
    async def running(broker: Mosquitto, **kwargs: Any) -> AsyncIterator[AckReceiver]:
        rx = AckReceiver("127.0.0.1", broker.port, **kwargs)
        task = asyncio.create_task(rx.run())
        try:
            async with asyncio.timeout(10):
                await rx.connected.wait()
            yield rx
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return running


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA, a server certificate for 127.0.0.1/localhost and a client
    certificate (CN gw-test), all signed by that CA."""
    if shutil.which("openssl") is None:
        pytest.skip(reason="openssl is not installed: skipped on a user's machine only, CI fails")
    d = tmp_path_factory.mktemp("tls")
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    _openssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2",
             "-subj", "/CN=test-ca", cwd=d)  # fmt: skip
    (d / "server.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for name, cn in (("server", "localhost"), ("client", "gw-test")):
        _openssl("req", *ec, "-keyout", f"{name}.key", "-out", f"{name}.csr",
                 "-subj", f"/CN={cn}", cwd=d)  # fmt: skip
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
                 "-CAcreateserial", "-out", f"{name}.crt", "-days", "2",
                 "-extfile", f"{name}.ext", cwd=d)  # fmt: skip
    return TlsFiles(
        d / "ca.crt", d / "server.crt", d / "server.key", d / "client.crt", d / "client.key"
    )
