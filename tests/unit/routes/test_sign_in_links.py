"""Issue 24, finding 4: a documented way to get a token onto a phone on a production
server: a one-time link a producer mints for a user (POST /debug/links), whose code
the /debug page trades once for a user token (POST /debug/sign-in)."""

from __future__ import annotations

from datetime import timedelta

import pytest
import sqlalchemy as sa

from tests.support.app import API_KEY, build_app

PRODUCER = {"Authorization": f"Bearer {API_KEY}"}


@pytest.fixture
def prod_app(tmp_path):
    return build_app(tmp_path, APP_ENV="production")


def mint(client, **body):
    return client.post("/debug/links", json={"user_id": "phone-user", **body},
                       headers=PRODUCER)


def test_a_link_signs_in_once_as_its_user(prod_app):
    client = prod_app.test_client()
    minted = mint(client)
    assert minted.status_code == 201, minted.get_json()
    link = minted.get_json()
    assert link["url"] == f"http://localhost/debug#code={link['code']}"
    assert link["user_id"] == "phone-user" and link["expires_at"].endswith("Z")
    signed = client.post("/debug/sign-in", json={"code": link["code"]})
    assert signed.status_code == 200
    token = signed.get_json()["token"]
    assert signed.get_json()["user_id"] == "phone-user"
    inbox = client.get("/api/notifications", headers={"Authorization": f"Bearer {token}"})
    assert inbox.status_code == 200  # a real user token, for that user
    again = client.post("/debug/sign-in", json={"code": link["code"]})
    assert again.status_code == 410
    assert again.get_json()["error"]["code"] == "link_spent"


def test_only_the_code_hash_is_stored(prod_app):
    from utils.extensions import db

    code = mint(prod_app.test_client()).get_json()["code"]
    with prod_app.app_context(), db.engine.connect() as conn:
        stored = conn.execute(sa.text("SELECT code_hash FROM sign_in_links")).scalars().all()
    assert len(stored) == 1 and code not in stored[0] and len(stored[0]) == 64


def test_an_expired_or_unknown_code_is_410(prod_app):
    from utils.auth import links
    from utils.notifications.models import utcnow

    client = prod_app.test_client()
    code = mint(client, ttl=1).get_json()["code"]
    with prod_app.app_context():
        assert links.spend(code, utcnow() + timedelta(seconds=2)) is None
    assert client.post("/debug/sign-in", json={"code": "x" * 43}).status_code == 410


@pytest.mark.parametrize(("body", "fragment"), [
    ({"user_id": ""}, "user_id must be"), ({"ttl": 0}, "ttl must be"),
    ({"ttl": 3601}, "ttl must be"), ({"ttl": True}, "ttl must be")])
def test_bad_link_requests_are_400(prod_app, body, fragment):
    response = prod_app.test_client().post("/debug/links", json={"user_id": "u", **body},
                                           headers=PRODUCER)
    assert response.status_code == 400 and fragment in response.get_json()["error"]["message"]


def test_minting_needs_the_producer_key(prod_app, make_token_for):
    client = prod_app.test_client()
    user = {"Authorization": f"Bearer {make_token_for(prod_app, 'phone-user')}"}
    for headers in ({}, user):
        response = client.post("/debug/links", json={"user_id": "phone-user"}, headers=headers)
        assert response.status_code == 401


@pytest.mark.parametrize("body", [{}, {"code": 5}, {"code": ""}, [1]])
def test_bad_sign_in_bodies_are_400(prod_app, body):
    response = prod_app.test_client().post("/debug/sign-in", json=body)
    assert response.status_code == 400
