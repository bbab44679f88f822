"""Outbound HTTP for pushes: one POST to a URL that a signed-in user supplied, trusting
nothing about it (issue 20).

- One parser, ``parse_endpoint``, reads the URL. Its result alone gives the origin
  that the allowlist checks, the host that is resolved, the Host header, the TLS name
  and the request target. A host is a plain DNS name or an IP literal. Anything else
  is refused: a backslash, space, ``%``, ``@``, userinfo, a control character, or a
  numeric form like ``0x7f.1``. requests ended the host at a ``\\`` that
  ``urlsplit`` kept, so ``https://169.254.169.254\\.notify.windows.com/`` passed the
  allowlist and reached the metadata address.
- The host is resolved once, and every address must be public: no private, loopback,
  link-local, metadata, multicast, reserved or unspecified address (also not one
  inside an IPv6 address). The one exception is loopback, where the allowlist names a
  loopback origin, as the tests do. The connection goes to an address that was
  checked, so a second lookup (DNS rebinding) cannot choose another. TLS still
  verifies the certificate for the name, and the name is sent as SNI.
- A 3xx is an answer, never followed. No cookie jar. ``Accept-Encoding: identity``.
  At most MAX_ANSWER bytes are read, as raw bytes, and only the head is used. Nothing
  is decoded or inflated: a 256 KB gzip bomb once inflated to 256 MiB, and it held
  the worker for 20 s.
- One deadline covers the lookup, connect, TLS, the request and the whole answer. An
  endpoint that drips a byte every 5 s used to hold a send for ever, because the
  timeout was per read. Each socket operation gets only the time that is left. Under
  eventlet or gevent, the hub's own timer also bounds the TLS handshake, whose green
  waits restart their timeout.
- A fresh connection for each send (``Connection: close``): nothing is pooled.

h11 frames the request and parses the answer. The socket is ours.
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import socket
import ssl
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import certifi
import h11

DEADLINE = 10.0  # seconds, the whole exchange
MAX_ANSWER = 8192  # bytes read of any answer: a push service's head is well under 2 KiB
MAX_ENDPOINT = 2048
DEFAULT_PORTS = {"https": 443, "http": 80}
LOOPBACK_NAMES = ("localhost",)
METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")

_AUTHORITY = re.compile(r"(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<name>[A-Za-z0-9.-]+))"
                        r"(?::(?P<port>[1-9][0-9]{0,4}))?")
_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")
# RFC 3986 path and query characters: no space, quote, backslash, brackets or "#".
_PATH, _QUERY = r"[A-Za-z0-9._~!$&'()*+,;=:@/%-]*", r"[A-Za-z0-9._~!$&'()*+,;=:@/?%-]*"
_TARGET = re.compile(rf"(?:/{_PATH})?(?:\?{_QUERY})?")
_BAD_PERCENT = re.compile(r"%(?![0-9A-Fa-f]{2})")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[..., list[tuple[Any, ...]]]


class Refused(Exception):
    """Not sent: the URL is not plain, or its host is an address we never send to. The
    message says why; it never holds the URL's path."""


class NoAnswer(Exception):
    """No usable answer: no connection, the deadline passed, or a broken answer.
    ``final`` is set when trying again cannot help (an answer too large to read)."""

    def __init__(self, reason: str, final: bool = False) -> None:
        super().__init__(reason)
        self.final = final


@dataclass(frozen=True)
class Endpoint:
    """A push endpoint as ``parse_endpoint`` read it: the only source of where to
    connect and what to send."""

    scheme: str
    host: str  # a lower-case DNS name, or an IP literal (IPv6 without brackets)
    port: int
    port_given: bool
    target: str  # the path and query, exactly as they are sent

    @property
    def ip(self) -> Address | None:
        try:
            return ipaddress.ip_address(self.host)
        except ValueError:
            return None

    @property
    def authority(self) -> str:
        """``host[:port]`` as the URL wrote it: the Host header and the origin's tail."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}" if self.port_given else host

    @property
    def origin(self) -> str:
        return f"{self.scheme}://{self.authority}"


def parse_endpoint(url: str) -> Endpoint:
    """The endpoint, or Refused saying what makes ``url`` something other than a plain
    ``http(s)://host[:port][/path][?query]`` URL."""
    if not isinstance(url, str) or not 0 < len(url) <= MAX_ENDPOINT:
        raise Refused(f"not a URL of at most {MAX_ENDPOINT} characters")
    if not url.isascii() or not url.isprintable():
        raise Refused("not a URL of printable ASCII")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in DEFAULT_PORTS:
        raise Refused("not an http(s) URL")
    cut = min((i for i in (rest.find("/"), rest.find("?")) if i >= 0), default=len(rest))
    authority, target = rest[:cut], rest[cut:]
    found = _AUTHORITY.fullmatch(authority)
    if found is None:
        raise Refused("its host is not a plain DNS name or IP literal with an optional "
                      "port (no userinfo, backslash, space or %)")
    host = _host(found.group("v6"), found.group("name"))
    port_text = found.group("port")
    port = int(port_text) if port_text else DEFAULT_PORTS[scheme]
    if not 0 < port < 65536:
        raise Refused("its port is out of range")
    if not _TARGET.fullmatch(target) or _BAD_PERCENT.search(target):
        raise Refused("its path or query holds characters a URL may not")
    return Endpoint(scheme, host, port, port_text is not None, target or "/")


