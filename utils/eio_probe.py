"""A minimal Engine.IO 4 / Socket.IO 5 client on plain sockets, for the doctor.

Standard library only, so the doctor runs on any machine with Python and needs
none of the server's configuration. It speaks just enough of the protocols to see
a deployment the way a browser does: HTTP requests carrying an ``Origin``,
long-polling, and an RFC 6455 WebSocket that offers permessage-deflate exactly as
Chrome and Safari offer it (so a server that accepts the offer is caught).
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import ipaddress
import json
import os
import socket
import ssl
import struct
import threading
import time
import zlib
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlencode, urlsplit

WS_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
RECORD_SEPARATOR = "\x1e"
MAX_BODY = 256 * 1024
MAX_HEAD = 16 * 1024
USER_AGENT = "notification-doctor/1"


class ProbeError(Exception):
    """A network step that did not complete; the message is evidence for a report."""


class ProbeTimeout(ProbeError):
    """No answer before the deadline."""


class CertificateProblem(ProbeError):
    """The TLS certificate did not verify."""


class TransportClosed(ProbeError):
    """The server closed the Engine.IO session or the WebSocket."""


@dataclass(frozen=True)
class Target:
    """Where the server is: scheme, host, port and an optional path prefix."""

    scheme: str
    host: str
    port: int
    path: str = ""

    @classmethod
    def parse(cls, url: str) -> Target:
        parts = urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"{url!r} is not an http:// or https:// URL")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return cls(parts.scheme, parts.hostname, port, parts.path.rstrip("/"))

    @property
    def secure(self) -> bool:
        return self.scheme == "https"

    @property
    def netloc(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.secure else 80
        return host if self.port == default else f"{host}:{self.port}"

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.netloc}"

    @property
    def eio_path(self) -> str:
        return self.path + "/socket.io/"

    def url(self, path: str = "") -> str:
        return self.origin + self.path + path

    def ws_url(self, path: str = "") -> str:
        return ("wss://" if self.secure else "ws://") + self.netloc + self.path + path

    def with_scheme(self, scheme: str) -> Target:
        return Target(scheme, self.host, 443 if scheme == "https" else 80, self.path)

    def is_local(self) -> bool:
        """Loopback or private address: plain http there is a test set-up, not a leak."""
        if self.host in ("localhost",) or self.host.endswith(".localhost"):
            return True
        try:
            address = ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return address.is_loopback or address.is_private


@dataclass
class Reply:
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes
    elapsed: float

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")

    def json(self) -> Any:
        try:
            return json.loads(self.body)
        except ValueError:
            return None

    def server_name(self) -> str:
        """What answered, as the response names it (a proxy usually names itself)."""
        names = [v for v in (self.header("server"), self.header("via")) if v]
        return ", ".join(names)


def _headers(message: http.client.HTTPMessage) -> dict[str, str]:
    merged: dict[str, str] = {}
    for name, value in message.items():
        key = name.lower()
        merged[key] = f"{merged[key]}, {value}" if key in merged else value
    return merged


def ssl_context() -> ssl.SSLContext:
    return ssl.create_default_context()


def _connection(target: Target, timeout: float) -> http.client.HTTPConnection:
    if target.secure:
        return http.client.HTTPSConnection(target.host, target.port, timeout=timeout,
                                           context=ssl_context())
    return http.client.HTTPConnection(target.host, target.port, timeout=timeout)


def http_request(target: Target, method: str, path: str, headers: dict[str, str] | None = None,
                 body: bytes | None = None, timeout: float = 5.0) -> Reply:
    """One request on its own connection (``Connection: close``): a pending long-poll
    on one connection must never hold up the next request on the client's side."""
    pending = PendingRequest(target, method, path, headers, body, timeout, background=False)
    return pending.result()


