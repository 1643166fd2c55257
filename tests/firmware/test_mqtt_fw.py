"""The firmware's MQTT client (firmware/mqtt.py, compiled, 96 KB heap) against a real Mosquitto:
QoS 1 publish and subscribe both ways, a payload larger than the socket buffer arrives intact,
the last will is published when the gateway process is killed, keepalive notices a dead
broker, and bad credentials give a refusal that names them."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import aiomqtt
import pytest
from mpy_build import HEAP, compile_tree, tool

from edge.testing import Mosquitto, find_mosquitto

TLS_PROBE = r"""
import sys, json, asyncio
from firmware.app import _tls
from firmware.mqtt import MQTTClient

async def main():
    # More than one TLS record (16 KB), made before the handshake fragments the heap: a
    # block this size is the probe's own need, not the firmware's (its batches are a few KB).
    big = b"z" * 20000
    c = MQTTClient("fw-tls", "127.0.0.1", int(sys.argv[1]), timeout_s=5,
                   ssl=_tls({"tls": True, "ca_file": sys.argv[2]}))
    try:
        await c.connect()
        await c.subscribe("t")
        await c.publish("t", big)
        print(json.dumps({"ok": c.isconnected()}))
        await c.disconnect()
    except Exception as e:
        print(json.dumps({"error": "%s: %s" % (type(e).__name__, e)}))

asyncio.run(main())
"""

PROBE = r"""
import sys, json, asyncio
from firmware.mqtt import MQTTClient, MQTTError, ConnectRefused

port = int(sys.argv[1])
mode = sys.argv[2]
got = []

def on_msg(topic, payload, retained):
    got.append([topic.decode(), bytes(payload).decode()])

def say(**kw):
    print(json.dumps(kw))

async def main():
    c = MQTTClient("fw-probe", "127.0.0.1", port, keepalive_s=1, timeout_s=3,
                   on_message=on_msg, user=(sys.argv[3] if len(sys.argv) > 3 else None),
                   password="wrong")
    c.set_will("gw/fw-probe/state", b"offline", retain=True, qos=1)
    try:
        await c.connect()
    except ConnectRefused as e:
        say(refused=str(e))
        return
    await c.subscribe("to-fw/#")
    big = bytearray(i % 251 for i in range(40000))
    await c.publish("from-fw/big", memoryview(big), qos=1)
    for i in range(20):
        await c.publish("from-fw/n", b"%d" % i, qos=1)
    say(ready=True)
    if mode == "echo":
        for _ in range(100):
            if len(got) >= 3:
                break
            await asyncio.sleep_ms(50)
        say(got=got)
        await c.disconnect()
    elif mode == "hang":
        for _ in range(200):
            if not c.isconnected():
                break
            await asyncio.sleep_ms(50)
        say(connected=c.isconnected(), error=c.error)

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = compile_tree(tmp_path_factory.mktemp("fw"))
    (out / "mqtt_probe.py").write_text(PROBE)
    (out / "tls_probe.py").write_text(TLS_PROBE)
    return out


def _start(tree: Path, *args: str, script: str = "mqtt_probe.py") -> subprocess.Popen[str]:
    env = dict(os.environ, MICROPYPATH=f"{tree}:.frozen")
    return subprocess.Popen(
        [tool("micropython"), "-X", f"heapsize={HEAP}", script, *args],
        cwd=str(tree),
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )


async def _line(proc: subprocess.Popen[str], timeout_s: float = 10) -> dict:
    assert proc.stdout is not None
    line = await asyncio.wait_for(asyncio.to_thread(proc.stdout.readline), timeout_s)
    assert line, proc.stderr.read() if proc.stderr else "no output"
    return json.loads(line)  # type: ignore[no-any-return]


def _sync(fn):  # type: ignore[no-untyped-def]
    """Run an async test body on a fresh event loop (no pytest-asyncio here)."""

    @functools.wraps(fn)
    def run(*args, **kwargs):  # type: ignore[no-untyped-def]
        return asyncio.run(fn(*args, **kwargs))

    return run


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=5)