def _host(v6: str | None, name: str | None) -> str:
    if v6 is not None:
        try:
            return str(ipaddress.IPv6Address(v6))
        except ValueError:
            raise Refused("its host is not a valid IPv6 literal") from None
    name = (name or "").lower()
    try:
        return str(ipaddress.IPv4Address(name))
    except ValueError:
        pass
    labels = name.split(".")
    if len(name) > 253 or not all(_LABEL.fullmatch(label) for label in labels):
        raise Refused("its host is not a plain DNS name or IP literal")
    with contextlib.suppress(OSError):
        socket.inet_aton(name)  # 127.1, 0x7f000001, 2130706433: C resolvers take these
        raise Refused("its host is an IPv4 address in a form other than a.b.c.d")
    if labels[-1].isdigit():
        raise Refused("its host is not a plain DNS name or IP literal")
    return name


def names_loopback(origin: str) -> bool:
    """Whether an allowlist origin names a loopback host: ``localhost``, 127.x or
    [::1]. Only such an entry lets a push reach loopback."""
    try:
        endpoint = parse_endpoint(origin)
    except Refused:
        return False
    ip = endpoint.ip
    return endpoint.host in LOOPBACK_NAMES if ip is None else ip.is_loopback


def address_problem(ip: Address, allow_loopback: bool = False) -> str | None:
    """Why a push may not go to ``ip``, or None when it may."""
    embedded = _embedded_ipv4(ip)
    if embedded is not None:
        return address_problem(embedded, allow_loopback)
    if ip.is_loopback:
        return None if allow_loopback else "loopback"
    if ip in METADATA:
        return "a cloud metadata address"
    for kind in ("unspecified", "multicast", "link_local", "private", "reserved"):
        if getattr(ip, f"is_{kind}"):
            return kind.replace("_", "-")
    if not ip.is_global:
        return "not globally reachable"
    return None


