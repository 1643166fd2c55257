"""The demo's control port: a small HTTP server on 127.0.0.1 that the running demo answers,
and `python -m demo ctl ...`, its client. Commands cut and restore a gateway's network, make a
meter fail, and push a configuration that breaks a gateway (to watch it roll back).

The server speaks just enough HTTP/1.1 for one JSON request per connection; it must only
ever listen on the loopback interface (it has no authentication)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

CONTROL_FILE = "control.json"  # in the demo's work directory: {"url": ...}
_MAX_BODY = 65536

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class ControlError(Exception):
    """A control request that cannot be carried out; the message says why (HTTP 400/404)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ControlServer:
    """POST /<command> with a JSON object body; GET /status. Answers JSON."""

    def __init__(self, handlers: dict[str, Handler]) -> None:
        self.handlers = handlers
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self, port: int = 0) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, body = await asyncio.wait_for(self._request(reader), 30)
        except (TimeoutError, asyncio.IncompleteReadError, ValueError, OSError) as exc:
            status, body = 400, {"error": f"bad request: {exc}"}
        data = json.dumps(body).encode()
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Error"}.get(status, "")
        with contextlib.suppress(OSError):
            writer.write(
                f"HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n".encode()
                + data
            )
            await writer.drain()
        writer.close()

    async def _request(self, reader: asyncio.StreamReader) -> tuple[int, dict[str, Any]]:
        line = (await reader.readline()).decode("latin-1").split()
        if len(line) != 3:
            raise ValueError("expected a request line such as POST /cut-network HTTP/1.1")
        method, path = line[0], line[1]
        length = 0
        while (header := (await reader.readline()).decode("latin-1").strip()) != "":
            name, _, value = header.partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if not 0 <= length <= _MAX_BODY:
            raise ValueError(f"body of {length} bytes; at most {_MAX_BODY}")
        raw = await reader.readexactly(length) if length else b"{}"
        args = json.loads(raw or b"{}")
        if not isinstance(args, dict):
            raise ValueError("the body must be a JSON object")
        command = path.strip("/")
        handler = self.handlers.get(command)
        if handler is None or (method == "GET") != (command == "status"):
            return 404, {
                "error": f"no command {method} /{command}",
                "commands": list(self.handlers),
            }
        try:
            return 200, await handler(args)
        except ControlError as exc:
            return exc.status, {"error": str(exc)}
        except Exception as exc:  # the demo keeps running; the operator sees what broke
            return 500, {"error": f"{type(exc).__name__}: {exc}"}


def write_control_file(workdir: Path, port: int) -> Path:
    path = workdir / CONTROL_FILE
    path.write_text(json.dumps({"url": f"http://127.0.0.1:{port}"}))
    return path


# --- the client: python -m demo ctl ... ----------------------------------------------------

COMMANDS = {
    "status": "the gateways, their kind, building and network state",
    "cut-network": "cut a gateway's network: it buffers, the fleet sees it offline",
    "restore-network": "give the network back: it reconnects and backfills what it buffered",
    "fail-meter": "make a meter stop answering (hw_sim vanish) for --seconds",
    "break-config": "roll out a configuration that breaks the gateway; watch it roll back",
}


def ctl_main(argv: list[str], default_workdir: Path) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m demo ctl",
        description="Control the running demo (python -m demo in another terminal).",
        epilog="Examples: python -m demo ctl cut-network ms-grundschule; "
        "python -m demo ctl fail-meter bh-hallenbad pumps --seconds 300",
    )
    parser.add_argument("--workdir", default=str(default_workdir),
                        help=f"the demo's work directory (default {default_workdir})")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="print the answer as JSON")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("status", help=COMMANDS["status"])
    for name in ("cut-network", "restore-network", "break-config"):
        p = sub.add_parser(name, help=COMMANDS[name])
        p.add_argument("gateway", help="gateway id, e.g. ms-grundschule (see `ctl status`)")
    p = sub.add_parser("fail-meter", help=COMMANDS["fail-meter"])
    p.add_argument("gateway", help="gateway id, e.g. ms-grundschule")
    p.add_argument("meter", help="the meter's Modbus unit id or its name (see `ctl status`)")
    p.add_argument("--seconds", type=float, default=120.0,
                   help="how long it stays silent, in simulated seconds (120)")  # fmt: skip
    args = parser.parse_args(argv)
    control = Path(args.workdir) / CONTROL_FILE
    try:
        url = json.loads(control.read_text())["url"]
    except (OSError, ValueError, KeyError):
        print(f"no running demo found ({control} is missing): start it with `python -m demo`"
              " (or pass --workdir)", file=sys.stderr)  # fmt: skip
        return 2
    body = {k: v for k, v in vars(args).items() if k in ("gateway", "meter", "seconds")}
    try:
        if args.command == "status":
            r = httpx.get(f"{url}/status", timeout=30)
        else:
            r = httpx.post(f"{url}/{args.command}", json=body, timeout=30)
    except httpx.HTTPError as exc:
        print(f"the demo does not answer at {url} ({exc}); is it still running?", file=sys.stderr)
        return 2
    answer = r.json()
    if args.json:
        print(json.dumps(answer))
    elif "error" in answer:
        print(answer["error"], file=sys.stderr)
    else:
        print(answer.get("message") or json.dumps(answer, indent=1))
    return 0 if r.status_code == 200 else 1
