"""GET /metrics with the test client: the format, who may read it, and the counters
moving with connects, refusals, notifications, replays and database errors.

Metrics live in the process, so every assertion is on a delta between two scrapes.
"""

from __future__ import annotations

import json
import os
import re
import socket

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from tests.support.app import build_app
from tests.support.servers import ROOT
from utils.config.settings import ConfigError, load_settings

DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"


def scrape(client, headers=None) -> dict[tuple[str, tuple], float]:
    """Every sample as {(name, sorted labels without process): value}."""
    response = client.get("/metrics", headers=headers or {})
    assert response.status_code == 200, response.data
    samples = {}
    for family in text_string_to_metric_families(response.get_data(as_text=True)):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "process"))
            samples[(s.name, labels)] = s.value
    return samples


def delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


def test_metrics_is_prometheus_text_with_a_process_label(client):
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.content_type.startswith("text/plain; version=")
    families = {f.name: f for f in text_string_to_metric_families(response.get_data(as_text=True))}
    for name in ("notifier_sockets_connected", "notifier_socket_connects",
                 "notifier_socket_refusals", "notifier_notifications_stored",
                 "notifier_notifications_emitted", "notifier_notifications_replayed",
                 "notifier_emit_latency_seconds", "notifier_message_queue_errors",
                 "notifier_database_errors"):
        assert name in families, name
    assert families["notifier_emit_latency_seconds"].type == "histogram"
    assert families["notifier_sockets_connected"].type == "gauge"
    expected = f"{socket.gethostname()}:{os.getpid()}"
    for family in families.values():
        for sample in family.samples:
            assert sample.labels.get("process") == expected, sample


@pytest.mark.parametrize("header, status, code", [
    (None, 401, "metrics_token_missing"),
    ("Bearer wrong-token", 401, "metrics_token_invalid"),
    ("Basic bWV0cmljcw==", 401, "metrics_token_missing"),
])
def test_metrics_token_refuses_in_the_contract_shape(tmp_path, header, status, code):
    client = build_app(tmp_path, METRICS_TOKEN="scrape-secret").test_client()
    response = client.get("/metrics", headers={"Authorization": header} if header else {})
    assert response.status_code == status
    assert response.headers["WWW-Authenticate"].startswith('Bearer realm="metrics"')
    assert response.get_json() == {"error": {"code": code, "message": response.get_json()[
        "error"]["message"]}}
    assert "notifier_" not in response.get_data(as_text=True)


def test_metrics_token_lets_the_operator_in(tmp_path):
    client = build_app(tmp_path, METRICS_TOKEN="scrape-secret").test_client()
    samples = scrape(client, {"Authorization": "Bearer scrape-secret"})
    assert ("notifier_socket_connects_total", ()) in samples


def test_connects_and_refusals_by_code_are_counted(client, sio_client, make_token):
    before = scrape(client)
    assert sio_client(auth={"token": make_token("alice")}).is_connected()
    assert not sio_client(auth={}).is_connected()
    assert not sio_client(auth={"token": "not-a-jwt"}).is_connected()
    assert not sio_client(auth={"token": "x.y.z"}).is_connected()
    assert not sio_client(auth={"token": make_token("bob", ttl=-60)}).is_connected()
    after = scrape(client)
    assert delta(before, after, "notifier_socket_connects_total") == 1
    assert delta(before, after, "notifier_socket_refusals_total", code="token_missing") == 1
    assert delta(before, after, "notifier_socket_refusals_total", code="token_invalid") == 2
    assert delta(before, after, "notifier_socket_refusals_total", code="token_expired") == 1


def test_stored_emitted_replayed_and_latency_move(client, sio_client, make_token, notify):
    before = scrape(client)
    live = sio_client(auth={"token": make_token("carol")})
    ids = notify("carol", title="one") + notify("carol", "dave", title="two")
    received = [p["args"][0]["id"] for p in live.get_received() if p["name"] == "notification"]
    assert received == ids[:2]
    replaying = sio_client(auth={"token": make_token("carol"), "last_id": 0})
    replayed = [p for p in replaying.get_received() if p["name"] == "notification"]
    assert len(replayed) == 2
    after = scrape(client)
    assert delta(before, after, "notifier_notifications_stored_total") == 3
    assert delta(before, after, "notifier_notifications_emitted_total") == 3
    assert delta(before, after, "notifier_notifications_replayed_total") == 2
    assert delta(before, after, "notifier_emit_latency_seconds_count") == 3
    assert delta(before, after, "notifier_emit_latency_seconds_sum") > 0
    assert delta(before, after, "notifier_socket_connects_total") == 2


def test_database_errors_are_counted_by_source(app, client, sio_client, make_token,
                                               api_headers):
    socket_client = sio_client(auth={"token": make_token("erin")})
    assert socket_client.is_connected()
    from utils.extensions import db

    with app.app_context():
        # A real database failure: the table the queries need is gone (answered as
        # a database behind its migrations, issue 24; counted all the same).
        db.session.execute(sa.text("DROP TABLE notifications"))
        db.session.commit()
    before = scrape(client)
    response = client.post("/api/notifications", headers=api_headers,
                           json={"user_id": "erin", "type": "t", "title": "lost"})
    assert response.status_code == 503
    assert response.get_json()["error"]["code"] == "database_not_migrated"
    ack = socket_client.emit("sync", {"after_id": 0}, callback=True)
    assert ack["error"]["code"] == "database_not_migrated"
    after = scrape(client)
    assert delta(before, after, "notifier_database_errors_total", source="http") == 1
    assert delta(before, after, "notifier_database_errors_total", source="socket") == 1
    assert delta(before, after, "notifier_notifications_stored_total") == 0
    assert delta(before, after, "notifier_notifications_emitted_total") == 0


def test_a_missing_multiprocess_directory_stops_start_up(tmp_path):
    env = {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path / "absent")}
    with pytest.raises(ConfigError, match="PROMETHEUS_MULTIPROC_DIR"):
        load_settings(env, tmp_path)


def test_the_metrics_token_is_redacted_from_logs(tmp_path):
    settings = load_settings({"METRICS_TOKEN": "scrape-secret-value"}, tmp_path)
    assert settings.metrics_token == "scrape-secret-value"
    assert "scrape-secret-value" in settings.secrets_to_redact()


def test_the_dashboard_is_json_and_queries_only_exposed_metrics(client):
    dashboard = json.loads(DASHBOARD.read_text())
    exposed = {name for name, _ in scrape(client)}
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert len(exprs) >= 8
    for expr in exprs:
        names = set(re.findall(r"\b(?:notifier|process)_[a-z_]+", expr))
        assert names, expr
        assert names <= exposed, (expr, names - exposed)
    titles = " ".join(p["title"].lower() for p in dashboard["panels"])
    for topic in ("sockets", "connect", "refus", "stored", "emitted", "replayed", "latency",
                  "error"):
        assert topic in titles, topic
