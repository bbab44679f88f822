"""A user's control over pushes (issue 23), with the test client and one dispatcher pass
at a time: a subscription turned off (PATCH /api/push/subscriptions/<id>), quiet hours
read from an injected wall clock, pushes folded by collapse_key, and what a folded push
carries (its body's line, "folded", the Topic). The real workers, the push service and
the timing are tested in tests/server/test_push_control.py."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
import sqlalchemy as sa

from tests.support.push_service import VapidKeys, b64url
from utils.config import ConfigError, load_settings
from utils.extensions import db
from utils.notifications.models import Notification, utcnow
from utils.push import sender, sends
from utils.push.models import PushSend
from utils.services import services

APPLE = "https://web.push.apple.com"
SEOUL = ZoneInfo("Asia/Seoul")
NIGHT = {"timezone": "Asia/Seoul", "quiet_hours": [{"start": "22:00", "end": "07:00"}]}


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def subscribe(client, headers, name: str) -> int:
    body = {"endpoint": f"{APPLE}/{name}", "expirationTime": None,
            "keys": {"p256dh": VapidKeys.generate().public, "auth": b64url(b"sixteen-bytes-ok")}}
    response = client.post("/api/push/subscriptions", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def set_preferences(client, headers, **prefs) -> None:
    response = client.put("/api/preferences", json=prefs, headers=headers)
    assert response.status_code == 200, response.get_json()


def queued(app) -> list[sa.Row]:
    with app.app_context(), db.engine.connect() as conn:
        return list(conn.execute(sa.select(PushSend.__table__).order_by(PushSend.id)))


def pass_checks(app) -> None:
    """One pass of the delivery checks (its pushes queued, none sent)."""
    with app.app_context():
        services(app).dispatcher.check_deliveries()


def wall(app, moment: datetime) -> None:
    """Quiet hours read the time of day ``moment`` from now on."""
    services(app).dispatcher.checks.wall_clock = lambda: moment


def make_due(app) -> None:
    with app.app_context():
        db.session.execute(sa.update(PushSend).values(due_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()


def claim(app) -> tuple[list[sends.Job], list[int]]:
    """Claim every due send as the send queue does (no send is made)."""
    with app.app_context():
        _, jobs, dropped = services(app).dispatcher.sends._claim_sends(utcnow(), 50, set())
    return jobs, dropped


@pytest.fixture
def alice(make_token):
    return bearer(make_token("alice"))


# -- a subscription turned off --------------------------------------------------------

def test_patch_turns_a_subscription_off_and_on_and_the_list_says_so(client, alice):
    sub_id = subscribe(client, alice, "phone")
    off = client.patch(f"/api/push/subscriptions/{sub_id}", json={"enabled": False},
                       headers=alice)
    assert off.status_code == 200
    (listed,) = client.get("/api/push/subscriptions", headers=alice).get_json()["subscriptions"]
    assert off.get_json() == listed
    assert listed["id"] == sub_id and listed["enabled"] is False
    assert listed["origin"] == APPLE and "phone" not in json.dumps(listed)
    on = client.patch(f"/api/push/subscriptions/{sub_id}", json={"enabled": True},
                      headers={**alice, "Content-Type": "application/merge-patch+json"})
    assert on.status_code == 200 and on.get_json()["enabled"] is True


@pytest.mark.parametrize("path", ["/api/push/subscriptions/{theirs}",
                                  "/api/push/subscriptions/999999",
                                  "/api/push/subscriptions/99999999999999999999"])
def test_patch_of_a_subscription_not_the_users_is_404(client, make_token, alice, path):
    theirs = subscribe(client, bearer(make_token("bob")), "bobs-phone")
    response = client.patch(path.format(theirs=theirs), json={"enabled": False}, headers=alice)
    assert response.status_code == 404
    assert response.get_json()["error"]["code"] == "not_found"
    (bobs,) = client.get("/api/push/subscriptions",
                         headers=bearer(make_token("bob"))).get_json()["subscriptions"]
    assert bobs["enabled"] is True


@pytest.mark.parametrize("body", [{}, {"enabled": "false"}, {"enabled": 0}, {"enabled": None},
                                  {"enabled": False, "name": "x"}, [False], "false"])
def test_patch_with_a_bad_body_is_400(client, alice, body):
    sub_id = subscribe(client, alice, "phone")
    response = client.patch(f"/api/push/subscriptions/{sub_id}", json=body, headers=alice)
    assert response.status_code == 400, response.get_json()
    assert response.get_json()["error"]["code"] == "validation_error"


def test_patch_needs_a_user_token(client, alice):
    sub_id = subscribe(client, alice, "phone")
    response = client.patch(f"/api/push/subscriptions/{sub_id}", json={"enabled": False})
    assert response.status_code == 401


def test_a_subscription_turned_off_gets_no_push_and_is_kept(app, client, alice, notify):
    phone = subscribe(client, alice, "phone")
    laptop = subscribe(client, alice, "laptop")
    client.patch(f"/api/push/subscriptions/{laptop}", json={"enabled": False}, headers=alice)
    (nid,) = notify("alice", push="always")
    pass_checks(app)
    assert [(s.notification_id, s.subscription_id) for s in queued(app)] == [(nid, phone)]
    ids = [s["id"] for s in client.get("/api/push/subscriptions",
                                        headers=alice).get_json()["subscriptions"]]
    assert sorted(ids) == sorted([phone, laptop])


def test_a_push_queued_before_its_subscription_was_turned_off_is_dropped(app, client, alice,
                                                                         notify):
    phone = subscribe(client, alice, "phone")
    notify("alice", push="always")
    pass_checks(app)
    client.patch(f"/api/push/subscriptions/{phone}", json={"enabled": False}, headers=alice)
    jobs, dropped = claim(app)
    assert jobs == [] and dropped == [queued(app)[0].id]


# -- quiet hours ------------------------------------------------------------------------

def test_a_push_inside_quiet_hours_waits_for_the_windows_end(app, client, alice, notify):
    subscribe(client, alice, "phone")
    set_preferences(client, alice, **NIGHT)
    wall(app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))  # 7 h 30 min before 07:00
    notify("alice", push="always")
    before = utcnow()
    pass_checks(app)
    after = utcnow()
    (send,) = queued(app)
    assert send.deferred is True
    wait = timedelta(hours=7, minutes=30)
    assert before + wait <= send.due_at <= after + wait


def test_a_push_outside_quiet_hours_goes_at_once(app, client, alice, notify):
    subscribe(client, alice, "phone")
    set_preferences(client, alice, **NIGHT)
    wall(app, datetime(2026, 12, 6, 12, 0, tzinfo=SEOUL))
    notify("alice", push="always")
    pass_checks(app)
    (send,) = queued(app)
    assert send.deferred is False and send.due_at <= utcnow()


def test_quiet_hours_are_each_users_own(app, client, alice, make_token, notify):
    """Bob has no quiet hours; Carol's are in New York, where it is 09:30."""
    mine = subscribe(client, alice, "alice-phone")
    subscribe(client, bearer(make_token("bob")), "bob-phone")
    carol = bearer(make_token("carol"))
    subscribe(client, carol, "carol-phone")
    set_preferences(client, alice, **NIGHT)
    set_preferences(client, carol, timezone="America/New_York",
                    quiet_hours=[{"start": "22:00", "end": "07:00"}])
    wall(app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))
    notify("alice", "bob", "carol", push="always")
    pass_checks(app)
    deferred = {s.subscription_id: s.deferred for s in queued(app)}
    assert sorted(deferred.values()) == [False, False, True]
    assert deferred[mine] is True