class PendingRequest:
    """A request sent on construction, its answer read later (in a thread when
    ``background``): a long-poll that is surely on its way to the server before the
    next request goes out."""

    def __init__(self, target: Target, method: str, path: str,
                 headers: dict[str, str] | None = None, body: bytes | None = None,
                 timeout: float = 5.0, background: bool = True) -> None:
        self.target, self.method, self.path, self.timeout = target, method, path, timeout
        self.reply: Reply | None = None
        self.error: ProbeError | None = None
        self._conn = _connection(target, timeout)
        self._start = time.monotonic()
        self._thread: threading.Thread | None = None
        sent = {"Connection": "close", "User-Agent": USER_AGENT, **(headers or {})}
        try:
            self._conn.request(method, path, body=body, headers=sent)
        except (OSError, http.client.HTTPException) as exc:
            self._fail(exc)
            return
        if background:
            self._thread = threading.Thread(target=self._read, daemon=True)
            self._thread.start()
        else:
            self._read()

    def _read(self) -> None:
        try:
            response = self._conn.getresponse()
            data = response.read(MAX_BODY)
            self.reply = Reply(response.status, response.reason, _headers(response.msg), data,
                               time.monotonic() - self._start)
        except (OSError, http.client.HTTPException) as exc:
            self._fail(exc)
        finally:
            self._conn.close()

    def _fail(self, exc: BaseException) -> None:
        self._conn.close()
        self.error = _probe_error(exc, self.method, self.target, self.path, self.timeout)

    def join(self, timeout: float) -> bool:
        """True when the answer (or a failure) arrived within ``timeout``."""
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def result(self) -> Reply:
        if self._thread is not None:
            self._thread.join()
        if self.error is not None:
            raise self.error
        assert self.reply is not None
        return self.reply


def _probe_error(exc: BaseException, method: str, target: Target, path: str,
                 timeout: float) -> ProbeError:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return CertificateProblem(exc.verify_message or str(exc))
    if isinstance(exc, TimeoutError):
        return ProbeTimeout(f"{method} {path}: no answer within {timeout:g} s")
    return ProbeError(f"{method} {target.netloc}{path}: {_describe(exc)}")


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    return str(exc) or type(exc).__name__


def polling_query(sid: str | None = None) -> str:
    params = {"EIO": "4", "transport": "polling", "t": base64.urlsafe_b64encode(
        os.urandom(6)).decode()}
    if sid:
        params["sid"] = sid
    return "?" + urlencode(params)


class Transport(Protocol):
    def send(self, packet: str) -> None: ...

    def recv(self, deadline: float) -> str: ...


