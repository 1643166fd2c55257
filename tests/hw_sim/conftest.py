"""Fixtures for the hw_sim tests: clients that open the simulator's ports like a gateway."""

import pytest
from pymodbus.client import ModbusSerialClient, ModbusTcpClient
from sim_clients import CodecClient


@pytest.fixture
def codec_client():
    opened = []

    def open_client(path, **kw):
        c = CodecClient(path, **kw)
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()


@pytest.fixture
def pymodbus_serial():
    opened = []

    def open_client(path, baud, parity="N", stopbits=1, timeout=1.0):
        c = ModbusSerialClient(
            path, baudrate=baud, parity=parity, stopbits=stopbits, timeout=timeout, retries=0
        )
        assert c.connect(), f"pymodbus could not open {path}"
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()


@pytest.fixture
def pymodbus_tcp():
    opened = []

    def open_client(port, host="127.0.0.1", timeout=1.0):
        c = ModbusTcpClient(host, port=port, timeout=timeout, retries=0)
        assert c.connect(), f"pymodbus could not connect to {host}:{port}"
        opened.append(c)
        return c

    yield open_client
    for c in opened:
        c.close()