def test_a_critical_push_ignores_quiet_hours(app, client, alice, notify):
    subscribe(client, alice, "phone")
    set_preferences(client, alice, **NIGHT)
    wall(app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))
    (critical,) = notify("alice", push="always", critical=True)
    (other,) = notify("alice", push="always")
    pass_checks(app)
    sent = {s.notification_id: s for s in queued(app)}
    assert sent[critical].deferred is False and sent[critical].due_at <= utcnow()
    assert sent[other].deferred is True and sent[other].due_at > utcnow() + timedelta(hours=7)


def test_an_auto_push_is_held_when_its_check_falls_due_in_quiet_hours(app, client, alice,
                                                                     notify):
    subscribe(client, alice, "phone")
    set_preferences(client, alice, **NIGHT)
    wall(app, datetime(2026, 12, 7, 6, 59, tzinfo=SEOUL))
    (nid,) = notify("alice")
    with app.app_context():
        db.session.execute(sa.update(Notification).values(check_at=utcnow()))
        db.session.commit()
    pass_checks(app)
    (send,) = queued(app)
    assert send.notification_id == nid and send.deferred is True
    assert timedelta(seconds=55) < send.due_at - utcnow() <= timedelta(seconds=60)


@pytest.mark.parametrize("mark", ["read", "delivered"])
def test_a_deferred_push_read_or_delivered_meanwhile_is_dropped_even_when_always(
        app, client, alice, notify, mark):
    subscribe(client, alice, "phone")
    set_preferences(client, alice, **NIGHT)
    wall(app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))
    (nid,) = notify("alice", push="always")
    pass_checks(app)
    with app.app_context():
        db.session.execute(sa.update(Notification).values(**{f"{mark}_at": utcnow()}))
        db.session.commit()
    make_due(app)
    jobs, dropped = claim(app)
    assert jobs == [] and len(dropped) == 1


