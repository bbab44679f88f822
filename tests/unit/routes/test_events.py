"""Socket events: replay on connect, sync, mark_read, error acks, token expiry."""

import logging

import pytest

from utils.realtime.registry import ExpirySweeper, SocketRegistry
from utils.realtime.replay import ReplayGuard
from utils.services import services


def events(test_client, name=None):
    """Everything the socket received so far (kept across calls), or one event's args."""
    seen = test_client.__dict__.setdefault("_seen", [])
    try:
        new = test_client.get_received()
    except RuntimeError:  # disconnected by the server: read what it had queued
        new, test_client.queue[:] = list(test_client.queue), []
    seen.extend((m["name"], m["args"][0] if m["args"] else None) for m in new)
    return [a for n, a in seen if n == name] if name else list(seen)


def connect(sio_client, make_token, user="alice", **auth):
    return sio_client(auth={"token": make_token(user), **auth})


def test_connect_without_last_id_gets_sync_complete_with_nothing_replayed(sio_client,
                                                                          make_token, notify):
    notify("alice")
    client = connect(sio_client, make_token)
    names = [n for n, _ in events(client)]
    assert names == ["auth_success", "sync_complete"]


def test_replay_sends_missed_notifications_oldest_first_then_sync_complete(
        sio_client, make_token, notify):
    ids = [notify("alice", title=f"n{i}")[0] for i in range(4)]
    notify("bob")
    client = connect(sio_client, make_token, last_id=ids[0])
    got = events(client)
    assert [n for n, _ in got] == ["auth_success", "notification", "notification",
                                   "notification", "sync_complete"]
    assert [a["id"] for n, a in got if n == "notification"] == ids[1:]
    assert got[-1][1] == {"last_id": ids[-1], "replayed": 3, "has_more": False, "gap": False}


def test_replay_with_nothing_missed(sio_client, make_token, notify):
    last = notify("alice")[0]
    client = connect(sio_client, make_token, last_id=last)
    assert events(client, "sync_complete") == [
        {"last_id": last, "replayed": 0, "has_more": False, "gap": False}]


def test_replay_accepts_last_id_as_string_and_zero(sio_client, make_token, notify):
    notify("alice")
    assert events(connect(sio_client, make_token, last_id="0"), "sync_complete")[0][
        "replayed"] == 1
    assert events(connect(sio_client, make_token, last_id=0), "sync_complete")[0][
        "replayed"] == 1


@pytest.mark.parametrize("bad", ["abc", -5, 1.5, [1], {"x": 1}, True])
def test_unusable_last_id_counts_as_none(sio_client, make_token, notify, bad):
    notify("alice")
    client = connect(sio_client, make_token, last_id=bad)
    assert client.is_connected()
    assert events(client, "sync_complete")[0]["replayed"] == 0


def test_replay_is_capped_at_100_and_signals_more(client, api_headers, sio_client, make_token):
    body = {"user_ids": ["alice"], "type": "t", "title": "x"}
    for _ in range(105):
        client.post("/api/notifications", headers=api_headers, json=body)
    socket = connect(sio_client, make_token, last_id=0)
    replayed = events(socket, "notification")
    assert len(replayed) == 100
    done = events(socket, "sync_complete")[0]
    assert done == {"last_id": replayed[-1]["id"], "replayed": 100, "has_more": True,
                    "gap": False}
    ack = socket.emit("sync", {"after_id": done["last_id"], "limit": 100}, callback=True)
    assert [n["id"] for n in ack["notifications"]] == list(range(101, 106))
    assert ack["has_more"] is False


def test_sync_pages(sio_client, make_token, notify):
    ids = [notify("alice")[0] for _ in range(5)]
    socket = connect(sio_client, make_token)
    first = socket.emit("sync", {"after_id": 0, "limit": 2}, callback=True)
    assert [n["id"] for n in first["notifications"]] == ids[:2]
    assert first["has_more"] is True
    rest = socket.emit("sync", {"after_id": ids[1], "limit": 10}, callback=True)
    assert [n["id"] for n in rest["notifications"]] == ids[2:]
    assert rest["has_more"] is False


def test_sync_sees_only_the_users_own(sio_client, make_token, notify):
    notify("bob")
    socket = connect(sio_client, make_token)
    assert socket.emit("sync", {"after_id": 0}, callback=True)["notifications"] == []


