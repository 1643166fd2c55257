"""LoRa: sensors send through an emulated RAK3172 on a PTY; a gateway-side client speaking
the RUI3 AT interface (protocols/rak3172) receives +EVT:RXP2P events whose frames decode
with the protocols/ decoders to exactly the values the simulator logged. Lost, duplicated
and corrupted packets are logged; a module not set up to receive hears nothing."""

import time

import pytest
import serial

from hw_sim.pytest_plugin import wait_for
from protocols import lora, lora_p2p, rak3172

SENSORS = [
    {"name": "room-lpp", "kind": "room_climate", "format": "cayenne_lpp"},
    {"name": "room-elsys", "kind": "room_climate", "format": "elsys"},
    {"name": "room-am103", "kind": "room_climate", "format": "milesight_am103"},
    {"name": "room-am307", "kind": "room_climate", "format": "milesight_am307"},
    {"name": "gas", "kind": "gas_meter", "format": "cayenne_lpp"},
    {"name": "water", "kind": "water_meter", "format": "elsys"},
    {"name": "heat", "kind": "heat_meter", "format": "milesight_em300_di"},
]
P2P = {"frequency_hz": 868100000, "spreading_factor": 9, "bandwidth_khz": 125}


class Gateway:
    """The gateway's side of the UART: AT commands out, parsed events in."""

    def __init__(self, path):
        self.port = serial.Serial(path, 115200, timeout=0)
        self.parser = rak3172.AtParser()
        self.events = []

    def poll(self):
        data = self.port.read(4096)
        if data:
            self.events += self.parser.feed(data)
        return self.events

    def command(self, line):
        """Send one command, return the events up to its final status (OK or AT_...)."""
        start = len(self.events)
        self.port.write(line)
        done = wait_for(
            lambda: [
                e for e in self.poll()[start:] if isinstance(e, (rak3172.AtOk, rak3172.AtError))
            ],
            2.0,
        )
        return self.events[start : self.events.index(done[0], start) + 1]

    def setup_receive(self):
        assert self.command(rak3172.set_network_mode(rak3172.MODE_P2P_LORA))[0] == rak3172.OK
        answer = self.command(rak3172.set_p2p_params(868100000, 9, 125, 0, 8, 14))
        assert answer[-1] == rak3172.OK
        assert self.command(rak3172.RECEIVE_CONTINUOUS)[-1] == rak3172.OK

    def packets(self):
        return [e for e in self.poll() if isinstance(e, rak3172.RxP2P)]

    def close(self):
        self.port.close()


@pytest.fixture
def gateway():
    opened = []

    def open_gateway(path):
        g = Gateway(path)
        opened.append(g)
        return g

    yield open_gateway
    for g in opened:
        g.close()


def test_frames_decode_to_exactly_the_values_the_simulator_logged(sim_radio, gateway):
    b = sim_radio(*SENSORS, **P2P)
    radio = b.radio()
    gw = gateway(radio.path)
    gw.setup_receive()
    for s in SENSORS:
        radio.send_now(s["name"])
    packets = wait_for(lambda: len(gw.packets()) >= len(SENSORS) and gw.packets(), 5.0)
    by_address = {s.address: s.name for s in radio.sensors}
    for packet in packets:
        frame = lora_p2p.parse_p2p_frame(packet.payload)
        name = by_address[frame.address_hex]
        logged = b.truth.values(name, counter=frame.counter)
        assert logged, f"{name}: frame {frame.counter} not in the ground truth"
        decoded = lora.decode(frame.format_name, frame.payload)
        assert sorted((r.quantity, r.index, r.value) for r in decoded) == sorted(
            (r["quantity"], r["index"], r["value"]) for r in logged
        )
        assert -140 < packet.rssi_dbm < 0
    assert {lora_p2p.parse_p2p_frame(p.payload).address_hex for p in packets} == set(by_address)


def test_room_values_are_plausible_and_pulse_counters_never_go_back(sim_radio, gateway):
    b = sim_radio(
        {"name": "room", "kind": "room_climate", "format": "elsys"},
        {
            "name": "gas",
            "kind": "gas_meter",
            "format": "cayenne_lpp",
            "peak_flow": 50.0,
            "base_flow": 20.0,
        },
        start="2025-03-10T10:00:00+01:00",
        **P2P,
    )
    radio = b.radio()
    gw = gateway(radio.path)
    gw.setup_receive()
    counts = []
    for _ in range(4):
        radio.send_now("room")
        radio.send_now("gas")
        b.clock.advance(600_000)
        time.sleep(0.05)
    wait_for(lambda: len(gw.packets()) >= 8, 5.0)
    room = b.truth.latest("room")
    assert 15 < room["temperature"] < 26 and 20 <= room["humidity"] <= 80
    assert 400 <= room["co2"] <= 2500 and 2.5 < room["battery"] < 3.7
    counts = [r["value"] for r in b.truth.values("gas", quantity="pulse_count")]
    assert counts == sorted(counts) and counts[-1] > counts[0]


