"""A broker already listening on the fleet's MQTT port (Debian's mosquitto service listens on
127.0.0.1:1883 once installed) is refused with a message that says what to do, instead of the
fleet quietly talking to a broker its gateways never reach."""

import asyncio
import socket
from pathlib import Path

import pytest

from fleet.mqtt.broker import BrokerError, ManagedMosquitto


def test_managed_mosquitto_refuses_a_port_another_broker_listens_on(tmp_path: Path) -> None:
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        broker = ManagedMosquitto(tmp_path, port, bind="0.0.0.0")
        with pytest.raises(BrokerError, match=rf"port {port} .* already in use.*--mqtt-port"):
            asyncio.run(broker.start())
        assert broker.proc is None  # nothing was started
