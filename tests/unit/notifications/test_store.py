"""The store on SQLite and on PostgreSQL (a throwaway database per run)."""

from __future__ import annotations

import threading
from datetime import timedelta

import sqlalchemy as sa

from utils.extensions import db
from utils.notifications import store
from utils.notifications.models import NewNotification, Notification
from utils.notifications.notifier import (
    BULK,
    IDEMPOTENCY_TTL,
    IdempotencyConflict,
    NotifyRequest,
    Stored,
    fingerprint,
    notify_many,
    notify_users,
    store_group,
)
from utils.notifications.validation import notification_request


def add(user_id: str, count: int = 1, **fields) -> list[int]:
    items = [NewNotification(user_id, fields.get("type", "t"), fields.get("title", "x"),
                             fields.get("body"), fields.get("data", {})) for _ in range(count)]
    rows = store.insert_notifications(db.session.connection(), items, timedelta(seconds=10))
    db.session.commit()
    return [row.id for row in rows]


def test_batch_insert_gives_increasing_ids_and_round_trips_data(store_app):
    with store_app.app_context():
        ids = add("alice", 3, data={"nested": {"list": [1, "two", None]}, "unicode": "héllo ✓"})
        assert ids == sorted(ids) and len(set(ids)) == 3
        row = db.session.get(Notification, ids[0])
        assert row.to_dict()["data"] == {"nested": {"list": [1, "two", None]},
                                         "unicode": "héllo ✓"}
        assert row.to_dict()["created_at"].endswith("Z")


def test_after_and_page_and_unread(store_app):
    with store_app.app_context():
        ids = add("alice", 5)
        add("bob", 2)
        rows, more = store.after("alice", ids[1], 2)
        assert [r.id for r in rows] == ids[2:4] and more is True
        rows, more = store.after("alice", ids[3], 10)
        assert [r.id for r in rows] == [ids[4]] and more is False
        rows, cursor = store.page("alice", None, 3, unread_only=False)
        assert [r.id for r in rows] == ids[:1:-1] and cursor == ids[2]
        assert store.unread_count("alice") == 5
        assert store.mark_read("alice", [ids[0], ids[1]]) == 2
        assert store.mark_read("bob", [ids[2]]) == 0
        rows, _ = store.page("alice", None, 10, unread_only=True)
        assert [r.id for r in rows] == ids[:1:-1]
        assert store.mark_read("alice", None) == 3
        assert store.unread_count("alice") == 0
        assert store.unread_count("bob") == 2


def test_prune_removes_old_rows_remembers_the_watermark_and_never_reuses_ids(store_app):
    with store_app.app_context():
        old = add("alice", 3)
        db.session.execute(sa.update(Notification).where(Notification.id.in_(old))
                           .values(created_at=store.utcnow() - timedelta(days=100)))
        db.session.commit()
        fresh = add("alice", 1)
        assert store.prune(timedelta(days=90), IDEMPOTENCY_TTL) == 3
        assert store.pruned_through() == old[-1]
        assert [r.id for r in store.after("alice", 0, 10)[0]] == fresh
        db.session.execute(sa.delete(Notification))
        db.session.commit()
        assert add("alice", 1)[0] > fresh[0]  # ids only grow, even after deletes


def test_replay_flags_a_gap_when_the_cursor_predates_pruning(store_app, make_token_for):
    from utils.extensions import socketio

    with store_app.app_context():
        old = add("alice", 2)
        db.session.execute(sa.update(Notification).values(
            created_at=store.utcnow() - timedelta(days=100)))
        db.session.commit()
        kept = add("alice", 1)
        store.prune(timedelta(days=90), IDEMPOTENCY_TTL)
    token = make_token_for(store_app, "alice")
    behind = socketio.test_client(store_app, auth={"token": token, "last_id": old[0] - 1})
    done = [m["args"][0] for m in behind.get_received() if m["name"] == "sync_complete"][0]
    assert done["gap"] is True and done["replayed"] == 1 and done["last_id"] == kept[0]
    current = socketio.test_client(store_app, auth={"token": token, "last_id": old[-1]})
    done = [m["args"][0] for m in current.get_received() if m["name"] == "sync_complete"][0]
    assert done["gap"] is False
    behind.disconnect(), current.disconnect()