class Polling:
    """One Engine.IO session over long-polling, run the way socket.io-client runs it."""

    def __init__(self, target: Target, timeout: float, origin: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        self.target, self.timeout, self.origin = target, timeout, origin
        self.extra = headers or {}
        self.sid: str | None = None
        self.info: dict[str, Any] = {}
        self.handshake: Reply | None = None
        self.pending: list[str] = []

    def _headers(self, more: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "*/*", **self.extra, **(more or {})}
        if self.origin:
            headers["Origin"] = self.origin
        return headers

    def open(self) -> dict[str, Any]:
        """The handshake; raises ProbeError (with the reply kept) when refused."""
        path = self.target.eio_path + polling_query()
        reply = http_request(self.target, "GET", path, self._headers(), timeout=self.timeout)
        self.handshake = reply
        if reply.status != 200:
            raise ProbeError(f"handshake answered {reply.status} {reply.text()[:80].strip()}")
        packets = _split(reply.text())
        if not packets or not packets[0].startswith("0{"):
            raise ProbeError(f"handshake body {reply.text()[:60]!r} is not an Engine.IO 4 "
                             "open packet")
        try:
            self.info = json.loads(packets[0][1:])
            self.sid = str(self.info["sid"])
        except (ValueError, KeyError, TypeError):
            raise ProbeError("the open packet has no sid") from None
        self.pending = packets[1:]
        return self.info

    def send(self, packet: str, timeout: float | None = None) -> None:
        path = self.target.eio_path + polling_query(self.sid)
        reply = http_request(self.target, "POST", path,
                             self._headers({"Content-Type": "text/plain;charset=UTF-8"}),
                             packet.encode(), timeout=timeout or self.timeout)
        if reply.status != 200:
            raise ProbeError(f"POST answered {reply.status} {reply.text()[:80].strip()}")

    def start_poll(self, timeout: float) -> PendingRequest:
        """A long-poll GET, sent before this returns; its answer is read in a thread."""
        path = self.target.eio_path + polling_query(self.sid)
        return PendingRequest(self.target, "GET", path, self._headers(), timeout=timeout)

    def poll(self, timeout: float) -> list[str]:
        """One long-poll GET; answers pings, drops noops."""
        path = self.target.eio_path + polling_query(self.sid)
        reply = http_request(self.target, "GET", path, self._headers(), timeout=timeout)
        if reply.status != 200:
            raise ProbeError(f"long-poll answered {reply.status} {reply.text()[:80].strip()}")
        packets = []
        for packet in _split(reply.text()):
            if packet == "2":
                self.send("3")
            elif packet == "1":
                raise TransportClosed("the server closed the session")
            elif packet != "6":
                packets.append(packet)
        return packets

    def recv(self, deadline: float) -> str:
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ProbeTimeout("nothing arrived over polling in time")
            self.pending.extend(self.poll(remaining))
        return self.pending.pop(0)

    def close(self) -> None:
        if self.sid:
            try:
                self.send("1", timeout=min(self.timeout, 2.0))  # a courtesy: never wait long
            except ProbeError:
                pass


def _split(payload: str) -> list[str]:
    return [p for p in payload.split(RECORD_SEPARATOR) if p] if payload else []


@dataclass
class WsRefused(ProbeError):
    """The server answered the WebSocket request with something other than 101."""

    reply: Reply

    def __str__(self) -> str:
        return f"answered {self.reply.status} {self.reply.reason} instead of 101"


class WebSocket:
    """An RFC 6455 client: masked frames out, fragments and permessage-deflate in."""

    def __init__(self, target: Target, path: str, timeout: float, origin: str | None = None,
                 headers: dict[str, str] | None = None, offer_deflate: bool = True) -> None:
        self.target, self.path, self.timeout, self.origin = target, path, timeout, origin
        self.extra = headers or {}
        self.offer_deflate = offer_deflate
        self.sock: socket.socket | None = None
        self.reply: Reply | None = None
        self.deflate: dict[str, str] | None = None
        self._buffer = b""
        self._inflater: Any = None

    def connect(self) -> Reply:
        start = time.monotonic()
        try:
            sock = socket.create_connection((self.target.host, self.target.port), self.timeout)
            if self.target.secure:
                sock = ssl_context().wrap_socket(sock, server_hostname=self.target.host)
        except ssl.SSLCertVerificationError as exc:
            raise CertificateProblem(exc.verify_message or str(exc)) from None
        except TimeoutError:
            raise ProbeTimeout(f"no connection within {self.timeout:g} s") from None
        except OSError as exc:
            raise ProbeError(_describe(exc)) from None
        self.sock = sock
        key = base64.b64encode(os.urandom(16)).decode()
        sock.sendall(self._request(key))
        deadline = start + self.timeout
        head = self._read_head(deadline)
        status, reason, headers = _parse_head(head)
        self.reply = Reply(status, reason, headers, b"", time.monotonic() - start)
        if status != 101:
            self.reply.body = self._read_refusal_body(headers, deadline)
            self.close(send_frame=False)
            raise WsRefused(self.reply)
        expected = base64.b64encode(hashlib.sha1((key + WS_GUID).encode()).digest()).decode()
        if headers.get("sec-websocket-accept") != expected:
            self.close(send_frame=False)
            raise ProbeError("101 without a valid Sec-WebSocket-Accept")
        self.deflate = _parse_deflate(headers.get("sec-websocket-extensions", ""))
        if self.deflate is not None:
            bits = int(self.deflate.get("server_max_window_bits") or 15)
            self._inflater = zlib.decompressobj(-bits)
        return self.reply

    def _request(self, key: str) -> bytes:
        lines = [
            f"GET {self.path} HTTP/1.1",
            f"Host: {self.target.netloc}",
            "Upgrade: websocket",
            "Connection: Upgrade",
            f"Sec-WebSocket-Key: {key}",
            "Sec-WebSocket-Version: 13",
            f"User-Agent: {USER_AGENT}",
        ]
        if self.origin:
            lines.append(f"Origin: {self.origin}")
        if self.offer_deflate:
            # What Chrome and Safari send.
            lines.append("Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits")
        lines += [f"{k}: {v}" for k, v in self.extra.items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode()

    def _recv_some(self, deadline: float) -> bytes:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise ProbeTimeout("nothing arrived over the WebSocket in time")
        assert self.sock is not None
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            raise ProbeTimeout("nothing arrived over the WebSocket in time") from None
        except OSError as exc:
            raise TransportClosed(_describe(exc)) from None
        if not data:
            raise TransportClosed("the server closed the connection")
        return data

    def _read_head(self, deadline: float) -> bytes:
        while b"\r\n\r\n" not in self._buffer:
            if len(self._buffer) > MAX_HEAD:
                raise ProbeError("response head too large")
            try:
                self._buffer += self._recv_some(deadline)
            except ProbeTimeout:
                raise ProbeTimeout(f"no answer to the WebSocket request within "
                                   f"{self.timeout:g} s") from None
            except TransportClosed:
                raise ProbeError("the connection closed without an HTTP answer") from None
        head, _, self._buffer = self._buffer.partition(b"\r\n\r\n")
        return head

    def _read_refusal_body(self, headers: dict[str, str], deadline: float) -> bytes:
        length = int(headers.get("content-length", "0") or 0) if headers.get(
            "content-length", "").isdigit() else 4096
        body = self._buffer
        try:
            while len(body) < min(length, 4096):
                body += self._recv_some(min(deadline, time.monotonic() + 1))
        except ProbeError:
            pass
        return body[:4096]

    def _read_exact(self, count: int, deadline: float) -> bytes:
        while len(self._buffer) < count:
            self._buffer += self._recv_some(deadline)
        data, self._buffer = self._buffer[:count], self._buffer[count:]
        return data

    def _read_frame(self, deadline: float) -> tuple[bool, bool, int, bytes]:
        first, second = self._read_exact(2, deadline)
        length = second & 0x7F
        if length == 126:
            (length,) = struct.unpack("!H", self._read_exact(2, deadline))
        elif length == 127:
            (length,) = struct.unpack("!Q", self._read_exact(8, deadline))
        mask = self._read_exact(4, deadline) if second & 0x80 else None
        payload = self._read_exact(length, deadline)
        if mask:
            payload = _xor(payload, mask)
        return bool(first & 0x80), bool(first & 0x40), first & 0x0F, payload

    def recv_text(self, deadline: float) -> str:
        """The next whole text message; answers pings, raises on close."""
        parts: list[bytes] = []
        compressed = False
        while True:
            fin, rsv1, opcode, payload = self._read_frame(deadline)
            if opcode == 0x9:
                self._send_frame(0xA, payload)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else None
                raise TransportClosed(f"the server closed the WebSocket (code {code})")
            if opcode in (0x1, 0x2):
                parts, compressed = [payload], rsv1
            else:
                parts.append(payload)
            if fin:
                data = b"".join(parts)
                if compressed:
                    data = self._inflate(data)
                return data.decode("utf-8", "replace")

    def _inflate(self, data: bytes) -> bytes:
        if self._inflater is None:
            raise ProbeError("a compressed frame arrived without permessage-deflate")
        out = self._inflater.decompress(data + b"\x00\x00\xff\xff")
        if self.deflate and "server_no_context_takeover" in self.deflate:
            self._inflater = zlib.decompressobj(-int(
                self.deflate.get("server_max_window_bits") or 15))
        return out

    def _send_frame(self, opcode: int, payload: bytes) -> None:
        assert self.sock is not None
        length = len(payload)
        if length < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | length)
        elif length < 1 << 16:
            head = struct.pack("!BBH", 0x80 | opcode, 0x80 | 126, length)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0x80 | 127, length)
        mask = os.urandom(4)
        try:
            self.sock.sendall(head + mask + _xor(payload, mask))
        except OSError as exc:
            raise TransportClosed(_describe(exc)) from None

    def send_text(self, text: str) -> None:
        self._send_frame(0x1, text.encode())

    def close(self, send_frame: bool = True) -> None:
        if self.sock is None:
            return
        if send_frame:
            try:
                self._send_frame(0x8, struct.pack("!H", 1000))
            except ProbeError:
                pass
        try:
            self.sock.close()
        except OSError:
            pass
        self.sock = None


