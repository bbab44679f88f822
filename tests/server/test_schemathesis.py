"""Schemathesis against a live server: the OpenAPI document it serves, proven on it.

A real gunicorn server in production mode on a loopback port, with Web Push on (VAPID
keys, and push endpoints allowed only at a loopback origin), a metrics token and the
producer key. Schemathesis loads the schema from the server's own /openapi.json and
sends, for every operation in it, the document's examples, its coverage cases
(boundaries, invalid values, missing credentials, unexpected methods) and MAX_EXAMPLES
generated requests, with the credentials each operation's `security` names.
(Schemathesis leaves out the operation that serves the schema, GET /openapi.json;
tests/unit/routes/test_openapi.py covers it.) Every answer must pass:

- not_a_server_error: no 5xx;
- status_code_conformance: a status the operation documents;
- content_type_conformance: a content type documented for that status;
- response_schema_conformance: a body that matches the documented schema;

and a request that carries the credentials it was given is never refused for them.

The rate limits are raised far above what the run sends (RATE_LIMIT_HTTP,
RATE_LIMIT_API_KEY, CONNECT_RATE_PER_IP, MAX_PENDING_SESSIONS_PER_IP), so a 429 never
comes from the run's own volume; the X-RateLimit-* headers are still sent. The whole
run, server start included, takes about 17 s here; pytest-timeout stops it at 110 s.
"""

from __future__ import annotations

import os

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.push_service import VapidKeys, b64url
from tests.support.servers import (
    SERVER_API_KEY,
    free_port,
    gunicorn,
    migrate,
    mint,
    server_env,
)

pytestmark = [pytest.mark.server]

MAX_EXAMPLES = 50  # generated requests per operation, on top of examples and coverage
REQUEST_TIMEOUT = 10
METRICS_TOKEN = "test-metrics-token-" + "m" * 24
USER = "schemathesis-user"
KEYS = VapidKeys.generate()
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
HIGH = "1000000/minute"


@pytest.fixture(scope="module")
def credentials() -> dict[str, str]:
    """Each security scheme of the document, and the Authorization header the run
    sends for it."""
    return {"UserToken": f"Bearer {mint(USER)}", "ProducerKey": f"Bearer {SERVER_API_KEY}",
            "MetricsToken": f"Bearer {METRICS_TOKEN}"}


@pytest.fixture(scope="module")
def live(tmp_path_factory, credentials):
    tmp = tmp_path_factory.mktemp("schemathesis")
    # Push endpoints are allowed at one loopback origin where nothing listens: a push
    # there fails at once (the outcome "failed"), and nothing leaves the machine.
    push_origin = f"http://127.0.0.1:{free_port()}"
    env = server_env(
        tmp,
        VAPID_PRIVATE_KEY=KEYS.private, VAPID_SUBJECT="mailto:push@example.com",
        WEB_PUSH_ENDPOINT_ORIGINS=push_origin, METRICS_TOKEN=METRICS_TOKEN,
        RATE_LIMIT_HTTP=HIGH, RATE_LIMIT_API_KEY=HIGH, CONNECT_RATE_PER_IP="1000000",
        MAX_PENDING_SESSIONS_PER_IP="0",
    )
    migrate(env)
    server = gunicorn(tmp, env).start()
    try:
        # The user has a subscription, so POST /api/push/test has one to answer for.
        subscription = {"endpoint": push_origin + "/push/schemathesis", "expirationTime": None,
                        "keys": {"p256dh": KEYS.public, "auth": b64url(os.urandom(16))}}
        answer = requests.post(server.url + "/api/push/subscriptions", json=subscription,
                               headers={"Authorization": credentials["UserToken"]}, timeout=10)
        assert answer.status_code == 201, answer.text
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def api_schema(live, credentials):
    config = schemathesis.Config.from_dict({
        "auth": {"openapi": {scheme: {"bearer": value.removeprefix("Bearer ")}
                             for scheme, value in credentials.items()}},
        "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
        "request-timeout": REQUEST_TIMEOUT,
    })
    return schemathesis.openapi.from_url(live.url + "/openapi.json", config=config)


schema = schemathesis.pytest.from_fixture("api_schema")


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request):
    """Schemathesis 4.32.5 names each operation's subtest through ``Node._nodeid``,
    which pytest 9.2 no longer has (its node ids became ``Node._id``)."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


@pytest.mark.timeout(110)
@schema.parametrize()
@settings(deadline=None, database=None, suppress_health_check=list(HealthCheck))
def test_every_answer_of_the_live_server_conforms_to_its_openapi_document(case, live,
                                                                          credentials):
    response = case.call_and_validate(checks=CHECKS, timeout=REQUEST_TIMEOUT)
    # The run reaches past authentication: the credentials it was given are accepted
    # wherever it sends them (a case that drops or spoils them may get its 401).
    if response.request.headers.get("Authorization") in credentials.values():
        assert response.status_code != 401, response.text
    assert live.proc.poll() is None, live.output()
