"""The MQTT uplink against a real Mosquitto and a receiver that plays the fleet: delivery
exactly once through broker and fleet outages, backlog order and flags, birth and last will,
TLS with password or client certificate, config and status messages."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from edge.store import Store
from edge.testing import AckReceiver, Mosquitto
from edge.uplink import MqttSettings, Uplink, UplinkSettings
from protocols import messages

GW = "gw-test"
FAST = UplinkSettings(
    batch_max_readings=200,
    history_batch_max_readings=200,
    send_interval_s=0.05,
    window_batches=4,
    history_readings_per_s=0,
    ack_timeout_s=0.5,
    reconnect_min_s=0.05,
    reconnect_max_s=0.3,
    timeout_s=3,
)


def run(coro: Coroutine[Any, Any, None], timeout_s: float = 60) -> None:
    """Run a scenario; if it hangs, show where every task waits, then fail."""

    async def guarded() -> None:
        task = asyncio.create_task(coro)
        done, _ = await asyncio.wait([task], timeout=timeout_s)
        if not done:
            for t in asyncio.all_tasks():
                t.print_stack(file=sys.stderr)
            task.cancel()
            await asyncio.wait([task], timeout=10)
            pytest.fail(f"scenario did not finish within {timeout_s} s")
        task.result()

    asyncio.run(guarded())


def plain(broker: Mosquitto) -> MqttSettings:
    return MqttSettings("127.0.0.1", broker.port, tls=False, keepalive_s=5)


@contextlib.asynccontextmanager
async def running(uplink: Uplink) -> Any:
    task = asyncio.create_task(uplink.run())
    try:
        yield uplink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


class Producer:
    """Appends one 10-reading poll every period_s, each reading unique: (channel, ts_ms)."""

    def __init__(self, store: Store, period_s: float = 0.02) -> None:
        self.store = store
        self.period_s = period_s
        self.sent: list[tuple[int, int, float]] = []
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            ts = int(time.time() * 1000)
            if self.sent and ts <= self.sent[-1][1]:
                ts = self.sent[-1][1] + 1
            poll = [(1 << 8 | q, ts, 230.0 + q / 10) for q in range(1, 11)]
            self.store.append(poll)
            self.sent.extend(poll)
            await asyncio.sleep(self.period_s)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def assert_exactly_once(rx: AckReceiver, sent: list[tuple[int, int, float]]) -> None:
    got = rx.readings(GW)
    keys = [(c, t) for c, t, _ in got]
    assert len(keys) == len(set(keys)), "a reading was stored twice"
    assert sorted(got) == sorted(sent)
    assert rx.conflicts == 0, "a seq was resent with other content"


async def drained(store: Store, rx: AckReceiver, timeout_s: float) -> bool:
    return await rx.wait_for(lambda: store.depth == 0, timeout_s)


def test_readings_arrive_are_acknowledged_and_leave_the_buffer(
    tmp_path: Path, mosquitto: Mosquitto, fleet_receiver: Callable[..., Any]
) -> None:
    store = Store(tmp_path / "b.db")
    boot = store.increment_boot()
    now = int(time.time() * 1000)
    sent = [(1 << 8 | 1, now - 500 + i, 230.0 + i / 10) for i in range(500)]
    store.append(sent)

    async def scenario() -> None:
        async with fleet_receiver(mosquitto) as rx:
            up = Uplink(store, GW, plain(mosquitto), FAST, boot=boot, fw_version="0.1.0")
            async with running(up):
                assert await drained(store, rx, 20)
            assert_exactly_once(rx, sent)
            assert up.counters.acked_readings == 500
            assert up.counters.acked_batches == len(rx.batches) == 3  # 200 + 200 + 100
            assert all(not a.historical for a in rx.arrivals)
            assert store.status().last_ack_seq == 3
            births = [s for s in rx.states if s["online"]]
            assert births and births[0]["boot"] == boot and births[0]["gateway"] == GW
            # a clean shutdown says offline itself, with the same boot and session
            assert await rx.wait_for(lambda: not rx.states[-1]["online"], 5)
            assert (rx.states[-1]["boot"], rx.states[-1]["session"]) == (
                births[-1]["boot"],
                births[-1]["session"],
            )

    run(scenario())


def test_broker_killed_and_restarted_everything_arrives_exactly_once(
    tmp_path: Path, mosquitto: Mosquitto, fleet_receiver: Callable[..., Any]
) -> None:
    store = Store(tmp_path / "b.db")

    async def scenario() -> None:
        async with fleet_receiver(mosquitto) as rx:
            up = Uplink(store, GW, plain(mosquitto), FAST, boot=1, fw_version="0.1.0")
            producer = Producer(store)
            async with running(up):
                producer.start()
                await asyncio.sleep(0.5)
                for _ in range(2):
                    mosquitto.stop(kill=True)
                    await asyncio.sleep(0.7)
                    mosquitto.start()
                    await asyncio.sleep(0.7)
                await producer.stop()
                assert await drained(store, rx, 20)
            assert up.counters.connections >= 3
            assert_exactly_once(rx, producer.sent)
            assert len(producer.sent) > 500

    run(scenario())


def test_fleet_down_then_back_backlog_drains_in_order_as_history_while_live_flows(
    tmp_path: Path, mosquitto: Mosquitto, fleet_receiver: Callable[..., Any]
) -> None:
    store = Store(tmp_path / "b.db", live_window_s=0.5)
    settings = UplinkSettings(
        batch_max_readings=200,
        history_batch_max_readings=100,
        send_interval_s=0.05,
        window_batches=3,
        history_readings_per_s=1500,  # faster than the 500 readings/s produced
        ack_timeout_s=0.4,
        reconnect_min_s=0.05,
        reconnect_max_s=0.3,
        timeout_s=3,
    )

    async def scenario() -> None:
        async with fleet_receiver(mosquitto) as rx:
            up = Uplink(store, GW, plain(mosquitto), settings, boot=1, fw_version="0.1.0")
            producer = Producer(store)
            async with running(up):
                producer.start()
                await asyncio.sleep(0.5)
                rx.pause()
                await asyncio.sleep(2.0)
                assert store.depth > 500  # nothing left the buffer without an ack
                outage_end = len(rx.arrivals)
                rx.resume()
                await asyncio.sleep(2.0)
                await producer.stop()
                assert await drained(store, rx, 20)
            assert_exactly_once(rx, producer.sent)
            after = [a for a in rx.arrivals[outage_end:] if a.stored]
            hist = [a for a in after if a.historical]
            assert sum(a.readings for a in hist) > 500
            # the backlog went out oldest first
            hist_ts = [r[1] for a in hist for r in rx.batches[(GW, a.seq)].readings]
            first_ts = [min(r[1] for r in rx.batches[(GW, a.seq)].readings) for a in hist]
            assert first_ts == sorted(first_ts) and min(hist_ts) == first_ts[0]
            # live data kept flowing while the backlog drained
            last_hist = max(i for i, a in enumerate(after) if a.historical)
            assert any(not a.historical for a in after[:last_hist])
            assert up.counters.resent_batches > 0

    run(scenario())


_GATEWAY = textwrap.dedent(
    """
    import asyncio, sys
    from edge.store import Store
    from edge.uplink import MqttSettings, Uplink, UplinkSettings
    store = Store(sys.argv[1])
    boot = store.increment_boot()
    mqtt = MqttSettings("127.0.0.1", int(sys.argv[2]), tls=False, keepalive_s=5)
    up = Uplink(store, "gw-test", mqtt, UplinkSettings(reconnect_min_s=0.1), boot=boot,
                fw_version="0.1.0")
    asyncio.run(up.run())
    """
)


def test_last_will_says_offline_with_the_boot_counter_when_the_agent_is_killed(
    tmp_path: Path, mosquitto: Mosquitto, fleet_receiver: Callable[..., Any]
) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parents[2]))

    async def scenario() -> None:
        async with fleet_receiver(mosquitto) as rx:
            for boot in (1, 2):
                proc = subprocess.Popen(
                    [sys.executable, "-c", _GATEWAY, str(tmp_path / "b.db"), str(mosquitto.port)],
                    env=env,
                )
                try:
                    assert await rx.wait_for(
                        lambda b=boot: any(s["online"] and s["boot"] == b for s in rx.states), 15
                    )
                finally:
                    os.kill(proc.pid, signal.SIGKILL)
                    proc.wait(timeout=10)
                assert await rx.wait_for(lambda: not rx.states[-1]["online"], 10)
                will, birth = rx.states[-1], rx.states[-2]
                assert (will["boot"], will["session"]) == (boot, birth["session"])
                assert messages.state_supersedes(will, birth)

    run(scenario())


def _tls_broker(tmp_path: Path, tls: Any, extra_listener: str = "") -> Mosquitto:
    passwd = tmp_path / "passwd"
    passwd.write_text("")
    subprocess.run(
        ["mosquitto_passwd", "-b", str(passwd), GW, "s3cret"], check=True, capture_output=True
    )
    broker = Mosquitto(
        tmp_path / "tls-broker",
        extra_config=f"allow_anonymous false\npassword_file {passwd}\n",
        listener_options=(
            f"cafile {tls.ca}\ncertfile {tls.server_cert}\nkeyfile {tls.server_key}\n"
            + extra_listener
        ),
    )
    broker.start()
    return broker


async def _deliver_once(store: Store, settings: MqttSettings, rx: AckReceiver) -> Uplink:
    store.append([(1 << 8 | 1, int(time.time() * 1000), 230.0)])
    up = Uplink(store, GW, settings, FAST, boot=1, fw_version="0.1.0")
    async with running(up):
        assert await drained(store, rx, 15)
    return up


def test_tls_with_password(
    tmp_path: Path, tls_files: Any, fleet_receiver: Callable[..., Any]
) -> None:
    if not any(
        os.access(os.path.join(p, "mosquitto_passwd"), os.X_OK)
        for p in os.environ["PATH"].split(":")
    ):
        pytest.skip(
            reason="mosquitto_passwd is not installed (it comes with the mosquitto package): skipped on a user's machine only, CI fails"
        )
    broker = _tls_broker(tmp_path, tls_files)
    store = Store(tmp_path / "b.db")
    good = MqttSettings(
        "127.0.0.1",
        broker.port,
        ca_file=str(tls_files.ca),
        username=GW,
        password="s3cret",
        keepalive_s=5,
    )
    bad = MqttSettings(
        "127.0.0.1", broker.port, ca_file=str(tls_files.ca), username=GW, password="wrong"
    )
    ctx = good.tls_context()

    async def scenario() -> None:
        async with fleet_receiver(broker, username=GW, password="s3cret", tls_context=ctx) as rx:
            up = await _deliver_once(store, good, rx)
            assert up.counters.connections == 1
            refused = Uplink(store, GW, bad, FAST, boot=1, fw_version="0.1.0")
            async with running(refused):
                assert not await refused.wait_connected(1.0)
            assert refused.counters.connections == 0 and refused.counters.reconnects >= 1

    try:
        run(scenario())
    finally:
        broker.stop()


def test_tls_with_client_certificate(
    tmp_path: Path, tls_files: Any, fleet_receiver: Callable[..., Any]
) -> None:
    broker = Mosquitto(
        tmp_path / "tls-broker",
        extra_config="allow_anonymous false\n",
        listener_options=(
            f"cafile {tls_files.ca}\ncertfile {tls_files.server_cert}\n"
            f"keyfile {tls_files.server_key}\n"
            "require_certificate true\nuse_identity_as_username true\n"
        ),
    )
    broker.start()
    settings = MqttSettings(
        "127.0.0.1",
        broker.port,
        ca_file=str(tls_files.ca),
        cert_file=str(tls_files.client_cert),
        key_file=str(tls_files.client_key),
        keepalive_s=5,
    )
    store = Store(tmp_path / "b.db")

    async def scenario() -> None:
        ctx = settings.tls_context()
        async with fleet_receiver(broker, tls_context=ctx) as rx:
            await _deliver_once(store, settings, rx)
        # without the client certificate the broker refuses the TLS handshake
        no_cert = MqttSettings("127.0.0.1", broker.port, ca_file=str(tls_files.ca))
        refused = Uplink(store, GW, no_cert, FAST, boot=1, fw_version="0.1.0")
        async with running(refused):
            assert not await refused.wait_connected(1.0)

    try:
        run(scenario())
    finally:
        broker.stop()


def test_tls_settings_name_the_file_that_cannot_be_loaded(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.crt")
    with pytest.raises(ValueError, match="nope.crt"):
        MqttSettings("h", ca_file=missing).tls_context()
    with pytest.raises(ValueError, match="both cert_file and key_file"):
        MqttSettings("h", cert_file=missing).tls_context()


async def _listen(
    broker: Mosquitto, topic: str, got: list[tuple[str, bytes, bool]]
) -> Callable[[], Awaitable[None]]:
    ready = asyncio.Event()

    async def listen() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port, identifier="observer") as c:
            await c.subscribe(topic, qos=1)
            ready.set()
            async for m in c.messages:
                got.append((m.topic.value, bytes(m.payload), m.retain))

    task = asyncio.create_task(listen())
    async with asyncio.timeout(5):
        await ready.wait()

    async def stop() -> None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    return stop


async def _until(cond: Callable[[], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True


def test_config_desired_reaches_the_callback_and_reports_are_published(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    store = Store(tmp_path / "b.db")
    desired: list[bytes] = []

    async def scenario() -> None:
        got: list[tuple[str, bytes, bool]] = []
        stop = await _listen(mosquitto, f"gw/{GW}/#", got)
        up = Uplink(
            store, GW, plain(mosquitto), FAST, boot=1, fw_version="0.1.0", on_config=desired.append
        )
        # reported while offline: kept and published on connect
        assert not await up.report_config(3, 4, messages.REPORT_REJECTED, "unknown profile xyz")
        async with running(up):
            assert await up.wait_connected(5)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="fleet") as fleet:
                await fleet.publish(f"gw/{GW}/config/desired", b'{"envelope": 1}', qos=1)
            assert await _until(lambda: desired == [b'{"envelope": 1}'], 5)
            status = {
                "gateway": GW,
                "boot": 1,
                "ts_ms": 1_750_000_000_000,
                "uptime_s": 5,
                "fw_version": "0.1.0",
                "config_version": 3,
                "free_heap_bytes": None,
                "buffer_depth": 0,
                "oldest_unsent_ts_ms": None,
                "dropped_readings": 0,
                "rssi_dbm": None,
                "reset_cause": None,
                "meters": [],
            }
            assert await up.publish_status(status)
            assert await _until(lambda: any(t.endswith("/status") for t, _, _ in got), 5)
        await stop()
        reports = [messages.decode_reported(p) for t, p, _ in got if t.endswith("config/reported")]
        assert [(r["version"], r["desired_version"], r["status"]) for r in reports] == [
            (3, 4, "rejected")
        ]
        births = [messages.decode_state(p) for t, p, _ in got if t.endswith("/state")]
        assert births[0]["config_version"] == 3

    run(scenario())


def test_an_ack_with_an_error_deletes_the_refused_batch(
    tmp_path: Path, mosquitto: Mosquitto
) -> None:
    store = Store(tmp_path / "b.db")
    store.append([(1 << 8 | 1, int(time.time() * 1000), 230.0)])

    async def scenario() -> None:
        up = Uplink(store, GW, plain(mosquitto), FAST, boot=1, fw_version="0.1.0")
        async with running(up):
            assert await up.wait_connected(5)
            assert await _until(lambda: up.counters.sent_batches == 1, 5)
            async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="fleet") as fleet:
                await fleet.publish(f"gw/{GW}/ack", b"not json", qos=1)
                await fleet.publish(
                    f"gw/{GW}/ack", messages.encode_ack(1, "device 1 is not registered"), qos=1
                )
            assert await _until(lambda: store.depth == 0, 5)
        assert up.counters.refused_batches == 1 and up.counters.bad_messages == 1
        assert store.dropped_readings == 1  # counted, and kept aside for a technician
        [(seq, _, reason, readings)] = store.refused_batches()
        assert (seq, reason, len(readings)) == (1, "device 1 is not registered", 1)

    run(scenario())


def test_a_late_will_of_an_earlier_session_is_answered_with_a_new_birth(
    tmp_path: Path, mosquitto: Mosquitto, fleet_receiver: Callable[..., Any]
) -> None:
    store = Store(tmp_path / "b.db")

    async def scenario() -> None:
        async with fleet_receiver(mosquitto) as rx:
            up = Uplink(store, GW, plain(mosquitto), FAST, boot=7, fw_version="0.1.0")
            up.session = 4  # this boot already had connections; the next one is session 5
            async with running(up):
                assert await up.wait_connected(5)
                late_will = messages.encode_will(GW, 7, 4, "0.1.0", 0, 1_750_000_000_000)
                async with aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="b") as c:
                    await c.publish(f"gw/{GW}/state", late_will, qos=1, retain=True)
                assert await rx.wait_for(lambda: len(rx.states) >= 3 and rx.states[-1]["online"], 5)
                assert (rx.states[-1]["boot"], rx.states[-1]["session"]) == (7, 5)

    run(scenario())