def _embedded_ipv4(ip: Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address inside an IPv6 one (mapped, 6to4, Teredo, NAT64), if any."""
    if ip.version == 4:
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


@dataclass(frozen=True)
class Reply:
    """The answer's status and head; header names lower-case."""

    status: int
    headers: dict[str, str]


class Client:
    """POSTs to push endpoints, one fresh connection each, within one deadline.
    ``resolve`` has getaddrinfo's signature, and ``tls`` is the context that verifies
    certificates (certifi's roots by default); tests pass their own."""

    def __init__(self, deadline: float = DEADLINE, max_answer: int = MAX_ANSWER,
                 resolve: Resolver | None = None, tls: ssl.SSLContext | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.deadline = deadline
        self.max_answer = max_answer
        self._resolve = resolve
        self._tls = tls
        self._clock = clock

    def post(self, endpoint: Endpoint, headers: list[tuple[str, str]], body: bytes,
             allow_loopback: bool = False) -> Reply:
        """The endpoint's answer to one POST; Refused before anything is sent, NoAnswer
        when no usable answer came within the deadline."""
        ends_at = self._clock() + self.deadline
        reply = None
        with _hub_deadline(self.deadline):
            reply = self._exchange(endpoint, headers, body, allow_loopback, ends_at)
        if reply is None:
            raise NoAnswer(f"no answer within {self.deadline:g} s")
        return reply

    def _exchange(self, endpoint: Endpoint, headers: list[tuple[str, str]], body: bytes,
                  allow_loopback: bool, ends_at: float) -> Reply:
        addresses = self._addresses(endpoint, allow_loopback)
        sock = self._connect(addresses, ends_at)
        try:
            if endpoint.scheme == "https":
                sock.settimeout(self._left(ends_at))
                sock = self._tls_context().wrap_socket(sock, server_hostname=endpoint.host)
            return self._request(sock, endpoint, headers, body, ends_at)
        except (OSError, ssl.SSLError) as exc:
            raise NoAnswer(_named(exc)) from None
        finally:
            sock.close()

    def _addresses(self, endpoint: Endpoint, allow_loopback: bool) -> list[tuple[Any, ...]]:
        """Every address the host resolves to, each checked; Refused if any is one we
        never send to (a name with a private address among public ones is not
        trusted either)."""
        resolve = self._resolve or socket.getaddrinfo  # looked up now: the green one
        flags = socket.AI_NUMERICHOST if endpoint.ip is not None else 0
        try:
            found = resolve(endpoint.host, endpoint.port, 0, socket.SOCK_STREAM,
                            socket.IPPROTO_TCP, flags)
        except (OSError, UnicodeError) as exc:
            raise NoAnswer(f"its host did not resolve ({_named(exc)})") from None
        if not found:
            raise NoAnswer("its host resolved to nothing")
        for family, _, _, _, sockaddr in found:
            if family not in (socket.AF_INET, socket.AF_INET6):
                raise Refused("its host resolved to a non-IP address")
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
            problem = address_problem(ip, allow_loopback)
            if problem:
                raise Refused(f"its host resolves to {ip} ({problem})")
        return found

    def _connect(self, addresses: list[tuple[Any, ...]], ends_at: float) -> socket.socket:
        """A connection to the first of the checked addresses that takes one."""
        last: Exception | None = None
        for family, kind, proto, _, sockaddr in addresses:
            sock = socket.socket(family, kind, proto)
            try:
                sock.settimeout(self._left(ends_at))
                sock.connect(sockaddr)
                return sock
            except OSError as exc:
                sock.close()
                last = exc
        raise NoAnswer(f"no connection ({_named(last)})")

    def _request(self, sock: socket.socket, endpoint: Endpoint,
                 headers: list[tuple[str, str]], body: bytes, ends_at: float) -> Reply:
        conn = h11.Connection(h11.CLIENT, max_incomplete_event_size=self.max_answer)
        head = [("Host", endpoint.authority), ("Content-Length", str(len(body))),
                ("Accept-Encoding", "identity"), ("Connection", "close"), *headers]
        try:
            data = conn.send(h11.Request(method="POST", target=endpoint.target,
                                         headers=head))
            data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            raise Refused("a header of the push is not valid HTTP") from None
        sock.settimeout(self._left(ends_at))
        sock.sendall(data)
        read = 0
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                too_big = read >= self.max_answer
                raise NoAnswer(f"its answer's head is over {self.max_answer} bytes" if too_big
                               else "its answer is not HTTP/1.1", final=too_big) from None
            if isinstance(event, h11.Response):
                return Reply(event.status_code, {name.decode("latin-1"): value.decode(
                    "latin-1") for name, value in event.headers})
            if event is h11.NEED_DATA:
                if read >= self.max_answer:
                    raise NoAnswer(f"its answer's head is over {self.max_answer} bytes",
                                   final=True)
                sock.settimeout(self._left(ends_at))
                chunk = sock.recv(min(4096, self.max_answer - read))
                read += len(chunk)
                conn.receive_data(chunk)  # b"": the end of the stream
            elif not isinstance(event, h11.InformationalResponse):
                raise NoAnswer("it closed without an answer")

    def _left(self, ends_at: float) -> float:
        left = ends_at - self._clock()
        if left <= 0:
            raise NoAnswer(f"no answer within {self.deadline:g} s")
        return left

    def _tls_context(self) -> ssl.SSLContext:
        if self._tls is None:
            context = ssl.create_default_context(cafile=certifi.where())
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            self._tls = context
        return self._tls


def _named(exc: BaseException | None) -> str:
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    return type(exc).__name__ if exc is not None else "unknown"


def _hub_deadline(seconds: float) -> Any:
    """Under eventlet or gevent, the hub's timer: it ends whatever green wait is under
    way when the deadline passes, the TLS handshake included. Leaving the block early
    is silent: ``post`` sees no reply. In plain threads, the per-operation timeouts
    are enough (CPython's own SSL calls keep one deadline per call)."""
    patcher = sys.modules.get("eventlet.patcher")
    if patcher is not None and patcher.is_monkey_patched("socket"):
        import eventlet

        return eventlet.Timeout(seconds + 0.05, False)
    monkey = sys.modules.get("gevent.monkey")
    if monkey is not None and monkey.is_module_patched("socket"):
        import gevent

        return gevent.Timeout(seconds + 0.05, False)
    return contextlib.nullcontext()