def test_an_always_push_not_deferred_is_sent_though_delivered(app, client, alice, notify):
    subscribe(client, alice, "phone")
    (nid,) = notify("alice", push="always")
    pass_checks(app)
    with app.app_context():
        db.session.execute(sa.update(Notification).values(delivered_at=utcnow()))
        db.session.commit()
    jobs, dropped = claim(app)
    assert [j.notification["id"] for j in jobs] == [nid] and dropped == []


def test_a_deferred_push_of_a_notification_stored_already_read_still_goes(app, client, alice,
                                                                          notify):
    """in_app muted: stored read (no device will acknowledge it) and pushed "always";
    quiet hours hold its push, which then goes: nobody read it meanwhile."""
    subscribe(client, alice, "phone")
    set_preferences(client, alice, channels={"in_app": False}, **NIGHT)
    wall(app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))
    (nid,) = notify("alice")
    pass_checks(app)
    (send,) = queued(app)
    assert send.deferred is True
    make_due(app)
    jobs, dropped = claim(app)
    assert [j.notification["id"] for j in jobs] == [nid] and dropped == []


def test_the_default_wall_clock_is_the_real_utc_time():
    from utils.push.checks import utc_wall_clock

    moment = utc_wall_clock()
    assert moment.tzinfo is not None
    assert abs(moment - datetime.now(UTC)) < timedelta(seconds=5)


# -- collapsed pushes -------------------------------------------------------------------

def test_one_pass_folds_a_keys_notifications_into_one_push_per_subscription(app, client,
                                                                            alice, notify):
    subscribe(client, alice, "phone")
    subscribe(client, alice, "laptop")
    ids = [notify("alice", push="always", collapse_key="post:42")[0] for _ in range(3)]
    (other,) = notify("alice", push="always", collapse_key="post:43")
    (plain,) = notify("alice", push="always")
    before = utcnow()
    pass_checks(app)
    rows = queued(app)
    folded = [s for s in rows if s.collapse_key == "post:42"]
    assert len(folded) == 2  # one per subscription
    assert {(s.notification_id, s.folded, s.deferred) for s in folded} == {(ids[-1], 2, True)}
    collapse = timedelta(seconds=services(app).settings.push_collapse_seconds)
    assert all(before + collapse <= s.due_at <= utcnow() + collapse for s in folded)
    assert {(s.notification_id, s.folded) for s in rows if s.collapse_key == "post:43"} == {
        (other, 0)}
    assert {(s.deferred, s.collapse_key) for s in rows if s.notification_id == plain} == {
        (False, None)}


def test_a_later_pass_folds_into_the_unclaimed_push_keeping_its_due_time(app, client, alice,
                                                                        notify):
    subscribe(client, alice, "phone")
    notify("alice", push="always", collapse_key="post:42")
    pass_checks(app)
    (first,) = queued(app)
    later = [notify("alice", push="always", collapse_key="post:42")[0] for _ in range(2)]
    pass_checks(app)
    (send,) = queued(app)
    assert (send.id, send.notification_id, send.folded) == (first.id, later[-1], 2)
    assert send.due_at == first.due_at
    assert send.expires_at >= first.expires_at