@pytest.mark.parametrize("event, payload", [
    ("sync", None), ("sync", "x"), ("sync", {"after_id": -1}), ("sync", {"after_id": "a"}),
    ("sync", {"after_id": 0, "limit": 101}), ("sync", {"after_id": 0, "limit": 0}),
    ("mark_read", None), ("mark_read", {"ids": "1"}), ("mark_read", {"all": False}),
    ("mark_read", [1, 2]), ("mark_read", {"ids": [0]}),
    ("no_such_event", {"x": 1}),
])
def test_bad_event_input_gets_an_error_ack_and_keeps_the_connection(
        sio_client, make_token, event, payload):
    socket = connect(sio_client, make_token)
    ack = socket.emit(event, payload, callback=True) if payload is not None else \
        socket.emit(event, callback=True)
    assert set(ack) == {"error"}
    assert isinstance(ack["error"]["code"], str) and ack["error"]["message"]
    assert socket.is_connected()
    assert "has_more" in socket.emit("sync", {"after_id": 0}, callback=True)


def test_extra_arguments_get_an_error_ack(sio_client, make_token):
    socket = connect(sio_client, make_token)
    ack = socket.emit("sync", {"after_id": 0}, "extra", callback=True)
    assert ack["error"]["code"] == "validation_error"
    assert socket.is_connected()


def test_mark_read_acks_and_tells_the_other_sockets(sio_client, make_token, notify):
    ids = [notify("alice")[0] for _ in range(3)]
    tab, phone = connect(sio_client, make_token), connect(sio_client, make_token)
    other = connect(sio_client, make_token, user="bob")
    for s in (tab, phone, other):
        s.get_received()
    ack = tab.emit("mark_read", {"ids": ids[:2]}, callback=True)
    assert ack == {"updated": 2, "unread_count": 1}
    assert events(phone, "unread_count") == [{"unread_count": 1}]
    assert events(tab, "unread_count") == []
    assert events(other) == []
    assert tab.emit("mark_read", {"all": True}, callback=True) == {"updated": 1,
                                                                   "unread_count": 0}


def test_mark_read_cannot_touch_other_users(sio_client, make_token, notify):
    bobs = notify("bob")
    alice = connect(sio_client, make_token)
    assert alice.emit("mark_read", {"ids": bobs}, callback=True)["updated"] == 0


# --- stored notifications that cannot be delivered ----------------------------------

def store_raw(app, user_id, data_json):
    """A notification written straight into the database (as an older version or a
    manual fix could have), its ``data`` column holding ``data_json`` as it is."""
    import sqlalchemy as sa

    from utils.extensions import db

    with app.app_context():
        row_id = db.session.execute(sa.text(
            "INSERT INTO notifications (user_id, type, title, data, created_at) "
            "VALUES (:user_id, 't', 'raw', :data, CURRENT_TIMESTAMP) RETURNING id"),
            {"user_id": user_id, "data": data_json}).scalar_one()
        db.session.commit()
    return row_id


UNDELIVERABLE = {
    "nested 1000 deep": "[" * 1000 + "]" * 1000,  # too deep to load at all
    "nested 600 deep": "[" * 600 + "]" * 600,  # loads, then breaks the emit
    "NaN": '{"score": NaN}',  # emitted as "NaN": JSON.parse throws in browsers
    "Infinity": '{"scores": [1, -Infinity]}',
}


@pytest.mark.parametrize("data_json", UNDELIVERABLE.values(), ids=UNDELIVERABLE)
def test_replay_and_sync_skip_a_stored_notification_that_cannot_be_delivered(
        app, sio_client, make_token, notify, caplog, data_json):
    before = notify("alice")[0]
    bad = store_raw(app, "alice", data_json)
    after = notify("alice")[0]
    caplog.set_level(logging.WARNING, logger="utils.realtime.replay")
    socket = connect(sio_client, make_token, last_id=0)
    assert [n["id"] for n in events(socket, "notification")] == [before, after]
    assert events(socket, "sync_complete") == [
        {"last_id": after, "replayed": 2, "has_more": False, "gap": False}]
    ack = socket.emit("sync", {"after_id": 0}, callback=True)
    assert [n["id"] for n in ack["notifications"]] == [before, after]
    # One warning line per pass (the replay, then the sync), with the id, no traceback.
    logged = [(r.levelno, f"notification {bad} " in r.getMessage(), r.exc_info)
              for r in caplog.records if r.name == "utils.realtime.replay"]
    assert logged == [(logging.WARNING, True, None)] * 2
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


