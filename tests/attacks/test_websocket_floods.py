"""F1: one WebSocket starves the worker.

A client sending big frames as fast as loopback allows kept the worker's hub busy
reading, so /healthz and every other user's notifications stalled for the whole
attack; over-long and never-ending (fragmented) messages grew the worker's memory.
The fixed server closes an unauthenticated session at its first message that is not
a Socket.IO CONNECT, throttles reads per connection, and closes a message (or the
total of a fragmented message) over MAX_HTTP_BUFFER_SIZE (32 KiB).
"""

from __future__ import annotations

import json

import pytest
from websocket import ABNF

from tests.support.attack import MAX_MESSAGE, RSS_LIMIT_MB, frame, token, unique

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]

ATTACK_S = 4.0


def event_message(size: int) -> str:
    """A valid-looking ``mark_read`` event of about ``size`` bytes."""
    count = max(1, (size - 30) // 8)
    return "42" + json.dumps(["mark_read", {"ids": [1000000] * count}], separators=(",", ":"))


def test_f1c_a_message_over_the_limit_is_closed(server, bystander, raw_sockets, figures):
    """F1(c): one 40 KB text frame (over the 32 KiB MAX_HTTP_BUFFER_SIZE) from a
    signed-in socket. Expected: the connection is closed (1009, or the TCP connection
    ends)."""
    message = event_message(40_000)
    assert len(message) > MAX_MESSAGE
    with bystander(server):
        raw = raw_sockets(server)
        raw.sign_in(token(unique("f1c")))
        raw.send(message)
        after = raw.wait_end(3.0)
        figures.update(ended=raw.ended, ended_after_s=after, close_code=raw.close_code)
        assert raw.ended, "a 40 KB message was accepted"
        assert raw.close_code in (None, 1009), raw.ended


def test_f1c_a_2mb_frame_is_closed_without_memory_growth(fresh_server, bystander,
                                                         raw_sockets, figures):
    """F1(c): a single 2 MB text frame (the gevent worker used to read it whole).
    Expected: the connection is closed (1009, or the TCP connection ends: not a 1000
    after reading the frame whole); the worker's memory grows less than 20 MB."""
    big = frame('42["x","' + "a" * (2 * 2**20) + '"]')
    with bystander(fresh_server) as by:
        raw = raw_sockets(fresh_server)
        raw.sign_in(token(unique("f1c-2mb")))
        raw.send_raw(big, timeout=ATTACK_S)
        after = raw.wait_end(3.0)
        figures.update(ended=raw.ended, ended_after_s=after, close_code=raw.close_code)
        assert raw.ended, "a 2 MB frame was accepted"
        assert raw.close_code in (None, 1009), raw.ended
    assert by.rss_growth_mb < RSS_LIMIT_MB


def test_f1c_a_frame_announced_as_64mb_is_closed_at_its_header(fresh_server, bystander,
                                                                raw_sockets, figures):
    """F1(c), the same on a larger scale: a text frame whose header announces 64 MB,
    its payload streamed in 64 KB writes for up to 4 s. Expected: the connection is
    closed before the payload is read (the header alone is over the limit); the worker's
    memory grows less than 20 MB."""
    size = 64 * 2**20
    header = bytes([0x81, 0xFF]) + size.to_bytes(8, "big") + b"\0\0\0\0"  # zero mask key
    chunk = b"a" * 65536
    with bystander(fresh_server) as by:
        raw = raw_sockets(fresh_server)
        raw.sign_in(token(unique("f1c-64mb")))
        raw.send_raw(header + b'42["x","')
        result = raw.flood(chunk, seconds=ATTACK_S, max_sends=size // len(chunk))
        raw.wait_end(1.0)
        figures.update(result, ended=raw.ended, close_code=raw.close_code)
        assert raw.ended, f"{result['sent_mb']} MB of one frame read and still open"
        assert result["sent_mb"] < 16, f"the server read {result['sent_mb']} MB of it"
    assert by.rss_growth_mb < RSS_LIMIT_MB


def test_f1d_a_fragmented_message_that_never_ends(fresh_server, bystander, raw_sockets, figures):
    """F1(d): a text message opened with a non-final frame (it starts like a CONNECT),
    then 4 KB continuation frames (FIN=0) that never finish it, for ~4 s (at most 64 MB).
    Expected: closed once the total passes 32 KiB; the worker's memory grows less than
    20 MB; the bystander stays under 1 s."""
    opening = frame('40{"token":"' + "a" * 4096, fin=False)
    more = frame("a" * 4096, ABNF.OPCODE_CONT, fin=False) * 8
    with bystander(fresh_server) as by:
        raw = raw_sockets(fresh_server)
        raw.send_raw(opening)
        result = raw.flood(more, seconds=ATTACK_S, max_sends=64 * 2**20 // len(more))
        raw.wait_end(1.0)
        figures.update(result, ended=raw.ended)
        assert raw.ended, f"{result['sent_mb']} MB of one unfinished message kept it open"
        assert result["ended_after_s"] is not None and result["ended_after_s"] < 3, result
    assert by.rss_growth_mb < RSS_LIMIT_MB


def test_f1d_zero_length_continuation_frames(fresh_server, bystander, raw_sockets, figures):
    """F1(d): a text message opened with a non-final frame, then a stream of zero-length
    continuation frames (6 bytes each on the wire) for ~4 s. Expected: closed or
    throttled; the worker's memory grows less than 20 MB; the bystander under 1 s."""
    opening = frame("40", fin=False)
    empties = frame(b"", ABNF.OPCODE_CONT, fin=False) * 4096
    with bystander(fresh_server) as by:
        raw = raw_sockets(fresh_server)
        raw.send_raw(opening)
        result = raw.flood(empties, seconds=ATTACK_S, max_sends=100_000)
        raw.wait_end(0.5)
        figures.update(result, ended=raw.ended, frames=result["sends"] * 4096)
        assert raw.ended or result["stuck"], "the server read every empty frame at once"
    assert by.rss_growth_mb < RSS_LIMIT_MB


def test_f1a_anonymous_flood_is_closed_at_its_first_message(server, bystander, raw_sockets,
                                                            figures):
    """F1(a): no token, no Origin, ~30 KB text frames as fast as possible for ~4 s.
    Expected: the server closes the connection at the first message that is not a
    Socket.IO CONNECT; the bystander stays under 1 s."""
    junk = frame('42["x","' + "a" * 30_000 + '"]')
    with bystander(server):
        raw = raw_sockets(server)
        result = raw.flood(junk, seconds=ATTACK_S, max_sends=8000)
        raw.wait_end(1.0)
        figures.update(result, ended=raw.ended)
        assert raw.ended, f"an anonymous socket took {result['sent_mb']} MB and stayed open"
        assert result["ended_after_s"] is not None and result["ended_after_s"] < 1.5, result


def test_f1b_signed_in_flood_of_valid_looking_events(fresh_server, bystander, raw_sockets,
                                                     figures):
    """F1(b): a signed-in socket sends ~30 KB ``mark_read`` events as fast as possible
    for ~4 s. Expected: reads are throttled per connection (and/or the event flood
    limit closes it): the bystander stays under 1 s, the worker's memory grows less than
    20 MB."""
    message = frame(event_message(30_000))
    with bystander(fresh_server) as by:
        raw = raw_sockets(fresh_server)
        raw.sign_in(token(unique("f1b")))
        result = raw.flood(message, seconds=ATTACK_S, max_sends=8000)
        figures.update(result)
    assert by.rss_growth_mb < RSS_LIMIT_MB