def test_module_that_is_not_receiving_hears_nothing_and_the_log_says_why(sim_radio, gateway):
    b = sim_radio(*SENSORS[:1], **P2P)
    radio = b.radio()
    gw = gateway(radio.path)
    radio.send_now("room-lpp")  # factory state: LoRaWAN mode
    wait_for(lambda: b.truth.events("room-lpp", event="not_received"), 2.0)
    assert "AT+NWM=0" in b.truth.events("room-lpp")[0]["detail"]
    assert gw.command(rak3172.set_network_mode(0))[0] == rak3172.OK
    assert gw.command(rak3172.set_p2p_params(868300000, 9, 125, 0, 8, 14))[-1] == rak3172.OK
    assert gw.command(rak3172.RECEIVE_CONTINUOUS)[-1] == rak3172.OK
    radio.send_now("room-lpp")  # wrong frequency
    wait_for(lambda: len(b.truth.events("room-lpp", event="not_received")) == 2, 2.0)
    assert "AT+P2P" in b.truth.events("room-lpp")[1]["detail"]
    assert gw.packets() == [] and b.truth.values() == []
    # reconfiguring in receive mode is refused, as the module does
    answer = gw.command(rak3172.set_p2p_params(868100000, 9, 125, 0, 8, 14))
    assert answer[-1].code == "AT_BUSY_ERROR"


def test_at_queries_answer_as_rui3_does(sim_radio, gateway):
    b = sim_radio(*SENSORS[:1], network_mode=0, **P2P)
    gw = gateway(b.radio().path)
    assert gw.command(b"AT\r\n") == [rak3172.OK]
    version = gw.command(rak3172.QUERY_VERSION)
    assert isinstance(version[0], rak3172.AtValue) and version[0].name == "AT+VER"
    p2p = gw.command(rak3172.QUERY_P2P)
    assert p2p[0] == rak3172.AtValue("AT+P2P", "868000000:7:125:0:8:14")
    assert gw.command(b"AT+NOSUCH=1\r\n")[-1].code == "AT_COMMAND_NOT_FOUND"
    assert gw.command(b"AT+PRECV=x\r\n")[-1].code == "AT_PARAM_ERROR"


@pytest.mark.parametrize("kind", ["lost", "duplicated", "corrupted"])
def test_radio_faults_are_logged_and_visible_to_the_gateway(sim_radio, gateway, kind):
    sensor = {
        "name": "room",
        "kind": "room_climate",
        "format": "cayenne_lpp",
        "faults": [{"kind": kind, "rate": 1.0}],
    }
    b = sim_radio(sensor, **P2P)
    gw = gateway(b.radio().path)
    gw.setup_receive()
    b.radio().send_now("room")
    wait_for(lambda: b.truth.faults("room"), 2.0)
    time.sleep(0.1)
    packets = gw.packets()
    assert [f["fault"] for f in b.truth.faults("room")] == [kind]
    if kind == "lost":
        assert packets == [] and b.truth.values("room") == []
    elif kind == "duplicated":
        assert len(packets) == 2 and packets[0].payload == packets[1].payload
        assert len(b.truth.values("room")) == 4  # the values, once
    else:
        assert len(packets) == 1
        with pytest.raises(lora.LoraPayloadError, match="CRC"):
            lora_p2p.parse_p2p_frame(packets[0].payload)
        assert b.truth.values("room") == []


def test_sensors_send_on_their_schedule_in_simulated_time(sim_radio, gateway):
    b = sim_radio(
        {"name": "room", "kind": "room_climate", "format": "elsys", "interval_s": 60},
        speed=600.0,
        **P2P,
    )  # one uplink per 0.1 s
    gw = gateway(b.radio().path)
    gw.setup_receive()
    packets = wait_for(lambda: len(gw.packets()) >= 5 and gw.packets(), 5.0)
    counters = [lora_p2p.parse_p2p_frame(p.payload).counter for p in packets]
    assert counters == list(range(counters[0], counters[0] + len(counters)))
    times = [r["ts_ms"] for r in b.truth.values("room", quantity="temperature")]
    assert all(t2 - t1 == 60_000 for t1, t2 in zip(times, times[1:], strict=False))
