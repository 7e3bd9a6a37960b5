"""A websocket viewer of the event stream for tests: connect as a same-origin client, read every message to the
server's close."""

from __future__ import annotations

import json
import struct
import time
from dataclasses import dataclass, field
from typing import Any

import websocket
from websocket import ABNF

from tests.support.server import GreenbatchServer


def ws_url(server: GreenbatchServer, path: str) -> str:
    """The ws:// URL of a path on a server."""
    return "ws" + server.base_url[len("http") :] + path


def connect(server: GreenbatchServer, path: str, **options: Any) -> websocket.WebSocket:
    """Open a websocket as a same-origin client (websocket-client sends Origin: http://<host>)."""
    return websocket.create_connection(ws_url(server, path), timeout=15, **options)


@dataclass
class Received:
    """Everything a viewer received up to the server's close frame."""

    messages: list[dict[str, Any]] = field(default_factory=list)
    arrivals: list[float] = field(default_factory=list)  # monotonic time each message arrived
    protocol_pings: int = 0
    close_code: int | None = None
    close_reason: str = ""

    def of(self, type_: str) -> list[dict[str, Any]]:
        """The messages of one type."""
        return [m for m in self.messages if m["type"] == type_]

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of every `events` message, in arrival order."""
        return [event for m in self.of("events") for event in m["events"]]

    @property
    def seqs(self) -> list[int]:
        """The seq of every event received."""
        return [event["seq"] for event in self.events]


def receive(ws: websocket.WebSocket, into: Received | None = None, until: float = 30.0) -> Received:
    """Read messages until the server closes (answering its close), or `until` seconds pass."""
    got = into or Received()
    deadline = time.monotonic() + until
    try:
        while time.monotonic() < deadline:
            opcode, frame = ws.recv_data_frame(True)
            if opcode == ABNF.OPCODE_CLOSE:
                if len(frame.data) >= 2:
                    got.close_code = struct.unpack("!H", frame.data[:2])[0]
                    got.close_reason = frame.data[2:].decode("utf-8")
                return got
            if opcode == ABNF.OPCODE_PING:
                got.protocol_pings += 1
            elif opcode == ABNF.OPCODE_TEXT:
                got.messages.append(json.loads(frame.data))
                got.arrivals.append(time.monotonic())
    finally:
        if got.close_code is not None:
            ws.shutdown()
    return got


def watch(server: GreenbatchServer, path: str) -> Received:
    """Connect, read to the close, disconnect."""
    ws = connect(server, path)
    try:
        return receive(ws)
    finally:
        ws.shutdown()
