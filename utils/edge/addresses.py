"""The client's address: the peer, or X-Forwarded-For past trusted proxies."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any


def client_ip(environ: Mapping[str, Any], trusted: tuple[str, ...], hops: int = 0) -> str:
    """The client's address: the peer, unless the peer is a trusted proxy, in which
    case X-Forwarded-For is walked from the right past every trusted hop. With
    ``hops`` the nearest that many proxies are trusted whatever their addresses: the
    client is the entry the outermost of them appended."""
    peer = str(environ.get("REMOTE_ADDR") or "unknown")
    if hops:
        forwarded = [h.strip() for h in str(environ.get("HTTP_X_FORWARDED_FOR") or "")
                     .split(",") if h.strip()]
        chain = [*forwarded, peer]
        return chain[-(hops + 1)] if len(chain) > hops else chain[0]
    if not trusted:
        return peer
    networks = [ipaddress.ip_network(n) for n in trusted]
    hops = [h.strip() for h in str(environ.get("HTTP_X_FORWARDED_FOR") or "").split(",")]
    candidate = peer
    for hop in [peer, *reversed([h for h in hops if h])]:
        candidate = hop
        if not _within(hop, networks):
            return hop
    return candidate


def _within(address: str, networks: list) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False  # garbage in the header is the client's claim, not a proxy
    return any(ip in net for net in networks)