def _xor(data: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(data) // 4 + 1))[: len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(repeated, "big")).to_bytes(
        len(data), "big")


def _parse_head(head: bytes) -> tuple[int, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/") or not parts[1].isdigit():
        raise ProbeError(f"not an HTTP answer: {lines[0][:60]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        key = name.strip().lower()
        headers[key] = f"{headers[key]}, {value.strip()}" if key in headers else value.strip()
    return int(parts[1]), parts[2] if len(parts) > 2 else "", headers


def _parse_deflate(header: str) -> dict[str, str] | None:
    for extension in header.split(","):
        params = [p.strip() for p in extension.split(";")]
        if params[0].lower() == "permessage-deflate":
            options: dict[str, str] = {}
            for param in params[1:]:
                name, _, value = param.partition("=")
                options[name.strip().lower()] = value.strip().strip('"')
            return options
    return None


class WsEngine:
    """Engine.IO over a WebSocket, opened directly or upgraded from polling."""

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    def send(self, packet: str) -> None:
        self.ws.send_text(packet)

    def recv(self, deadline: float) -> str:
        while True:
            packet = self.ws.recv_text(deadline)
            if packet == "2":
                self.send("3")
            elif packet == "1":
                raise TransportClosed("the server closed the session")
            elif packet != "6":
                return packet


def websocket_query(sid: str | None = None) -> str:
    params = {"EIO": "4", "transport": "websocket"}
    if sid:
        params["sid"] = sid
    return "?" + urlencode(params)


@dataclass
class Connect:
    """The outcome of a Socket.IO CONNECT to namespace "/"."""

    accepted: bool
    elapsed: float
    code: str | None = None
    message: str | None = None
    welcome: dict[str, Any] | None = None


def sio_connect(transport: Transport, auth: dict[str, Any] | None, timeout: float,
                welcome_wait: float = 2.0) -> Connect:
    """CONNECT, then wait briefly for the contract's ``auth_success``."""
    start = time.monotonic()
    transport.send("40" + (json.dumps(auth) if auth else ""))
    deadline = start + timeout
    welcome = None
    while True:
        packet = transport.recv(deadline)
        if packet.startswith("44"):
            data = _json(packet[2:]) or {}
            detail = data.get("data") if isinstance(data, dict) else None
            code = detail.get("code") if isinstance(detail, dict) else None
            message = data.get("message") if isinstance(data, dict) else None
            return Connect(False, time.monotonic() - start, code=code, message=message)
        if packet.startswith("40"):
            break
        # python-socketio sends what the connect handler emits before the CONNECT answer.
        event = _json(packet[2:]) if packet.startswith("42") else None
        if isinstance(event, list) and len(event) > 1 and event[0] == "auth_success":
            welcome = event[1] if isinstance(event[1], dict) else None
    result = Connect(True, time.monotonic() - start, welcome=welcome)
    if welcome is not None:
        return result
    try:
        result.welcome = wait_event(transport, "auth_success",
                                    min(deadline, time.monotonic() + welcome_wait))
    except ProbeTimeout:
        pass
    return result


def wait_event(transport: Transport, name: str, deadline: float,
               match: Any = None) -> dict[str, Any] | None:
    """The first argument of the next ``name`` event (that ``match`` accepts)."""
    while True:
        packet = transport.recv(deadline)
        if not packet.startswith("42"):
            continue
        event = _json(packet[2:])
        if isinstance(event, list) and event and event[0] == name:
            arg = event[1] if len(event) > 1 else None
            if match is None or match(arg):
                return arg if isinstance(arg, dict) else {"value": arg}


def _json(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return None
