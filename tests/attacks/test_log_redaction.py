"""F7: secrets reached the log through Engine.IO's own error lines.

Engine.IO logs a refused Origin and an unknown session id verbatim, and it logs them
even with its logger "off" (at ERROR): an Origin header holding the producer API key,
or a polling ``sid=token=<secret>``, was written out as is. Expected, with the default
SOCKETIO_LOGGER (off) and with SOCKETIO_LOGGER=1: the server's whole output (access log
on) holds neither the API key, nor the secret, nor any JWT used.
"""

from __future__ import annotations

import time
import uuid

import pytest
import requests

from tests.support.attack import MINTED, WORKERS, attacker, eio_url, start_server, token, unique
from tests.support.servers import SERVER_API_KEY, SERVER_JWT_SECRET

pytestmark = [pytest.mark.server, pytest.mark.timeout(60)]


@pytest.fixture(scope="module", params=[(worker, logger) for worker in WORKERS
                                        for logger in ("default", "1")],
                ids=lambda p: f"{p[0]}-logger-{p[1]}")
def logged_server(request, tmp_path_factory):
    """The suite's server with gunicorn's access log, SOCKETIO_LOGGER unset or 1."""
    worker, logger = request.param
    overrides = {} if logger == "default" else {"SOCKETIO_LOGGER": "1"}
    proc = start_server(tmp_path_factory, worker, f"redaction-{logger}",
                        extra=["--access-logfile", "-"], **overrides)
    proc.logger = logger
    yield proc
    proc.stop()


def test_f7_secrets_in_origin_and_sid_never_reach_the_log(logged_server, bystander, figures):
    """F7: Engine.IO handshakes whose Origin is the API key (then a JWT), and polling
    GETs with ``sid=token=<secret>`` and ``sid=<JWT>``. Expected: none of them, nor the
    bystander's JWT, appears anywhere in the server's output."""
    server = logged_server
    secret = "s3cret-" + uuid.uuid4().hex
    jwt_in_origin, jwt_in_sid = token(unique("f7-origin")), token(unique("f7-sid"))
    statuses = {}
    with bystander(server):
        for name, origin in (("origin=api key", SERVER_API_KEY),
                             ("origin=jwt", jwt_in_origin)):
            statuses[name] = requests.get(eio_url(server), headers=attacker(Origin=origin),
                                          timeout=5).status_code
        for name, sid in (("sid=token=secret", f"token={secret}"), ("sid=jwt", jwt_in_sid)):
            statuses[name] = requests.get(eio_url(server, sid=sid), headers=attacker(),
                                          timeout=5).status_code
    time.sleep(0.5)  # the worker's last lines
    output = server.output()
    values = {"API key": SERVER_API_KEY, "JWT secret": SERVER_JWT_SECRET, "secret": secret}
    values.update({f"JWT {n}": value for n, value in enumerate(MINTED)})
    values.update({f"JWT {n} signature": value.rsplit(".", 1)[1]
                   for n, value in enumerate(MINTED)})
    leaked = sorted(name for name, value in values.items() if value in output)
    figures.update(logger=server.logger, statuses=statuses, leaked=leaked,
                   output_lines=output.count("\n"))
    assert "/socket.io/" in output  # the access log was on and saw the requests
    assert not leaked, f"found in the server output: {leaked}"
