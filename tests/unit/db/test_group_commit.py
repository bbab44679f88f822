"""Group commit: writers that arrive together share one write, each with its own answer.

The committer on its own (threads stand in for the workers' greenlets), then the
notification store's group write on SQLite and PostgreSQL, then receipts: their
backlog bound and their one statement for id lists of any length.
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.unit.ops.test_metrics import delta, scrape
from utils.db.group_commit import GroupCommit
from utils.errors import ValidationError
from utils.extensions import db
from utils.notifications import store
from utils.notifications.models import NewNotification, Notification
from utils.notifications.notifier import (
    IdempotencyConflict,
    NotifyRequest,
    Stored,
    fingerprint,
    notify_users,
    store_group,
)
from utils.notifications.receipts import Backlog, Receipt, write_receipts
from utils.services import services


class Recorder:
    """A write function that records its groups. A group holding ``hold`` waits for
    ``release`` before it is written, as a write blocked on a database lock would."""

    def __init__(self, fail_on: object = None, answer_with_error: object = None,
                 hold: object = None):
        self.groups: list[list] = []
        self.fail_on = fail_on
        self.answer_with_error = answer_with_error
        self.hold = hold
        self.holding = threading.Event()
        self.release = threading.Event()

    def __call__(self, requests: list) -> list:
        self.groups.append(list(requests))
        if self.hold in requests:
            self.holding.set()
            assert self.release.wait(5)
        if self.fail_on in requests and len(requests) > 1:
            raise ValueError("the group fails")
        if self.fail_on in requests:
            raise ValueError(f"bad request {self.fail_on}")
        return [ValueError(f"refused {r}") if r == self.answer_with_error else f"ok {r}"
                for r in requests]


class Gate:
    """A leader's ``gather`` that waits until the test has every writer queued."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.open = threading.Event()

    def __call__(self) -> None:
        self.entered.set()
        assert self.open.wait(5)


def submit_all(committer: GroupCommit, requests: list, weights: dict | None = None) -> dict:
    """Every request from its own thread; returns each one's result or error."""
    outcomes: dict = {}

    def write(request):
        try:
            outcomes[request] = committer.submit(request, (weights or {}).get(request, 1))
        except BaseException as exc:  # each writer's own error, asserted by the test
            outcomes[request] = exc

    threads = [threading.Thread(target=write, args=(r,)) for r in requests]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # in order: the first opens the group, the others join
    return {"threads": threads, "outcomes": outcomes}


def finish(run: dict) -> dict:
    for thread in run["threads"]:
        thread.join(5)
    return run["outcomes"]


def test_writers_that_arrive_while_a_group_gathers_share_its_write():
    recorder, gate = Recorder(), Gate()
    committer = GroupCommit(recorder, max_weight=100, gather=gate)
    run = submit_all(committer, ["a", "b", "c", "d"])
    assert gate.entered.is_set() and recorder.groups == []
    gate.open.set()
    assert finish(run) == {r: f"ok {r}" for r in "abcd"}
    assert recorder.groups == [["a", "b", "c", "d"]]


def test_a_blocked_write_holds_only_its_own_group():
    """A group stuck on a lock; a writer that comes later opens and writes its own."""
    recorder = Recorder(hold="a")
    committer = GroupCommit(recorder, max_weight=100)
    stuck = submit_all(committer, ["a"])
    assert recorder.holding.wait(5)
    assert committer.submit("b") == "ok b"  # while "a" is still being written
    assert "a" not in stuck["outcomes"]
    recorder.release.set()
    assert finish(stuck) == {"a": "ok a"}
    assert recorder.groups == [["a"], ["b"]]


def test_a_group_is_bounded_by_weight():
    recorder, gate = Recorder(), Gate()
    committer = GroupCommit(recorder, max_weight=2, gather=gate)
    run = submit_all(committer, ["a", "b", "c", "d", "e"])
    gate.open.set()
    assert finish(run) == {r: f"ok {r}" for r in "abcde"}
    assert sorted(recorder.groups) == [["a", "b"], ["c", "d"], ["e"]]


def test_a_lone_request_heavier_than_a_group_still_goes_alone():
    recorder, gate = Recorder(), Gate()
    committer = GroupCommit(recorder, max_weight=10, gather=gate)
    run = submit_all(committer, ["a", "big", "c"], weights={"big": 1000})
    gate.open.set()
    assert finish(run) == {r: f"ok {r}" for r in ("a", "big", "c")}
    assert sorted(recorder.groups) == [["a"], ["big"], ["c"]]