def test_another_users_key_does_not_fold_with_yours(app, client, alice, make_token, notify):
    subscribe(client, alice, "alice-phone")
    subscribe(client, bearer(make_token("bob")), "bob-phone")
    notify("alice", "bob", push="always", collapse_key="post:42")
    pass_checks(app)
    assert [s.folded for s in queued(app)] == [0, 0]


def test_a_claimed_push_is_not_folded_into_a_new_one_is_queued(app, client, alice, notify):
    subscribe(client, alice, "phone")
    notify("alice", push="always", collapse_key="post:42")
    pass_checks(app)
    with app.app_context():
        db.session.execute(sa.update(PushSend).values(attempts=1))  # under way, or retried
        db.session.commit()
    (nid,) = notify("alice", push="always", collapse_key="post:42")
    pass_checks(app)
    first, second = queued(app)
    assert (first.attempts, first.folded) == (1, 0)
    assert (second.notification_id, second.folded, second.attempts) == (nid, 0, 0)


def test_a_collapsed_push_in_quiet_hours_waits_for_the_windows_end(app, client, alice, notify):
    subscribe(client, alice, "phone")
    set_preferences(client, alice, **NIGHT)
    wall(app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))
    notify("alice", push="always", collapse_key="post:42")
    pass_checks(app)
    (send,) = queued(app)
    assert send.deferred is True
    assert send.due_at - utcnow() > timedelta(hours=7, minutes=29)
    (critical,) = notify("alice", push="always", collapse_key="post:42", critical=True)
    pass_checks(app)
    (send,) = queued(app)  # the critical one folds in and brings the push forward
    assert (send.notification_id, send.folded) == (critical, 1)
    assert send.due_at - utcnow() <= timedelta(
        seconds=services(app).settings.push_collapse_seconds)


def test_push_collapse_seconds_sets_the_wait(tmp_path, make_token_for):
    from tests.support.app import build_app

    app = build_app(tmp_path, PUSH_COLLAPSE_SECONDS="0")
    client = app.test_client()
    headers = bearer(make_token_for(app, "alice"))
    subscribe(client, headers, "phone")
    from tests.support.app import API_KEY

    client.post("/api/notifications", headers=bearer(API_KEY), json={
        "user_id": "alice", "type": "t", "title": "x", "push": "always",
        "collapse_key": "k"})
    pass_checks(app)
    (send,) = queued(app)
    assert send.deferred is True and send.due_at <= utcnow()


@pytest.mark.parametrize("value, expected", [(None, 5.0), ("0", 0.0), ("300", 300.0),
                                             ("2.5", 2.5)])
def test_push_collapse_seconds_default_and_range(tmp_path, value, expected):
    env = {"APP_ENV": "development", "DATABASE_URL": "sqlite://"}
    if value is not None:
        env["PUSH_COLLAPSE_SECONDS"] = value
    assert load_settings(env, tmp_path).push_collapse_seconds == expected


@pytest.mark.parametrize("value", ["-1", "301", "soon"])
def test_push_collapse_seconds_out_of_range_stops_the_start(tmp_path, value):
    env = {"APP_ENV": "development", "DATABASE_URL": "sqlite://",
           "PUSH_COLLAPSE_SECONDS": value}
    with pytest.raises(ConfigError, match="PUSH_COLLAPSE_SECONDS"):
        load_settings(env, tmp_path)


# -- what a collapsed push carries ----------------------------------------------------------

def test_a_folded_push_carries_the_newest_with_a_line_and_folded(app, client, alice, notify):
    subscribe(client, alice, "phone")
    for n in range(4):
        notify("alice", push="always", collapse_key="post:42", body=f"comment {n}")
    pass_checks(app)
    make_due(app)
    (job,) = claim(app)[0]
    assert job.notification["body"] == "comment 3\nand 3 more"
    assert job.notification["folded"] == 3
    assert json.loads(sender.payload(job.notification, job.kept))["folded"] == 3
    assert job.topic == sender.collapse_topic("post:42")


def test_a_folded_push_uses_the_notifications_template_and_topic(app, client, alice, notify):
    subscribe(client, alice, "phone")
    for _ in range(3):
        notify("alice", push="always", collapse_key="chat-7", topic="chat",
               collapse_template="+{count} new in {chat}")
    pass_checks(app)
    make_due(app)
    (job,) = claim(app)[0]
    assert job.notification["body"] == "+2 new in {chat}"  # no body: the line alone
    assert job.topic == "chat"


