"""Edge agent benchmark: how fast the store-and-forward buffer commits readings, how fast a
backlog drains end to end (store -> codec -> MQTT -> acknowledging receiver -> ack -> delete)
through a local Mosquitto, the CPU it costs, and a ThingsBoard-style baseline over the same
broker. Run from the repository root: `python -m bench.edge [--quick] [--json]`.

- buffer: `Store.append` of one poll (20 readings) per transaction, synchronous=FULL (the
  default: durable on power loss) and NORMAL (durable on a crash only), and bulk transactions
  of 10,000 readings. `buffer_readings_per_s` is the realistic one: FULL, 20 per transaction.
- drain: 1,000,000 readings (100,000 with --quick, times scaled to 1M) of 10 meters x 20
  quantities, buffered as backlog, then sent by `Uplink` with the backlog rate unlimited,
  batches of 10,000, 8 in flight, to `python -m edge.testing receive` (a subprocess that
  decodes, stores in memory and acks each batch). `drain_1m_s` is the time until the last ack
  deleted the last reading. CPU seconds per 1,000 readings are the gateway process's own
  (the receiver's and the broker's are reported beside it).
- baseline: what ThingsBoard's IoT gateway sends: one JSON message per poll on
  `v1/gateway/telemetry`, `{"<device>": [{"ts": ..., "values": {name: value, ...}}]}`, QoS 1
  with paho's default 20 messages in flight, until a subscriber got them all. It reads from a
  list in memory and waits for no application ack, both in its favour.
It measures; it changes no settings and leaves no processes or files behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion

from bench._common import emit, parse_args, print_table, table_stream
from edge.store import Store
from edge.testing import Mosquitto
from edge.uplink import MqttSettings, Uplink, UplinkSettings
from protocols import quantities

GATEWAY = "bench-gw"
DEVICES = 10
NAMES = (
    "voltage_l1", "voltage_l2", "voltage_l3", "current_l1", "current_l2", "current_l3",
    "power_l1", "power_l2", "power_l3", "power_total", "reactive_power_total",
    "apparent_power_total", "power_factor_l1", "power_factor_l2", "power_factor_l3",
    "power_factor_total", "frequency", "energy_import", "energy_export", "power_demand_total",
)  # fmt: skip
POLL_INTERVAL_MS = 10_000
DRAIN_SETTINGS = UplinkSettings(
    history_batch_max_readings=10_000,
    send_interval_s=0.05,
    window_batches=8,
    history_readings_per_s=0,
    ack_timeout_s=60,
)


def make_polls(rounds: int, start_ms: int, seed: int = 1) -> list[list[tuple[int, int, float]]]:
    """rounds x DEVICES polls of 20 readings, with values that move like a building's meters,
    at the catalogue's resolutions (what a profile decodes)."""
    rnd = random.Random(seed)
    codes = [quantities.code_of(n) for n in NAMES]
    polls = []
    energy = [1_000_000.0] * DEVICES
    for r in range(rounds):
        ts = start_ms + r * POLL_INTERVAL_MS
        for d in range(DEVICES):
            p = 2000 + 1500 * rnd.random()
            energy[d] += p * POLL_INTERVAL_MS / 3_600_000
            v = [round(230 + rnd.gauss(0, 1), 1) for _ in range(3)]
            i = [round(p / 3 / v[k], 3) for k in range(3)]
            values = v + i + [round(p / 3), round(p / 3), round(p / 3), round(p)]
            values += [round(p * 0.2), round(p * 1.02)]
            values += [round(0.95 + rnd.random() * 0.04, 3) for _ in range(4)]
            values += [round(50 + rnd.gauss(0, 0.02), 2), round(energy[d]), 0, round(p)]
            dev = d + 1
            polls.append([(dev << 8 | c, ts, float(x)) for c, x in zip(codes, values, strict=True)])
    return polls


def bench_buffer(tmp: Path, polls: list[list[tuple[int, int, float]]]) -> dict[str, float]:
    out = {}
    for sync in ("FULL", "NORMAL"):
        store = Store(tmp / f"buffer-{sync}.db", synchronous=sync, max_readings=10**8)
        t0 = time.perf_counter()
        for p in polls:
            store.append(p)
        dt = time.perf_counter() - t0
        out[sync] = sum(len(p) for p in polls) / dt
        store.close()
    store = Store(tmp / "buffer-bulk.db", max_readings=10**8)
    flat = [r for p in polls for r in p]
    t0 = time.perf_counter()
    for k in range(0, len(flat), 10_000):
        store.append(flat[k : k + 10_000])
    out["bulk"] = len(flat) / (time.perf_counter() - t0)
    store.close()
    return out


