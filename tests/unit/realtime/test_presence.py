"""Presence (utils/realtime/presence.py): in memory from the socket registry, and across
nodes through a real Redis (127.0.0.1:6379). Each Redis test uses a key prefix of its
own, so parallel runs never share a key; two RedisPresence objects with two
registries stand for two nodes."""

from __future__ import annotations

import logging
import time
import uuid

import pytest

from tests.support.services import REDIS_HOST, REDIS_PORT, SHARED_REDIS, require_service
from utils.realtime.presence import (
    ALIVE,
    SEEN_LIMIT,
    SEEN_RETENTION,
    Presence,
    PresenceUnavailable,
    RedisPresence,
    UserPresence,
    make_presence,
)
from utils.realtime.registry import SocketRegistry


class Clock:
    def __init__(self, now: float = 1_750_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def no_task(*_args) -> None:
    raise AssertionError("the heartbeat task is not started in these tests")


# ------------------------------------------------------------------ in memory


def test_the_registry_tells_presence_about_every_add_and_remove():
    registry, seen = SocketRegistry(), []
    registry.on_change = seen.append
    registry.add("s1", "alice", None)
    registry.add("s2", "alice", None)
    registry.remove("s1")
    registry.remove("s1")  # gone already: no call
    registry.remove("s2")
    assert seen == ["alice", "alice", "alice", "alice"]
    assert registry.counts() == {}


def test_in_memory_counts_sockets_in_request_order_and_says_when_last_seen():
    clock = Clock()
    registry = SocketRegistry()
    presence = Presence(registry, clock)
    assert registry.on_change == presence.changed
    registry.add("s1", "alice", None)
    registry.add("s2", "alice", None)
    registry.add("s3", "bob", None)
    clock.now += 10
    registry.remove("s3")  # bob's last socket: seen now
    clock.now += 5
    answer = presence.lookup(["carol", "bob", "alice"])
    assert answer == [UserPresence("carol", 0, None),
                      UserPresence("bob", 0, clock.now - 5),
                      UserPresence("alice", 2, clock.now)]  # online: seen at the answer
    assert presence.online(["alice", "bob", "carol"]) == {"alice"}
    assert [u.to_dict() for u in answer[1:]] == [
        {"user_id": "bob", "online": False, "sockets": 0,
         "last_seen_at": "2025-06-15T15:06:50Z"},
        {"user_id": "alice", "online": True, "sockets": 2,
         "last_seen_at": "2025-06-15T15:06:55Z"}]
    presence.ensure_started()  # nothing to start without Redis


def test_in_memory_sightings_are_bounded_by_age_and_by_count():
    clock = Clock()
    registry = SocketRegistry()
    presence = Presence(registry, clock)
    registry.add("old", "old-user", None)
    registry.remove("old")
    clock.now += SEEN_RETENTION + 1
    registry.add("new", "new-user", None)  # prunes what is past the retention
    assert presence.lookup(["old-user"])[0].last_seen is None
    for i in range(SEEN_LIMIT + 10):
        presence.changed(f"u{i}")
    assert len(presence._seen) == SEEN_LIMIT
    assert presence.lookup(["u0"])[0].last_seen is None  # the oldest went first
    assert presence.lookup([f"u{SEEN_LIMIT + 9}"])[0].last_seen == clock.now


def test_without_a_redis_url_presence_is_in_memory():
    assert type(make_presence(SocketRegistry(), None, 25, no_task, time.sleep)) is Presence


# ------------------------------------------------------------------ through Redis


@pytest.fixture
def redis_client():
    require_service("Redis", REDIS_HOST, REDIS_PORT)
    import redis

    return redis.Redis.from_url(SHARED_REDIS)


@pytest.fixture
def nodes(redis_client):
    """``nodes(interval=...)``: a new node (registry, RedisPresence) on a private key
    prefix shared by the nodes of this test; every key under it is deleted at the end."""
    prefix = f"test-presence-{uuid.uuid4().hex[:10]}:"
    made = []

    def _make(interval: float = 25.0, url: str = SHARED_REDIS, clock=time.time):
        registry = SocketRegistry()
        presence = RedisPresence(registry, url, interval, no_task, time.sleep,
                                 prefix=prefix, clock=clock)
        made.append(presence)
        return registry, presence

    _make.prefix = prefix
    yield _make
    keys = list(redis_client.scan_iter(match=prefix + "*"))
    if keys:
        redis_client.delete(*keys)


def test_two_nodes_add_up_and_each_reads_its_own_sockets_without_redis(nodes):
    reg_a, a = nodes()
    reg_b, b = nodes()
    assert a.node_id != b.node_id
    reg_a.add("a1", "alice", None)
    reg_b.add("b1", "alice", None)
    reg_b.add("b2", "bob", None)
    assert [u.sockets for u in a.lookup(["alice", "bob"])] == [1, 0]  # b has not written
    assert a.rewrite() and b.rewrite()
    answer = a.lookup(["bob", "alice", "carol"])
    assert [(u.user_id, u.online, u.sockets) for u in answer] == [
        ("bob", True, 1), ("alice", True, 2), ("carol", False, 0)]
    assert answer[2].last_seen is None
    assert b.lookup(["alice"])[0].sockets == 2
    assert a.online(["alice", "bob", "carol"]) == {"alice", "bob"}


def test_a_change_is_flushed_in_one_write_and_the_disconnect_is_the_last_sighting(
        nodes, redis_client):
    reg_a, a = nodes()
    reg_b, b = nodes()
    assert a.rewrite() and b.rewrite()
    reg_b.add("b1", "dave", None)
    reg_b.add("b2", "dave", None)
    assert a.lookup(["dave"])[0].sockets == 0
    assert b.flush()
    assert a.lookup(["dave"])[0].sockets == 2
    reg_b.remove("b1")
    reg_b.remove("b2")
    before = time.time()
    assert b.flush()
    (dave,) = a.lookup(["dave"])
    assert (dave.online, dave.sockets) == (False, 0)
    assert before - 1 <= dave.last_seen <= time.time()
    # gone from b's hash, which stays (its ALIVE field) with its TTL
    assert redis_client.hkeys(b.node_key) == [ALIVE.encode()]
    assert 0 < redis_client.pttl(b.node_key) <= 2 * 25.0 * 1000


def test_a_node_that_stops_writing_stops_counting_when_its_ttl_runs_out(
        nodes, redis_client):
    interval = 0.3
    reg_a, a = nodes(interval)
    reg_b, b = nodes(interval)
    reg_b.add("b1", "erin", None)
    assert a.rewrite() and b.rewrite()
    assert a.lookup(["erin"])[0].sockets == 1
    beat_at = time.time()
    assert b.beat()  # its last sign of life: then it is "killed"
    time.sleep(2 * interval + 0.1)  # the TTL: two heartbeats
    (erin,) = a.lookup(["erin"])
    assert (erin.online, erin.sockets) == (False, 0)
    assert beat_at - 0.1 <= erin.last_seen <= beat_at + 0.1  # seen at its last heartbeat
    assert b.node_id.encode() not in redis_client.smembers(nodes.prefix + "nodes")


def test_a_heartbeat_that_finds_its_hash_gone_rewrites_it(nodes, redis_client):
    reg_a, a = nodes()
    reg_b, b = nodes()
    reg_b.add("b1", "frank", None)
    assert b.rewrite()
    redis_client.delete(b.node_key)  # as after a Redis restart
    assert a.lookup(["frank"])[0].sockets == 0
    assert b.beat()
    assert b._full_due
    assert b.rewrite()
    assert a.lookup(["frank"])[0].sockets == 1


def test_a_heartbeat_at_5000_users_is_one_write_of_the_whole_node(nodes, redis_client):
    registry, presence = nodes()
    users = [f"user-{i:05d}" for i in range(5000)]
    for i, user in enumerate(users):
        registry.add(f"s{i}", user, None)
    assert presence.rewrite() and presence.beat()
    assert redis_client.hlen(presence.node_key) == 5001  # the users and ALIVE
    assert redis_client.zcard(nodes.prefix + "seen") == 5000
    reg_other, other = nodes()
    looked = other.lookup(users[:100])
    assert [u.sockets for u in looked] == [1] * 100


def test_redis_down_is_unavailable_for_lookups_and_unknown_for_if_offline(nodes, caplog):
    from tests.support.servers import free_port

    registry, presence = nodes(url=f"redis://127.0.0.1:{free_port()}/0")
    registry.add("s1", "grace", None)
    with caplog.at_level(logging.WARNING, logger="utils.realtime.presence"):
        with pytest.raises(PresenceUnavailable):
            presence.lookup(["grace", "heidi"])
        assert presence.online(["heidi"]) is None  # unknown: if_offline becomes "auto"
        assert presence.online(["grace"]) == {"grace"}  # a socket here: no need to ask
        assert not presence.rewrite()
        registry.add("s2", "heidi", None)
        assert not presence.flush()
        assert presence._dirty == {"heidi"}  # kept for the next write
    warnings = [r for r in caplog.records if "Redis failed" in r.getMessage()]
    assert len(warnings) == 1  # logged once per outage


def test_writes_resume_whole_when_redis_answers_again(nodes, tmp_path, caplog):
    from tests.support.cluster import private_redis

    server = private_redis(tmp_path)
    url = f"redis://127.0.0.1:{server.port}/0"
    reg_a, a = nodes(url=url)
    reg_b, b = nodes(url=url)
    reg_b.add("b1", "ivan", None)
    assert not b.rewrite()  # not started yet
    assert b._full_due
    server.start()
    try:
        b._down_until = a._down_until = 0.0  # skip the recheck wait
        with caplog.at_level(logging.WARNING, logger="utils.realtime.presence"):
            assert b.rewrite()
        assert "Redis answers again" in caplog.text
        assert a.lookup(["ivan"])[0].sockets == 1
    finally:
        server.stop()


class Stopped(Exception):
    pass


def test_the_task_flushes_a_connect_within_a_fraction_of_a_second_and_beats(nodes):
    import threading

    stop = threading.Event()
    threads = []

    def run(target):
        try:
            target()
        except Stopped:
            pass

    def start_task(target):
        threads.append(threading.Thread(target=run, args=(target,), daemon=True))
        threads[-1].start()

    def sleep(seconds):
        if stop.wait(seconds):
            raise Stopped  # ends the task's loop

    reg_a, a = nodes()
    reg_b = SocketRegistry()
    b = RedisPresence(reg_b, SHARED_REDIS, 0.5, start_task, sleep, prefix=nodes.prefix)
    b.ensure_started()
    b.ensure_started()  # once
    try:
        assert len(threads) == 1
        reg_b.add("b1", "judy", None)
        started = time.monotonic()
        while a.lookup(["judy"])[0].sockets != 1:
            assert time.monotonic() - started < 2, "the connect was never flushed"
            time.sleep(0.02)
        reg_b.remove("b1")
        while a.lookup(["judy"])[0].online:
            assert time.monotonic() - started < 4, "the disconnect was never flushed"
            time.sleep(0.02)
        reg_b.add("b2", "judy", None)
        time.sleep(0.5)
        assert a.lookup(["judy"])[0].sockets == 1
        time.sleep(1.5)  # past the TTL (two heartbeats): the beats kept it
        assert a.lookup(["judy"])[0].sockets == 1
    finally:
        stop.set()
        threads[0].join(5)


def test_ten_thousand_users_are_looked_up_in_parts(nodes):
    """A bulk request's push "if_offline" may ask about 10,000 recipients at once."""
    reg_a, a = nodes()
    reg_b, b = nodes()
    users = [f"bulk-{i}" for i in range(10_000)]
    reg_b.add("b1", users[-1], None)
    reg_b.add("b2", users[1500], None)
    assert b.rewrite()
    assert a.online(users) == {users[-1], users[1500]}
    assert [u.sockets for u in a.lookup(users)].count(1) == 2