@_sync
async def test_qos1_both_ways_and_large_payload_intact(tree: Path, broker: Mosquitto) -> None:
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="observer") as obs:
        await obs.subscribe("from-fw/#", qos=1)
        proc = _start(tree, str(broker.port), "echo")
        try:
            assert await _line(proc) == {"ready": True}
            for i in range(3):
                await obs.publish(f"to-fw/{i}", f"hello {i}".encode(), qos=1)
            got = await _line(proc)
        finally:
            _reap(proc)
        received = []
        async with asyncio.timeout(5):
            async for msg in obs.messages:
                received.append((msg.topic.value, bytes(msg.payload)))  # type: ignore[arg-type]
                if len(received) == 21:
                    break
    assert got == {"got": [[f"to-fw/{i}", f"hello {i}"] for i in range(3)]}
    assert received[0] == ("from-fw/big", bytes(i % 251 for i in range(40000)))
    assert [p for _, p in received[1:]] == [b"%d" % i for i in range(20)]


@_sync
async def test_last_will_is_published_when_the_process_is_killed(
    tree: Path, broker: Mosquitto
) -> None:
    proc = _start(tree, str(broker.port), "hang")
    try:
        assert await _line(proc) == {"ready": True}
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="observer") as obs:
            await obs.subscribe("gw/fw-probe/state", qos=1)
            proc.send_signal(signal.SIGKILL)
            async with asyncio.timeout(10):
                async for msg in obs.messages:
                    assert msg.payload == b"offline"
                    assert msg.retain is False or msg.retain is True
                    break
    finally:
        _reap(proc)


@_sync
async def test_keepalive_notices_a_dead_broker(tree: Path, broker: Mosquitto) -> None:
    proc = _start(tree, str(broker.port), "hang")
    try:
        assert await _line(proc) == {"ready": True}
        # SIGSTOP: the TCP connection stays open but nothing answers (a hung broker or a
        # silently dropped link); only keepalive can notice it.
        assert broker.proc is not None
        broker.proc.send_signal(signal.SIGSTOP)
        try:
            out = await _line(proc, timeout_s=15)
        finally:
            broker.proc.send_signal(signal.SIGCONT)
    finally:
        _reap(proc)
    assert out["connected"] is False
    assert "keepalive" in out["error"] or "PINGRESP" in out["error"] or "no data" in out["error"]


@_sync
async def test_bad_credentials_are_refused_with_a_clear_message(tmp_path: Path, tree: Path) -> None:
    if find_mosquitto() is None:
        pytest.skip(reason="mosquitto is not installed: skipped on a user's machine only, CI fails")
    pwfile = tmp_path / "passwd"
    pwfile.write_text("")
    with Mosquitto(
        tmp_path / "b2", extra_config=f"allow_anonymous false\npassword_file {pwfile}\n"
    ) as b:
        proc = _start(tree, str(b.port), "echo", "someone")
        try:
            out = await _line(proc)
        finally:
            _reap(proc)
    assert "refused" in out["refused"]
    assert "credentials" in out["refused"] or "user name" in out["refused"]


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


@_sync
async def test_tls_with_a_verified_broker_and_refusal_of_a_foreign_ca(
    tmp_path: Path, tree: Path
) -> None:
    if find_mosquitto() is None or shutil.which("openssl") is None:
        pytest.skip(
            reason="mosquitto or openssl missing: skipped on a user's machine only, CI fails"
        )
    ec = ("-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes")
    for ca in ("ca", "other"):
        _openssl("req", "-x509", *ec, "-keyout", f"{ca}.key", "-out", f"{ca}.crt",
                 "-days", "2", "-subj", f"/CN={ca}", cwd=tmp_path)  # fmt: skip
    (tmp_path / "srv.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", *ec, "-keyout", "srv.key", "-out", "srv.csr", "-subj", "/CN=localhost",
             cwd=tmp_path)  # fmt: skip
    _openssl("x509", "-req", "-in", "srv.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "srv.crt", "-days", "2", "-extfile", "srv.ext",
             cwd=tmp_path)  # fmt: skip
    opts = f"cafile {tmp_path}/ca.crt\ncertfile {tmp_path}/srv.crt\nkeyfile {tmp_path}/srv.key\n"
    with Mosquitto(tmp_path / "b", listener_options=opts) as b:
        results = []
        for ca in ("ca.crt", "other.crt"):
            proc = _start(tree, str(b.port), str(tmp_path / ca), script="tls_probe.py")
            try:
                results.append(await _line(proc, timeout_s=20))
            finally:
                _reap(proc)
    assert results[0] == {"ok": True}
    assert results[1]["error"].startswith("MQTTError: ")
    assert "TLS handshake failed" in results[1]["error"] and "ca_file" in results[1]["error"]