def test_replay_moves_the_cursor_past_an_undeliverable_last_notification(
        app, sio_client, make_token, notify):
    first = notify("alice")[0]
    bad = store_raw(app, "alice", '{"score": NaN}')
    socket = connect(sio_client, make_token, last_id=first)
    assert events(socket, "notification") == []
    assert events(socket, "sync_complete") == [
        {"last_id": bad, "replayed": 0, "has_more": False, "gap": False}]


# --- the replay guard ---------------------------------------------------------------

def n(i):
    return {"id": i}


def test_guard_holds_live_notifications_during_replay_and_releases_in_order():
    guard = ReplayGuard()
    guard.begin("s1")
    assert not guard.admit("s1", n(12))
    assert not guard.admit("s1", n(11))
    assert not guard.admit("s1", n(9))
    released = guard.finish("s1", replayed_upto=10)
    assert [x["id"] for x in released] == [11, 12]  # 9 was replayed already


def test_guard_drops_only_what_the_replay_sent():
    guard = ReplayGuard()
    guard.begin("s1")
    guard.finish("s1", replayed_upto=10)
    assert not guard.admit("s1", n(10))
    assert guard.admit("s1", n(12))
    assert guard.admit("s1", n(11))  # out of order from concurrent producers: kept
    assert guard.admit("other", n(1))


def test_guard_forgets_sockets():
    guard = ReplayGuard()
    guard.begin("s1")
    guard.forget("s1")
    assert guard.admit("s1", n(1))


def test_notification_stored_during_replay_arrives_once_and_in_order(
        app, sio_client, make_token, notify, monkeypatch):
    """A producer commits and emits while the replay query is running: the socket
    gets it once, after the replayed ones."""
    from utils.notifications import store
    from utils.realtime import replay as events_module

    first = notify("alice")[0]
    real_after = store.after
    injected = []

    def after_with_a_concurrent_producer(user_id, after_id, limit):
        rows = real_after(user_id, after_id, limit)
        if not injected:
            # Stored after the replay read the table: only the live emit carries it.
            injected.extend(notify("alice", title="during replay"))
        return rows

    monkeypatch.setattr(events_module.store, "after", after_with_a_concurrent_producer)
    socket = connect(sio_client, make_token, last_id=0)
    ids = [a["id"] for a in events(socket, "notification")]
    assert ids == [first, injected[0]]
    assert events(socket, "sync_complete")[0]["last_id"] == injected[0]


def test_notification_read_by_replay_and_emitted_live_arrives_once(
        app, sio_client, make_token, notify, monkeypatch):
    """The other side of the race: stored before the replay query, emitted after it."""
    from utils.notifications import notifier

    real_emit = notifier.emit_notification
    held_back = []
    monkeypatch.setattr(notifier, "emit_notification",
                        lambda user_id, payload, *rest: held_back.append((user_id, payload)))
    stored = notify("alice")[0]  # committed; its emit is held back
    monkeypatch.setattr(notifier, "emit_notification", real_emit)

    guard = services(app).realtime.guard
    original_finish = guard.finish

    def finish_after_the_late_emit(sid, upto):
        for user_id, payload in held_back:
            real_emit(user_id, payload)  # the producer's emit lands mid-replay
        return original_finish(sid, upto)

    monkeypatch.setattr(guard, "finish", finish_after_the_late_emit)
    socket = connect(sio_client, make_token, last_id=0)
    assert held_back, "the producer's emit must have been held back"
    assert [a["id"] for a in events(socket, "notification")] == [stored]


# --- token expiry ----------------------------------------------------------------

def test_expired_token_disconnects_the_socket(app, sio_client, make_token):
    """The sweeper's clock is moved, not waited for."""
    import time


    rt = services(app).realtime
    short = sio_client(auth={"token": make_token("alice", ttl=30)})
    keeper = sio_client(auth={"token": make_token("alice", ttl=3600)})
    clock = {"now": time.time() + 10}
    sweeper = ExpirySweeper(rt.registry, 1.0, rt.sweeper.on_expired, lambda f: None,
                            lambda s: None, clock=lambda: clock["now"])
    assert sweeper.sweep_once() == 0
    assert short.is_connected()
    clock["now"] = time.time() + 31
    assert sweeper.sweep_once() == 1
    assert events(short, "token_expired") == [{"code": "token_expired"}]
    assert not short.is_connected()
    assert keeper.is_connected()
    assert rt.registry.count_for("alice") == 1