def _receiver(broker: Mosquitto) -> subprocess.Popen[str]:
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    proc = subprocess.Popen(
        [sys.executable, "-m", "edge.testing", "receive", "--port", str(broker.port)],
        stdout=subprocess.PIPE,
        env=env,
        text=True,
    )
    assert proc.stdout is not None
    deadline = time.monotonic() + 20
    for line in proc.stdout:
        if json.loads(line).get("connected"):
            return proc
        if time.monotonic() > deadline:
            break
    proc.kill()
    raise RuntimeError("the acknowledging receiver did not connect to the broker")


def _stop_receiver(proc: subprocess.Popen[str]) -> dict[str, float]:
    proc.terminate()
    out, _ = proc.communicate(timeout=10)
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    return json.loads(lines[-1]) if lines else {}


def bench_drain(
    tmp: Path, broker: Mosquitto, polls: list[list[tuple[int, int, float]]]
) -> dict[str, Any]:
    store = Store(tmp / "drain.db", max_readings=10**8, synchronous="FULL")
    flat = [r for p in polls for r in p]
    for k in range(0, len(flat), 10_000):
        store.append(flat[k : k + 10_000])
    n = store.depth
    rx = _receiver(broker)
    try:
        mqtt = MqttSettings("127.0.0.1", broker.port, tls=False)
        up = Uplink(store, GATEWAY, mqtt, DRAIN_SETTINGS, boot=1, fw_version="bench")
        broker_cpu0 = broker.cpu_s() or 0.0

        async def drain() -> tuple[float, float]:
            task = asyncio.create_task(up.run())
            try:
                t0 = time.perf_counter()
                cpu0 = time.process_time()
                while store.depth:
                    await asyncio.sleep(0.01)
                    if time.perf_counter() - t0 > 600:
                        raise RuntimeError(f"drain stalled with {store.depth} readings left")
                return time.perf_counter() - t0, time.process_time() - cpu0
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

        wall_s, cpu_s = asyncio.run(drain())
        broker_cpu = (broker.cpu_s() or 0.0) - broker_cpu0
    finally:
        rx_stats = _stop_receiver(rx)
    if rx_stats.get("stored_readings") != n:
        raise RuntimeError(f"receiver stored {rx_stats.get('stored_readings')} of {n} readings")
    store.close()
    return {
        "readings": n,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "receiver_cpu_s": rx_stats.get("cpu_s", 0.0),
        "broker_cpu_s": broker_cpu,
        "batches": up.counters.sent_batches,
        "resent": up.counters.resent_batches,
    }


def thingsboard_message(poll: list[tuple[int, int, float]]) -> bytes:
    """ThingsBoard gateway telemetry for one poll of one device."""
    dev = poll[0][0] >> 8
    values = {quantities.name_of(c & 0xFF): v for c, _, v in poll}
    return json.dumps({f"meter-{dev}": [{"ts": poll[0][1], "values": values}]}).encode()


def bench_baseline(broker: Mosquitto, polls: list[list[tuple[int, int, float]]]) -> dict[str, Any]:
    total = len(polls)
    got = 0
    done = threading.Event()
    subscribed = threading.Event()

    def on_message(_c: object, _u: object, _m: object) -> None:
        nonlocal got
        got += 1
        if got == total:
            done.set()

    sub = paho.Client(CallbackAPIVersion.VERSION2, client_id="tb-fleet")
    sub.on_message = on_message
    sub.on_subscribe = lambda *_a: subscribed.set()
    sub.connect("127.0.0.1", broker.port)
    sub.subscribe("v1/gateway/telemetry", qos=1)
    sub.loop_start()
    pub = paho.Client(CallbackAPIVersion.VERSION2, client_id="tb-gateway")
    pub.max_queued_messages_set(0)
    pub.connect("127.0.0.1", broker.port)
    pub.loop_start()
    try:
        if not subscribed.wait(10):
            raise RuntimeError("baseline subscriber did not subscribe")
        t0 = time.perf_counter()
        cpu0 = time.process_time()
        nbytes = 0
        infos = []
        for p in polls:
            msg = thingsboard_message(p)
            nbytes += len(msg)
            infos.append(pub.publish("v1/gateway/telemetry", msg, qos=1))
        for info in infos:
            info.wait_for_publish(timeout=120)
        if not done.wait(600):
            raise RuntimeError(f"baseline: subscriber got {got} of {total} messages")
        wall_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
    finally:
        for c in (pub, sub):
            c.disconnect()
            c.loop_stop()
    readings = sum(len(p) for p in polls)
    return {
        "readings": readings,
        "wall_s": wall_s,
        "cpu_s": cpu_s,
        "bytes_per_reading": nbytes / readings,
    }


