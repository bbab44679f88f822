"""Delivery receipts' write: a group of receipts from many users is one UPDATE, on
SQLite and on PostgreSQL (a throwaway database per run), and each receipt is
answered with the ids it marked first."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from utils.extensions import db
from utils.notifications import store
from utils.notifications.models import NewNotification, Notification
from utils.notifications.receipts import Receipt, write_receipts


def add(user_id: str, count: int = 1) -> list[int]:
    items = [NewNotification(user_id, "t", f"n{i}", None, {}) for i in range(count)]
    with db.engine.begin() as conn:
        rows = store.insert_notifications(conn, items, timedelta(seconds=60))
    return [row.id for row in rows]


class Statements:
    """The UPDATEs of notifications sent to the database while in use."""

    def __init__(self) -> None:
        self.texts: list[str] = []

    def __enter__(self) -> Statements:
        sa.event.listen(db.engine, "before_cursor_execute", self.seen)
        return self

    def __exit__(self, *_exc) -> None:
        sa.event.remove(db.engine, "before_cursor_execute", self.seen)

    def seen(self, _conn, _cursor, statement, *_args) -> None:
        if statement.lstrip().upper().startswith("UPDATE NOTIFICATIONS"):
            self.texts.append(statement)


def delivered(*ids: int) -> dict[int, tuple[bool, bool]]:
    """id -> (delivered_at set, check_at cleared)."""
    rows = db.session.execute(sa.select(Notification.id, Notification.delivered_at,
                                        Notification.check_at)
                              .where(Notification.id.in_(ids))).all()
    db.session.rollback()
    return {row.id: (row.delivered_at is not None, row.check_at is None) for row in rows}


def test_a_group_from_many_users_is_one_update_marking_only_each_users_own(store_app):
    with store_app.app_context():
        alice, bob, carol = add("alice", 3), add("bob", 2), add("carol", 1)
        group = [
            Receipt("alice", [alice[0], alice[1], bob[0]]),  # bob's id: not alice's to mark
            Receipt("bob", [bob[0], bob[1], bob[1]]),  # an id twice in one receipt
            Receipt("alice", [alice[1], alice[2]]),  # alice[1] counts for the first
            Receipt("carol", [10**9, carol[0]]),  # an id that does not exist
            Receipt("dave", [alice[0]]),  # no notification of dave's at all
        ]
        with Statements() as seen:
            assert write_receipts(group) == [2, 2, 1, 1, 0]
        assert len(seen.texts) == 1, seen.texts
        assert set(delivered(*alice, *bob, *carol).values()) == {(True, True)}
        # Marked once: a second group marks nothing again, still in one statement.
        with Statements() as seen:
            assert write_receipts([Receipt("alice", alice), Receipt("bob", bob)]) == [0, 0]
        assert len(seen.texts) == 1


def test_only_undelivered_rows_change_and_the_text_is_the_same_for_any_group(store_app):
    with store_app.app_context():
        alice, bob = add("alice", 4), add("bob", 1)
        texts: set[str] = set()
        for group in ([Receipt("alice", [alice[0]])],
                      [Receipt("alice", alice[:3]), Receipt("bob", bob)],
                      [Receipt(f"user{i}", [10**6 + i]) for i in range(500)]):
            with Statements() as seen:
                write_receipts(group)
            texts.update(seen.texts)
        assert len(texts) == 1, texts  # one SQL text: no statement per group size
        assert delivered(*alice) == {alice[0]: (True, True), alice[1]: (True, True),
                                     alice[2]: (True, True), alice[3]: (False, False)}


def test_mark_delivered_answers_per_user_including_users_with_nothing_marked(store_app):
    with store_app.app_context():
        alice, bob = add("alice", 2), add("bob", 1)
        with db.engine.begin() as conn:
            marked = store.mark_delivered(conn, {"alice": alice, "bob": [alice[0]],
                                                 "carol": []})
        assert marked == {"alice": set(alice), "bob": set(), "carol": set()}
        with db.engine.begin() as conn:
            assert store.mark_delivered(conn, {}) == {}
            assert store.mark_delivered(conn, {"bob": bob}) == {"bob": set(bob)}