def test_sweeper_runs_in_the_background(app, sio_client, make_token):
    """The real sweeper task ends a 2-second token within a couple of ticks."""
    import time

    short = sio_client(auth={"token": make_token("alice", ttl=1)})
    deadline = time.monotonic() + 5
    while short.is_connected() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not short.is_connected()
    assert events(short, "token_expired") == [{"code": "token_expired"}]


def test_registry_skips_sockets_that_already_left():
    registry = SocketRegistry()
    registry.add("a", "alice", 100.0)
    registry.add("b", "alice", 100.0)
    registry.remove("a")
    assert registry.pop_expired(101.0) == ["b"]
    assert registry.pop_expired(200.0) == []
    assert registry.count_for("alice") == 1


# --- delivered: a raw handler ------------------------------------------------------------

def sid_of(test_client):
    from utils.extensions import socketio

    return socketio.server.manager.sid_from_eio_sid(test_client.eio_sid, "/")


def test_delivered_runs_without_flask_contexts_and_its_group_write_in_one(
        app, sio_client, make_token, notify, monkeypatch):
    """What makes a receipt cheap: no Flask-SocketIO request context per event, and
    no app context but the one its group's write pushes."""
    import flask

    import routes.events
    from utils.notifications import receipts

    contexts = []
    record, write = routes.events.record_receipt, receipts._write_receipts

    def spy_record(user_id, ids, app):
        contexts.append(("event", flask.has_app_context(), flask.has_request_context()))
        return record(user_id, ids, app)

    def spy_write(group):
        contexts.append(("write", flask.has_app_context(), flask.has_request_context()))
        return write(group)

    monkeypatch.setattr(routes.events, "record_receipt", spy_record)
    monkeypatch.setattr(receipts, "_write_receipts", spy_write)
    (nid,) = notify("alice")
    socket = connect(sio_client, make_token)
    assert socket.emit("delivered", {"ids": [nid]}, callback=True) == {"updated": 1}
    assert socket.emit("delivered", {"ids": [nid]}, callback=True) == {"updated": 0}
    assert contexts == [("event", False, False), ("write", True, False)] * 2


@pytest.mark.parametrize("args", [(), (None,), ({"ids": []},), ({"ids": [1]}, "extra"),
                                  ({"ids": "1"},), ([1, 2],)])
def test_a_bad_delivered_gets_the_validation_error_ack(sio_client, make_token, args):
    socket = connect(sio_client, make_token)
    ack = socket.emit("delivered", *args, callback=True)
    assert set(ack) == {"error"}
    assert ack["error"]["code"] == "validation_error" and ack["error"]["message"]
    assert socket.is_connected()


def test_delivered_from_a_socket_the_registry_forgot_is_not_connected(app, sio_client,
                                                                      make_token, notify):
    (nid,) = notify("alice")
    socket = connect(sio_client, make_token)
    services(app).realtime.registry.remove(sid_of(socket))
    ack = socket.emit("delivered", {"ids": [nid]}, callback=True)
    assert ack["error"]["code"] == "not_connected"


def test_delivered_draws_on_the_sockets_event_bucket_and_a_flood_closes_it(tmp_path):
    from tests.support.app import ORIGIN, build_app
    from utils.auth.tokens import create_access_token
    from utils.extensions import socketio

    app = build_app(tmp_path, SOCKET_EVENT_BURST="2", SOCKET_EVENT_RATE="0.01",
                    SOCKET_FLOOD_LIMIT="3")
    with app.app_context():
        token = create_access_token("alice", 3600)
    socket = socketio.test_client(app, auth={"token": token}, headers={"Origin": ORIGIN})
    assert socket.emit("delivered", {"ids": [1]}, callback=True) == {"updated": 0}
    assert "notifications" in socket.emit("sync", {"after_id": 0}, callback=True)
    # The bucket is shared: a receipt after a sync is refused like any other event.
    refused = socket.emit("delivered", {"ids": [1]}, callback=True)
    assert refused == {"error": {"code": "rate_limited", "message": "too many events; slow down"}}
    assert socket.emit("sync", {"after_id": 0}, callback=True)["error"]["code"] == "rate_limited"
    assert socket.is_connected()
    socket.emit("delivered", {"ids": [1]})  # the third refusal in a row
    assert not socket.is_connected()
