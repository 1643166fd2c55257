"""Independent Modbus readers for the hw_sim tests (pymodbus, and the protocols/ codec over
plain pyserial): they know nothing of the simulator's internals."""

import time

import serial

from protocols import modbus, values

_GAP_S = 0.05

_PYMODBUS_TYPES = {
    "u16": "UINT16",
    "i16": "INT16",
    "u32": "UINT32",
    "i32": "INT32",
    "u64": "UINT64",
    "i64": "INT64",
    "f32": "FLOAT32",
    "f64": "FLOAT64",
}


def pymodbus_value(client, registers, spec):
    """A quantity decoded by pymodbus's own converter, then scaled as the profile says."""
    regs = list(registers)
    if spec.byte_order == "little":
        regs = [((r & 0xFF) << 8) | (r >> 8) for r in regs]
    data_type = getattr(client.DATATYPE, _PYMODBUS_TYPES[spec.type])
    raw = client.convert_from_registers(regs, data_type, word_order=spec.word_order)
    return raw * spec.scale + spec.offset


def pymodbus_read(client, spec, unit):
    read = client.read_input_registers if spec.function == 4 else client.read_holding_registers
    return read(spec.address, count=spec.count, device_id=unit)


class CodecClient:
    """A Modbus RTU master made of pyserial and the protocols/ codec only."""

    def __init__(self, path, baud=9600, parity="E", stopbits=1, timeout_s=1.0):
        self.port = serial.Serial(path, baud, parity=parity, stopbits=stopbits, timeout=0)
        self.timeout_s = timeout_s
        bits = 10 + (parity != "N") + (stopbits - 1)
        # Silence that ends an answer cut short. Not t3.5 (1.75 ms at 115200): a PTY, like a
        # USB adapter, hands bytes over in bursts (the kernel moves them in a worker thread,
        # milliseconds late on a busy machine), so as edge.poller does, wait 50 ms.
        self.gap_s = max(modbus.silence_s(baud, bits), _GAP_S)

    def request(self, unit, function, address, count):
        """Raw register bytes of one read; raises ModbusExceptionResponse, FrameError
        subclasses or TimeoutError."""
        pdu = modbus.read_request_pdu(function, address, count)
        self.port.reset_input_buffer()
        self.port.write(modbus.rtu_frame(unit, pdu))
        parser = modbus.RtuResponseParser(unit, pdu, raw=True)
        deadline = time.monotonic() + self.timeout_s
        last_byte = None
        while time.monotonic() < deadline:
            data = self.port.read(256)
            now = time.monotonic()
            if data:
                last_byte = now
                result = parser.feed(data)
                if result is not None:
                    return result
            else:
                if last_byte is not None and now - last_byte > self.gap_s:
                    parser.end_of_frame()  # the frame stopped short: TruncatedFrameError
                time.sleep(0.0005)
        raise TimeoutError(f"unit {unit} did not answer within {self.timeout_s} s")

    def value(self, unit, spec):
        data = self.request(unit, spec.function, spec.address, spec.count)
        return values.decode(
            data, 0, spec.type, spec.word_order, spec.byte_order, spec.scale, spec.offset, spec.na
        )

    def close(self):
        self.port.close()