def test_a_request_that_fails_its_group_fails_alone():
    recorder, gate = Recorder(fail_on="c"), Gate()
    committer = GroupCommit(recorder, max_weight=100, gather=gate)
    run = submit_all(committer, ["a", "b", "c", "d"])
    gate.open.set()
    outcomes = finish(run)
    assert outcomes["a"] == "ok a" and outcomes["b"] == "ok b" and outcomes["d"] == "ok d"
    assert isinstance(outcomes["c"], ValueError) and str(outcomes["c"]) == "bad request c"
    # The failed group of four, then each of its requests alone.
    assert [len(g) for g in recorder.groups] == [4, 1, 1, 1, 1]


def test_an_error_answer_reaches_only_its_writer():
    recorder, gate = Recorder(answer_with_error="b"), Gate()
    committer = GroupCommit(recorder, max_weight=100, gather=gate)
    run = submit_all(committer, ["a", "b", "c"])
    gate.open.set()
    outcomes = finish(run)
    assert str(outcomes["b"]) == "refused b" and outcomes["c"] == "ok c"
    assert len(recorder.groups) == 1  # no rerun: the group itself succeeded


def test_with_one_write_at_a_time_a_waiting_group_keeps_gathering():
    """``max_writes=1``: while "a" is being written, "b" leads the next group and
    waits for its turn with the group open, so "c" and "d" join it."""
    recorder = Recorder(hold="a")
    committer = GroupCommit(recorder, max_weight=100, max_writes=1)
    first = submit_all(committer, ["a"])
    assert recorder.holding.wait(5)
    rest = submit_all(committer, ["b", "c", "d"])
    assert recorder.groups == [["a"]]  # nothing else written while "a" holds the turn
    recorder.release.set()
    assert finish(first) == {"a": "ok a"}
    assert finish(rest) == {r: f"ok {r}" for r in "bcd"}
    assert recorder.groups == [["a"], ["b", "c", "d"]]


class Stopped(BaseException):
    """What killing a greenlet raises in it (GreenletExit is a BaseException too)."""


def test_a_leader_stopped_before_its_write_leaves_no_writer_waiting():
    gate = Gate()
    stopping = {"first": True}

    def gather() -> None:
        gate()
        if stopping.pop("first", False):
            raise Stopped

    recorder = Recorder()
    committer = GroupCommit(recorder, max_weight=100, gather=gather)
    run = submit_all(committer, ["a", "b"])
    gate.open.set()
    outcomes = finish(run)
    assert not any(t.is_alive() for t in run["threads"]), "a follower waits for ever"
    assert isinstance(outcomes["a"], Stopped), outcomes
    assert isinstance(outcomes["b"], RuntimeError), outcomes
    assert committer.submit("c") == "ok c"  # the stopped group was closed
    assert recorder.groups == [["c"]]


# ---------------------------------------------------------------- receipts

def test_the_receipt_backlog_refuses_past_either_bound_until_receipts_leave():
    backlog = Backlog(max_ids=10, max_user_ids=6)
    with backlog.admit("alice", 5):
        with pytest.raises(ValidationError) as refused:
            with backlog.admit("alice", 2):  # alice: 7 > 6
                pass
        assert refused.value.code == "rate_limited"
        with backlog.admit("bob", 5):  # 10 in all: the worker's bound, reached
            with pytest.raises(ValidationError):
                with backlog.admit("carol", 1):
                    pass
        assert backlog.total == 5
    assert backlog.total == 0
    with backlog.admit("alice", 6):
        pass


def test_a_receipt_over_the_backlog_gets_the_retryable_ack(app, notify, sio_client,
                                                          make_token):
    """Through the socket event: the ack is ``rate_limited`` (the reference client
    sends it again), nothing is marked, and the socket stays up."""
    (mine,) = notify("alice")
    alice = sio_client(auth={"token": make_token("alice")})
    services(app).receipt_backlog = Backlog(max_ids=0)
    reply = alice.emit("delivered", {"ids": [mine]}, callback=True)
    assert reply["error"]["code"] == "rate_limited", reply
    assert alice.is_connected()
    services(app).receipt_backlog = Backlog()
    assert alice.emit("delivered", {"ids": [mine]}, callback=True) == {"updated": 1}


def test_id_lists_of_any_length_are_one_statement(store_app):
    """A receipt group and mark_read send their ids as one parameter: whatever the
    length, one SQL text (an IN list per length filled sqlite3's statement cache)."""
    with store_app.app_context():
        with db.engine.begin() as conn:
            inserted = store.insert_notifications(conn, items("alice", 5) + items("bob", 1),
                                                  timedelta(seconds=60))
        alice, bob = [n.id for n in inserted[:5]], inserted[5].id
        texts: set[str] = set()

        def seen(_conn, _cursor, statement, *_args):
            if statement.lstrip().upper().startswith("UPDATE NOTIFICATIONS"):
                texts.add(statement)

        sa.event.listen(db.engine, "before_cursor_execute", seen)
        try:
            strangers = list(range(10**6, 10**6 + 20_000))
            assert write_receipts([Receipt("alice", [alice[0]])]) == [1]
            assert write_receipts([Receipt("alice", [alice[1], bob, *strangers[:6]]),
                                   Receipt("alice", [alice[1], alice[2]])]) == [1, 1]
            assert write_receipts([Receipt("alice", alice + strangers)]) == [2]
            assert len(texts) == 1, texts
            texts.clear()
            assert store.mark_read("alice", [alice[0]]) == 1
            assert store.mark_read("alice", [alice[1], bob, *strangers[:999]]) == 1
            assert len(texts) == 1, texts
        finally:
            sa.event.remove(db.engine, "before_cursor_execute", seen)
        rows = dict(db.session.execute(sa.select(Notification.id,
                                                 Notification.delivered_at)).all())
        assert all(rows[i] is not None for i in alice) and rows[bob] is None