def test_a_push_with_a_key_but_nothing_folded_is_the_notification_as_it_is(app, client, alice,
                                                                          notify):
    subscribe(client, alice, "phone")
    notify("alice", push="always", collapse_key="chat-7", body="hello")
    pass_checks(app)
    make_due(app)
    (job,) = claim(app)[0]
    assert job.notification["body"] == "hello" and "folded" not in job.notification
    assert job.topic == "chat-7"


def test_topic_is_the_key_when_it_may_be_one_else_its_hash():
    assert sender.collapse_topic("post-42_a") == "post-42_a"
    assert sender.collapse_topic("x" * 32) == "x" * 32
    for key in ("post:42", "x" * 33, "a.b"):
        topic = sender.collapse_topic(key)
        digest = base64.urlsafe_b64encode(hashlib.sha256(key.encode()).digest()).decode()
        assert topic == digest[:32] and len(topic) == 32
        assert all(c.isalnum() or c in "-_" for c in topic)
    assert sender.collapse_topic("post:42") != sender.collapse_topic("post:43")


def test_a_folded_push_cut_to_fit_keeps_its_line():
    line = "\nand 19 more"
    notification = {"id": 1, "type": "t", "title": "x", "body": "é" * 2000 + line,
                    "data": {"blob": "z" * 3000}, "folded": 19}
    encoded = sender.payload(notification, line)
    assert len(encoded) <= sender.MAX_PLAINTEXT
    cut = json.loads(encoded)
    assert cut["truncated"] is True and cut["data"] == {} and cut["folded"] == 19
    assert cut["body"].endswith("é…" + line)


def test_folding_and_quiet_hours_on_both_databases(store_app, make_token_for):
    """The fold's lock and row lock (PostgreSQL), the preferences query and the
    executemany update, on SQLite and PostgreSQL."""
    from tests.support.app import API_KEY

    client = store_app.test_client()
    user = f"fold-{utcnow().timestamp()}"
    headers = bearer(make_token_for(store_app, user))
    sub_id = subscribe(client, headers, user)
    set_preferences(client, headers, **NIGHT)
    wall(store_app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))

    def send(**fields) -> int:
        response = client.post("/api/notifications", headers=bearer(API_KEY), json={
            "user_id": user, "type": "t", "title": "x", "push": "always", **fields})
        assert response.status_code == 201, response.get_json()
        return response.get_json()["notifications"][0]["id"]

    send(collapse_key="k:1")
    send(collapse_key="k:1")
    pass_checks(store_app)
    newest = send(collapse_key="k:1")
    plain = send()
    pass_checks(store_app)
    mine = [s for s in queued(store_app) if s.subscription_id == sub_id]
    by_key = {s.collapse_key: s for s in mine}
    assert len(mine) == 2
    assert (by_key["k:1"].notification_id, by_key["k:1"].folded) == (newest, 2)
    assert by_key[None].notification_id == plain
    assert all(s.deferred and s.due_at - utcnow() > timedelta(hours=7) for s in mine)


def test_a_notification_stored_already_read_is_not_acknowledged_on_both_databases(
        store_app, make_token_for):
    """in_app muted: stored with read_at and delivered_at equal to created_at, as each
    database keeps them; its deferred push is claimed, not dropped."""
    from tests.support.app import API_KEY

    client = store_app.test_client()
    user = f"seen-{utcnow().timestamp()}"
    headers = bearer(make_token_for(store_app, user))
    sub_id = subscribe(client, headers, user)
    set_preferences(client, headers, channels={"in_app": False}, **NIGHT)
    wall(store_app, datetime(2026, 12, 6, 23, 30, tzinfo=SEOUL))
    response = client.post("/api/notifications", headers=bearer(API_KEY), json={
        "user_id": user, "type": "t", "title": "x"})
    assert response.get_json()["notifications"][0]["muted"] == ["in_app"]
    pass_checks(store_app)
    with store_app.app_context():
        db.session.execute(sa.update(PushSend).where(PushSend.subscription_id == sub_id)
                           .values(due_at=utcnow() - timedelta(seconds=1)))
        db.session.commit()
    jobs, _ = claim(store_app)
    (job,) = [j for j in jobs if j.target.id == sub_id]  # claimed: not dropped
    assert job.notification["read_at"] is not None
