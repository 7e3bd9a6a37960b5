"""Websockets on gevent-websocket 0.10.1, with its faults fixed in one place.

The library upgrades the connection; everything after the 101 is ours. What we fix:

- `WebSocket.close(code, reason)` never sends the code: it sends `str(reason)` alone, so a bytes
  reason arrives as "b'..." and browsers read the first two bytes as the code (25127). Our close
  frames carry the 2-byte code, then the reason.
- Inbound frames are read whatever length they declare (a header saying 1 GiB allocates 1 GiB).
  We check the declared length, and the running size of a fragmented message, before reading a
  payload byte; over `max_message` the connection closes with 1009.
- Two greenlets writing one socket raise ConcurrentObjectUseError. Each connection has exactly one
  sender greenlet; everyone else (the app, pongs, heartbeats, close) puts frames on its outbox.
- No server pings, so a vanished peer holds its connection forever. A heartbeat sends a protocol
  ping (browsers answer it themselves) and the app's own heartbeat message every `heartbeat`
  seconds; a peer silent for `idle_timeout` seconds is closed with 1001.
- A client that stops reading: the outbox is small and `writable` tells the app to wait, so the app
  can bound its own queue and close with its own code (the stream uses 4000 "resync").

This module is the connection alone and imports nothing else from greenbatch; app/serve/handler.py
refuses upgrades before the 101 and hands apps a `WebSocketConnection` in `environ["wsgi.websocket"]`.
"""

from __future__ import annotations

import logging
import socket
import struct
from dataclasses import dataclass
from typing import Any

import gevent
from gevent.event import Event as Signal
from gevent.queue import Queue
from geventwebsocket.exceptions import ProtocolError
from geventwebsocket.websocket import Header, WebSocket

log = logging.getLogger(__name__)

TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG = 0x1, 0x2, 0x0, 0x8, 0x9, 0xA
_FRAMED = -1  # an outbox entry that is a whole frame already (text_frame), written as is
CLOSE_TIMEOUT = 10.0  # seconds our last frames get to reach a slow reader, and its answering close to come back
HANG_UP_WAIT = 1.0  # seconds we drain what the peer still sends after our close, before closing the socket
OUTBOX_CONTROL_LIMIT = 8  # pongs beyond this backlog are dropped (RFC 6455 lets us answer only the last ping)
_VALID_PEER_CODES = set(range(1000, 1004)) | set(range(1007, 1012)) | set(range(3000, 5000))


@dataclass(frozen=True)
class WebSocketLimits:
    """Per-connection limits; the server carries one as `server.ws_limits`."""

    max_message: int = 65536
    heartbeat: float = 20.0
    idle_timeout: float = 300.0
    max_per_client: int = 50
    max_open: int = 500  # on the whole server; below its connection cap, so plain HTTP still gets a slot

    @classmethod
    def from_config(cls, config: Any) -> WebSocketLimits:
        """The limits set by GREENBATCH_WS_* settings."""
        return cls(
            config.ws_max_message, config.ws_heartbeat, config.ws_idle_timeout, config.ws_max_per_client, config.ws_max
        )