def items(user: str, count: int = 1) -> list[NewNotification]:
    return [NewNotification(user, "t", f"n{i}", None, {"i": i}) for i in range(count)]


def keyed(user: str, key: str, title: str = "x") -> NotifyRequest:
    body = {"user_ids": [user], "type": "t", "title": title}
    return NotifyRequest([NewNotification(user, "t", title, None, {})], key, fingerprint(body))


def test_one_group_write_gives_each_request_its_own_ids_and_answer(store_app):
    with store_app.app_context():
        outcomes = store_group([NotifyRequest(items("alice", 2), None, ""),
                                NotifyRequest(items("bob", 3), None, "")])
        alice, bob = outcomes
        assert isinstance(alice, Stored) and isinstance(bob, Stored)
        assert [n["user_id"] for n in alice.delivery.response["notifications"]] == ["alice"] * 2
        assert [n["user_id"] for n in bob.delivery.response["notifications"]] == ["bob"] * 3
        ids = [n["id"] for o in outcomes for n in o.delivery.response["notifications"]]
        assert ids == sorted(ids) and len(set(ids)) == 5
        assert [p["id"] for p in bob.payloads] == ids[2:]
        assert [p["data"] for p in bob.payloads] == [{"i": 0}, {"i": 1}, {"i": 2}]
        assert store.unread_count("alice") == 2 and store.unread_count("bob") == 3


def test_keys_in_one_group_store_once_replay_and_conflict_per_request(store_app):
    with store_app.app_context():
        earlier = notify_users(["carol"], "t", "x", idempotency_key="old",
                               request_fingerprint=keyed("carol", "old").fingerprint)
        outcomes = store_group([
            keyed("alice", "k1"),              # new: stored
            keyed("alice", "k1"),              # same key and body in the group: a replay
            keyed("alice", "k1", title="y"),   # same key, other body: a conflict
            keyed("carol", "old"),             # key stored before: a replay
            keyed("carol", "old", title="y"),  # stored key, other body: a conflict
            NotifyRequest(items("bob"), None, ""),
        ])
        first, repeat, changed, old, old_changed, plain = outcomes
        assert isinstance(first, Stored) and not first.delivery.replayed
        assert repeat.delivery.replayed and repeat.payloads == []
        assert repeat.delivery.response == first.delivery.response
        assert isinstance(changed, IdempotencyConflict)
        assert old.delivery.replayed and old.delivery.response == earlier.response
        assert isinstance(old_changed, IdempotencyConflict)
        assert isinstance(plain, Stored) and len(plain.payloads) == 1
        assert store.unread_count("alice") == 1 and store.unread_count("carol") == 1
        assert store.unread_count("bob") == 1
        # The group's key was recorded with its answer.
        again = notify_users(["alice"], "t", "x", idempotency_key="k1",
                             request_fingerprint=keyed("alice", "k1").fingerprint)
        assert again.replayed and again.response == first.delivery.response


def test_concurrent_producers_each_get_their_own_stored_notification(store_app):
    """Twenty threads each notify their own user at once, through the committer:
    every notification is stored once, with its own id, for its own user, and the
    metrics count the transactions that stored them (one to twenty)."""
    before = scrape(store_app.test_client())
    barrier = threading.Barrier(20)
    answers, errors = {}, []

    def produce(n: int):
        with store_app.app_context():
            try:
                barrier.wait(5)
                answers[n] = notify_users([f"user{n}"], "t", "x").response
            except Exception as exc:  # recorded, then asserted empty
                errors.append(repr(exc))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    ids = [answers[n]["notifications"][0]["id"] for n in range(20)]
    assert len(set(ids)) == 20
    assert all(answers[n]["notifications"][0]["user_id"] == f"user{n}" for n in range(20))
    with store_app.app_context():
        assert all(store.unread_count(f"user{n}") == 1 for n in range(20))
    after = scrape(store_app.test_client())
    assert delta(before, after, "notifier_notifications_stored_total") == 20
    assert 1 <= delta(before, after, "notifier_notification_write_groups_total") <= 20
