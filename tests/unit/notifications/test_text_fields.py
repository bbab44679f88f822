"""Text a database cannot store is a 400 on every database (issue 20, finding 10):
PostgreSQL refuses NUL in text, and neither keeps a lone surrogate. Before, SQLite
stored the NUL and PostgreSQL answered 503 database_unavailable."""

from __future__ import annotations

import pytest

from tests.support.app import API_KEY

HEADERS = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
GOOD = {"user_id": "nul-alice", "type": "comment", "title": "hello"}

BAD_FIELDS = [
    ("user_id", {"user_id": "nul\x00alice"}),
    ("user_ids[]", {"user_id": None, "user_ids": ["ok", "bad\x00"]}),
    ("type", {"type": "com\x00ment"}),
    ("title", {"title": "he\x00llo"}),
    ("body", {"body": "\x00"}),
    ("data", {"data": {"key\x00": 1}}),
    ("data", {"data": {"list": ["\x00"]}}),
    ("title", {"title": "\ud800"}),
]


@pytest.mark.parametrize(("field", "change"), BAD_FIELDS,
                         ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_FIELDS)])
def test_nul_and_lone_surrogates_are_400_and_store_nothing(store_app, field, change):
    client = store_app.test_client()
    body = {k: v for k, v in {**GOOD, **change}.items() if v is not None}
    response = client.post("/api/notifications", json=body, headers=HEADERS)
    assert response.status_code == 400, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == "validation_error" and error["message"].startswith(field)
    inbox = client.post("/api/notifications", json=GOOD, headers=HEADERS)
    assert inbox.status_code == 201
    assert inbox.get_json()["notifications"][0]["id"] == 1  # the bad one stored nothing


def test_a_token_whose_subject_holds_nul_is_refused(app, make_token):
    from utils.auth.tokens import TokenError, verify_access_token

    token = make_token("ann\x00ie")
    with app.app_context(), pytest.raises(TokenError) as excinfo:
        verify_access_token(token)
    assert excinfo.value.code == "token_invalid"