def main(argv: list[str] | None = None) -> None:
    args = parse_args("edge agent: buffer, backlog drain, baseline", argv)
    out = table_stream(args)
    n_readings = 100_000 if args.quick else 1_000_000
    rounds = n_readings // (DEVICES * len(NAMES))
    start_ms = int(time.time() * 1000) - rounds * POLL_INTERVAL_MS - 86_400_000
    polls = make_polls(rounds, start_ms)
    buffer_polls = polls[: (2_000 if args.quick else 10_000)]
    scale = 1_000_000 / (rounds * DEVICES * len(NAMES))

    with tempfile.TemporaryDirectory(prefix="bench-edge-") as d:
        tmp = Path(d)
        print(f"buffer: {len(buffer_polls)} polls of 20 readings ...", file=sys.stderr)
        buf = bench_buffer(tmp, buffer_polls)
        with Mosquitto(tmp / "broker") as broker:
            print(f"drain: {n_readings} readings through Mosquitto ...", file=sys.stderr)
            drain = bench_drain(tmp, broker, polls)
            print(f"baseline: {len(polls)} JSON messages ...", file=sys.stderr)
            base = bench_baseline(broker, polls)

    from protocols import codec

    sample = [r for p in polls[:500] for r in p]
    batch_bytes = len(codec.encode_batch(1, sample, True)) / len(sample)
    cpu_per_1k = drain["cpu_s"] / drain["readings"] * 1000
    total_cpu_per_1k = (
        (drain["cpu_s"] + drain["receiver_cpu_s"] + drain["broker_cpu_s"])
        / drain["readings"]
        * 1000
    )
    result = {
        "buffer_readings_per_s": round(buf["FULL"]),
        "buffer_readings_per_s_sync_normal": round(buf["NORMAL"]),
        "buffer_bulk_readings_per_s": round(buf["bulk"]),
        "drain_readings": drain["readings"],
        "drain_1m_s": round(drain["wall_s"] * scale, 2),
        "drain_readings_per_s": round(drain["readings"] / drain["wall_s"]),
        "cpu_s_per_1k_readings": round(cpu_per_1k, 4),
        "cpu_s_per_1k_readings_with_receiver_and_broker": round(total_cpu_per_1k, 4),
        "drain_batches": drain["batches"],
        "drain_resent_batches": drain["resent"],
        "batch_bytes_per_reading": round(batch_bytes, 2),
        "baseline_drain_1m_s": round(base["wall_s"] * scale, 2),
        "baseline_readings_per_s": round(base["readings"] / base["wall_s"]),
        "baseline_cpu_s_per_1k_readings": round(base["cpu_s"] / base["readings"] * 1000, 4),
        "baseline_bytes_per_reading": round(base["bytes_per_reading"], 2),
        "targets": {"buffer_readings_per_s": 50_000, "drain_1m_s": 60},
    }
    rows = [
        ("buffer, 20/transaction, FULL", f"{buf['FULL']:,.0f} readings/s", ">= 50,000"),
        ("buffer, 20/transaction, NORMAL", f"{buf['NORMAL']:,.0f} readings/s", ""),
        ("buffer, 10,000/transaction", f"{buf['bulk']:,.0f} readings/s", ""),
        ("drain 1M end to end (acked)", f"{result['drain_1m_s']} s", "<= 60 s"),
        ("  gateway CPU per 1,000 readings", f"{cpu_per_1k * 1000:.1f} ms", ""),
        ("  + receiver + broker CPU", f"{total_cpu_per_1k * 1000:.1f} ms", ""),
        ("  bytes per reading (batch codec)", f"{batch_bytes:.2f}", ""),
        ("baseline JSON per poll, 1M sent", f"{result['baseline_drain_1m_s']} s", ""),
        (
            "  CPU per 1,000 readings",
            f"{result['baseline_cpu_s_per_1k_readings'] * 1000:.1f} ms",
            "",
        ),
        ("  bytes per reading", f"{base['bytes_per_reading']:.1f}", ""),
    ]
    print_table(("measure", "value", "target"), rows, out)
    if args.quick:
        print(f"(--quick: {n_readings} readings drained, times scaled to 1M)", file=out)
    emit(args, "edge", result)


if __name__ == "__main__":
    main()