def test_idempotency_key_stores_once_and_detects_a_changed_body(store_app):
    with store_app.app_context():
        body = {"user_id": "alice", "type": "t", "title": "x"}
        first = notify_users(["alice"], "t", "x", idempotency_key="k",
                             request_fingerprint=fingerprint(body))
        again = notify_users(["alice"], "t", "x", idempotency_key="k",
                             request_fingerprint=fingerprint(body))
        assert again.replayed and again.response == first.response
        try:
            notify_users(["alice"], "t", "y", idempotency_key="k",
                         request_fingerprint=fingerprint({**body, "title": "y"}))
            raise AssertionError("a changed body must conflict")
        except IdempotencyConflict:
            pass
        assert store.unread_count("alice") == 1


def at_once(app, count: int, produce) -> list:
    """``produce()`` in ``count`` threads released together, each in its own app context;
    their answers, once none raised."""
    barrier = threading.Barrier(count)
    answers, errors = [], []

    def attempt():
        with app.app_context():
            try:
                barrier.wait(5)
                answers.append(produce())
            except Exception as exc:  # recorded, then asserted empty
                errors.append(repr(exc))
            finally:
                db.session.remove()

    threads = [threading.Thread(target=attempt) for _ in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    assert len(answers) == count
    return answers


def test_concurrent_duplicates_store_once(store_app):
    """Eight producers retry the same request at the same moment."""
    body = {"user_ids": ["alice", "bob"], "type": "t", "title": "x"}
    answers = at_once(store_app, 8, lambda: notify_users(
        ["alice", "bob"], "t", "x", idempotency_key="same",
        request_fingerprint=fingerprint(body)).response)
    assert all(answer == answers[0] for answer in answers)
    with store_app.app_context():
        assert store.unread_count("alice") == 1 and store.unread_count("bob") == 1


def objects(*bodies: dict):
    return [notification_request({"type": "t", "title": "x", **b}) for b in bodies]


def test_a_group_of_single_and_bulk_requests_answers_each_in_its_shape(store_app):
    """One transaction for a group holding a single request, a bulk request, the same
    bulk again with its key (answered from the first, in the group), and a request whose
    key an earlier group used with another body."""
    with store_app.app_context():
        notify_users(["zed"], "t", "x", idempotency_key="taken",
                     request_fingerprint=fingerprint({"a": 1}))
        single = NotifyRequest([NewNotification("alice", "t", "x", None, {})], None, "")
        batch = objects({"user_id": "bob"}, {"user_ids": ["carol", "dan"]}, {"user_id": "bob"})
        bulk = NotifyRequest.bulk(batch, "batch", fingerprint({"b": 1}, BULK))
        bulk_again = NotifyRequest.bulk(batch, "batch", fingerprint({"b": 1}, BULK))
        conflict = NotifyRequest.bulk(batch[:1], "taken", fingerprint({"a": 1}, BULK))
        first, second, third, fourth = store_group([single, bulk, bulk_again, conflict])
        assert isinstance(first, Stored) and isinstance(second, Stored)
        assert [n["user_id"] for n in first.delivery.response["notifications"]] == ["alice"]
        results = second.delivery.response["results"]
        assert [[n["user_id"] for n in r["notifications"]] for r in results] == [
            ["bob"], ["carol", "dan"], ["bob"]]
        assert [p["id"] for p in second.payloads] == [
            n["id"] for r in results for n in r["notifications"]]
        assert third.delivery.replayed and third.delivery.response == second.delivery.response
        assert third.payloads == []
        assert isinstance(fourth, IdempotencyConflict)
        assert store.unread_count("bob") == 2 and store.unread_count("zed") == 1


def test_concurrent_bulk_duplicates_store_once(store_app):
    """Six producers retry one bulk request at the same moment."""
    batch = objects({"user_id": "alice"}, {"user_ids": ["bob", "alice"]})
    answers = at_once(store_app, 6, lambda: notify_many(
        batch, "same-batch", fingerprint({"n": 1}, BULK)).response)
    assert all(answer == answers[0] for answer in answers)
    with store_app.app_context():
        assert store.unread_count("alice") == 2 and store.unread_count("bob") == 1
