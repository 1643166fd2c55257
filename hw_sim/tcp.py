"""Modbus TCP for simulated meters, served by pymodbus's server in a background thread.

pymodbus frames and answers the requests; each read goes through SimMeter.serve (values,
exceptions, faults) via a SimDevice action, and byte-level faults are applied to the
outgoing ADU in pymodbus's trace_packet hook. Never blocks the caller's thread.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence
from functools import partial

from pymodbus.constants import ExcCodes
from pymodbus.pdu import ModbusPDU
from pymodbus.server import ModbusTcpServer
from pymodbus.simulator import SimData, SimDevice
from pymodbus.simulator.simutils import DataType

from hw_sim.meter import Reply, SimMeter
from protocols import modbus

_START_TIMEOUT_S = 10.0


class TcpServerError(RuntimeError):
    """The Modbus TCP server could not start (port taken, bad address)."""


class TcpMeters:
    """Meters behind one Modbus TCP endpoint (host, port), addressed by unit id.

    A unit id nobody has is answered with exception 0B (gateway target device failed to
    respond), as a Modbus TCP gateway in front of an RS-485 line does.
    """

    def __init__(self, name: str, host: str = "127.0.0.1", port: int = 0) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.meters: dict[int, SimMeter] = {}
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: ModbusTcpServer | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._pending: dict[int, Reply] = {}
        self._sending: tuple[int, Reply] | None = None

    def add_meter(self, meter: SimMeter) -> None:
        if meter.unit in self.meters:
            raise ValueError(
                f"tcp {self.name}: unit {meter.unit} is used by both "
                f"{self.meters[meter.unit].name} and {meter.name}"
            )
        if not 1 <= meter.unit <= 255:
            raise ValueError(f"tcp {self.name}: unit {meter.unit} of {meter.name} must be 1..255")
        self.meters[meter.unit] = meter

    # -- life cycle ------------------------------------------------------------------------
    def start(self) -> None:
        # pymodbus logs every client disconnect and timeout at warning level; the ground
        # truth already records what matters.
        logging.getLogger("pymodbus").setLevel(logging.ERROR)
        self._ready.clear()
        self._thread = threading.Thread(
            target=self._run, name=f"hw_sim-tcp-{self.name}", daemon=True
        )
        self._thread.start()
        if not self._ready.wait(_START_TIMEOUT_S):
            raise TcpServerError(
                f"tcp {self.name}: server did not start within {_START_TIMEOUT_S:.0f} s"
            )
        if self._error is not None:
            self.stop()
            raise TcpServerError(
                f"tcp {self.name}: cannot listen on {self.host}:{self.port} ({self._error}); "
                "is the port in use? Use port = 0 to pick a free one"
            ) from self._error

    def stop(self) -> None:
        loop = self._loop
        if loop is not None and self._server is not None and not loop.is_closed():
            try:
                asyncio.run_coroutine_threadsafe(self._server.shutdown(), loop).result(5)
            except Exception:  # noqa: BLE001 - the server may already be gone
                pass
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._main())
        except BaseException as exc:  # noqa: BLE001 - reported to start()
            self._error = exc
        finally:
            self._ready.set()
            try:
                pending = asyncio.all_tasks(loop)
                for task in pending:
                    task.cancel()
                if pending:
                    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            finally:
                loop.close()
                self._loop = None

    async def _main(self) -> None:
        devices = [
            SimDevice(
                unit,
                simdata=[SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)],
                action=partial(self._action, unit),
            )
            for unit in sorted(self.meters)
        ]
        devices.append(
            SimDevice(
                0,
                simdata=[SimData(0, count=65536, values=0, datatype=DataType.REGISTERS)],
                action=self._no_such_unit,
            )
        )
        server = ModbusTcpServer(
            devices,
            address=(self.host, self.port),
            trace_pdu=self._trace_pdu,
            trace_packet=self._trace_packet,
        )
        self._server = server
        await server.serve_forever(background=True)
        sockets = server.transport.sockets if server.transport else ()
        if not sockets:
            raise OSError("no listening socket")
        self.port = sockets[0].getsockname()[1]
        self._ready.set()
        await server.serving

    # -- request path (runs in the server's event loop) -----------------------------------
    async def _no_such_unit(self, function: int, *_args: object) -> ExcCodes:
        return ExcCodes.GATEWAY_NO_RESPONSE

    async def _action(
        self,
        unit: int,
        function: int,
        start: int,
        address: int,
        count: int,
        registers: list[int],
        set_values: Sequence[int] | None,
    ) -> ExcCodes | None:
        meter = self.meters[unit]
        if set_values is not None or function not in (3, 4):
            return ExcCodes.ILLEGAL_FUNCTION
        reply = meter.serve(modbus.read_request_pdu(function, address, count), "tcp")
        if reply.extra_delay_s > 0:
            await asyncio.sleep(reply.extra_delay_s)
        self._pending[unit] = reply
        if reply.pdu is None:
            return None  # answered by pymodbus, then dropped in _trace_packet
        if reply.pdu[0] & 0x80:
            return ExcCodes(reply.pdu[1])
        data = reply.pdu[2:]
        offset = address - start
        for i in range(count):
            registers[offset + i] = data[2 * i] << 8 | data[2 * i + 1]
        return None

    def _trace_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            # Runs right before _trace_packet for the same response, with no await between.
            reply = self._pending.pop(pdu.dev_id, None)
            self._sending = (pdu.dev_id, reply) if reply is not None else None
        return pdu

    def _trace_packet(self, sending: bool, data: bytes) -> bytes:
        if not sending:
            return data
        sending, self._sending = self._sending, None
        if sending is None:
            return data
        unit, reply = sending
        meter = self.meters[unit]
        if reply.pdu is None:
            meter.commit(reply)
            return b""
        data = reply.mangle_tcp(data)
        meter.commit(reply)
        return data
