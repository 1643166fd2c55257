"""A gateway's network link to the broker, as a TCP proxy the demo can cut and restore: the
gateway connects to the proxy, the proxy to the broker. Cutting drops every open connection
(the broker then publishes the gateway's last will) and refuses new ones until restored.

Demo only: it forwards bytes and never looks at them."""

from __future__ import annotations

import asyncio
import contextlib
import logging

log = logging.getLogger("demo.proxy")

_CHUNK = 65536


class NetworkLink:
    """127.0.0.1:<port> -> broker_host:broker_port, one pair of pumps per connection."""

    def __init__(self, name: str, broker_host: str, broker_port: int) -> None:
        self.name = name
        self.broker = (broker_host, broker_port)
        self.port = 0
        self.cut = False
        self.cuts = 0
        self.connections = 0  # accepted while up, in total
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        self._drop_all()
        if self._server is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    def cut_network(self) -> int:
        """Drop every connection now and refuse new ones; returns how many were dropped."""
        self.cut = True
        self.cuts += 1
        return self._drop_all()

    def restore_network(self) -> None:
        self.cut = False

    def _drop_all(self) -> int:
        n = 0
        for w in list(self._open):
            w.transport.abort()  # a reset, as a pulled cable looks once the broker notices
            n += 1
        self._open.clear()
        return n

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.cut:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.wait_for(asyncio.open_connection(*self.broker), 5)
        except (OSError, TimeoutError) as exc:
            log.warning("%s: broker %s:%d unreachable: %s", self.name, *self.broker, exc)
            writer.transport.abort()
            return
        self.connections += 1
        self._open.update((writer, up_writer))
        pumps = [
            asyncio.create_task(_pump(reader, up_writer)),
            asyncio.create_task(_pump(up_reader, writer)),
        ]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in pumps:
                t.cancel()
            for w in (writer, up_writer):
                self._open.discard(w)
                w.transport.abort()


async def _pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(_CHUNK):
            writer.write(data)
            await writer.drain()