def close_payload(code: int, reason: str = "") -> bytes:
    """A close frame body: the 2-byte code, then at most 123 bytes of UTF-8 reason (never cut mid-character)."""
    encoded = reason.encode("utf-8")[:123].decode("utf-8", "ignore").encode("utf-8")
    return struct.pack("!H", code) + encoded


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """XOR a payload with its 4-byte mask, a word at a time rather than a byte at a time."""
    if not payload:
        return payload
    n = len(payload)
    key = int.from_bytes((mask * (n // 4 + 1))[:n], "big")
    return (int.from_bytes(payload, "big") ^ key).to_bytes(n, "big")


def _frame(opcode: int, payload: bytes) -> bytes:
    """One whole, unmasked frame (a server never masks)."""
    return bytes(Header.encode_header(True, opcode, b"", len(payload), 0)) + payload


def text_frame(text: str) -> bytes:
    """A text message as one whole frame, for WebSocketConnection.send_frame."""
    return _frame(TEXT, text.encode("utf-8"))


class WebSocketConnection:
    """One upgraded connection: a single sender greenlet, a reader, a heartbeat, and a proper close."""

    def __init__(self, ws: WebSocket, limits: WebSocketLimits, client: str = "-"):
        self.limits = limits
        self.client = client
        self.heartbeat_message: str | None = None  # the app's own heartbeat, sent next to each protocol ping
        self.done = Signal()  # set once the connection is closing or broken: stop producing
        self.writable = Signal()  # set while the outbox is empty: the app may queue its next frame
        self.writable.set()
        self.finished = Signal()  # set when the connection is over and its greenlets are gone
        self._ws = ws
        self._socket = ws.handler.socket
        self._read = ws.stream.read
        self._write = ws.stream.write
        self._outbox: Queue = Queue()
        self._closing = False
        self._broken_transport = False
        self._greenlets: list[gevent.Greenlet] = []

    # -- what the app uses ---------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """Whether the connection is closing or gone (sending more is pointless)."""
        return self.done.is_set()

    def send_text(self, text: str) -> bool:
        """Queue a text message for the sender; never blocks. False once the connection is closing."""
        return self._put(TEXT, text.encode("utf-8"))

    def send_frame(self, frame: bytes) -> bool:
        """Queue a whole frame made by text_frame() (one frame can go to many connections); never blocks."""
        return self._put(_FRAMED, frame)

    def close(self, code: int = 1000, reason: str = "") -> None:
        """Send a close frame after what is already queued; later sends are dropped."""
        if self._closing:
            return
        self._put(CLOSE, close_payload(code, reason))
        self._closing = True
        self.done.set()
        if code not in (1000, 1001):
            log.info("websocket from %s closed with %d %s", self.client, code, reason)

    # -- lifecycle, run by the handler ---------------------------------------------------------

    def start(self) -> None:
        """Start the sender, the reader and the heartbeat (after the 101 is on the wire)."""
        self._greenlets = [
            gevent.spawn(self._send_loop),
            gevent.spawn(self._read_loop),
            gevent.spawn(self._heartbeat_loop),
        ]

    def finish(self, code: int = 1000, reason: str = "") -> None:
        """Close if the app did not, deliver what is queued and the close handshake, then stop every greenlet."""
        self.close(code, reason)
        try:
            if self._greenlets and not self._broken_transport:
                sender, reader, heartbeat = self._greenlets
                heartbeat.kill()
                sender.join(CLOSE_TIMEOUT)
                if not sender.dead:
                    log.warning(
                        "websocket from %s did not read its last %d frames in %.0f s; dropping it",
                        self.client,
                        self._outbox.qsize() + 1,
                        CLOSE_TIMEOUT,
                    )
                elif not self._broken_transport:
                    reader.join(CLOSE_TIMEOUT)  # the peer's answering close frame (it reads our last frames first)
                    reader.kill()
                    self._hang_up()
            gevent.killall(self._greenlets)
        finally:
            # The library's WebSocket would send its own broken close frame when closed or collected.
            self._ws.closed = True
            self.finished.set()

    # -- internals -----------------------------------------------------------------------------

    def _put(self, opcode: int, payload: bytes) -> bool:
        """Queue one frame for the sender."""
        if self._closing:
            return False
        self._outbox.put((opcode, payload))
        self.writable.clear()
        return True

    def _broken(self, why: str) -> None:
        """The transport failed: stop everything without a close frame (there is no one to read it)."""
        if not self._closing:
            log.debug("websocket from %s dropped: %s", self.client, why)
        self._closing = True
        self._broken_transport = True
        self.done.set()

    def _hang_up(self) -> None:
        """Half-close, then drop what the peer still sends until it hangs up too (at most HANG_UP_WAIT s).

        Closing a socket that has unread input sends a reset, and a reset can destroy our close frame
        before the peer reads it.
        """
        try:
            self._socket.shutdown(socket.SHUT_WR)
            with gevent.Timeout(HANG_UP_WAIT, False):
                while self._socket.recv(65536):
                    pass
        except OSError:
            pass

    def _send_loop(self) -> None:
        """The only greenlet that writes this socket: frames in outbox order, ending with the close frame."""
        try:
            while True:
                opcode, payload = self._outbox.get()
                if self._outbox.empty():
                    self.writable.set()
                self._write(payload if opcode == _FRAMED else _frame(opcode, payload))
                if opcode == CLOSE:
                    return
        except OSError as exc:  # WebSocketError is an OSError too
            self._broken(f"send failed: {exc}")

    def _read_loop(self) -> None:
        """Read frames up to the peer's close frame: answer pings, size-check data messages (otherwise ignored)."""
        message_size = 0
        in_message = False
        try:
            while True:
                timer = gevent.Timeout.start_new(CLOSE_TIMEOUT if self._closing else self.limits.idle_timeout)
                try:
                    header = Header.decode_header(self._ws.stream)
                    problem = self._frame_problem(header, in_message)
                    if problem:
                        self.close(*problem)
                        return
                    if header.opcode in (TEXT, BINARY, CONTINUATION):
                        message_size += header.length
                        if message_size > self.limits.max_message:
                            self.close(
                                1009,
                                f"message of {message_size}+ bytes is over the {self.limits.max_message}-byte limit",
                            )
                            return
                    payload = self._read(header.length) if header.length else b""
                except gevent.Timeout as exc:
                    if exc is not timer:
                        raise
                    if self._closing:
                        return  # the peer never answered our close frame
                    self.close(1001, f"no message or pong for {self.limits.idle_timeout:g} s")
                    continue  # and wait for its answering close frame
                finally:
                    timer.close()
                if len(payload) != header.length:
                    self._broken("peer went away mid-frame")
                    return
                payload = _unmask(payload, header.mask)
                if header.opcode == CLOSE:
                    self._peer_close(payload)
                    return
                if header.opcode == PING:
                    if self._outbox.qsize() < OUTBOX_CONTROL_LIMIT:
                        self._put(PONG, payload)
                elif header.opcode != PONG:
                    in_message = not header.fin
                    if header.fin:
                        message_size = 0
        except ProtocolError as exc:
            self.close(1002, str(exc)[:100])
        except OSError as exc:
            self._broken(f"read failed: {exc}")

    @staticmethod
    def _frame_problem(header: Header, in_message: bool) -> tuple[int, str] | None:
        """Why a frame header breaks RFC 6455 (as a close code and reason), or None."""
        if header.flags:
            return 1002, "reserved bits set without an extension"
        if not header.mask:
            return 1002, "client frames must be masked"
        if header.opcode not in (TEXT, BINARY, CONTINUATION, CLOSE, PING, PONG):
            return 1002, f"unknown opcode {header.opcode}"
        if header.opcode == CONTINUATION and not in_message:
            return 1002, "continuation frame without a message"
        if header.opcode in (TEXT, BINARY) and in_message:
            return 1002, "new message inside a fragmented one"
        return None

    def _peer_close(self, payload: bytes) -> None:
        """The peer closed: answer with its code (1000 when it gave none)."""
        if self._closing:
            return  # this answers our own close frame
        if len(payload) >= 2:
            code = struct.unpack("!H", payload[:2])[0]
            if code not in _VALID_PEER_CODES:
                self.close(1002, f"invalid close code {code}")
                return
            self.close(code)
        elif payload:
            self.close(1002, "one-byte close frame")
        else:
            self.close(1000)

    def _heartbeat_loop(self) -> None:
        """Every `heartbeat` seconds a protocol ping and the app's heartbeat message, unless the outbox is backed up."""
        while not self._closing:
            gevent.sleep(self.limits.heartbeat)
            if self._outbox.qsize() < 2:
                self._put(PING, b"")
                if self.heartbeat_message is not None:
                    self.send_text(self.heartbeat_message)
