"""Round two, F7: a receipt flood grew the worker's memory for good.

Twenty sockets each sent a ``delivered`` receipt of 1,000 ids five times a second,
within every limit (SOCKET_EVENT_RATE, MAX_IDS, MAX_HTTP_BUFFER_SIZE). RSS went from
107 to 262 MB in 60 s and to 414 MB after a 64 s drain, never released. Three causes,
each measured:

- A receipt group was one ``IN`` list with a parameter per id: another SQL text for
  every length. sqlite3 keeps each pooled connection's last 128 prepared statements,
  sized by their parameters (one connection: 111 to 371 MB).
- On PostgreSQL those long lists were slow to send and plan (20,000 ids: 192 ms, 35 ms
  as one array), and receipts waited without limit, each with its ids and greenlet.
- Each socket event holds Flask's routing NotFound (the Socket.IO URL has no route),
  whose traceback keeps the event's frames and payload in a reference cycle; a receipt
  waits long enough for it to reach the GC generation the worker scans rarely.

The fixed server sends a list of ids as one parameter (one SQL text), writes at most
two receipt groups at once, breaks that cycle before a receipt waits, and bounds the
ids waiting to be written (per worker and per user): a receipt beyond the bound gets
the retryable ``rate_limited`` ack at once.

Here: the same flood from four users (five sockets each) for FLOOD_S on a fresh
server (both workers, SQLite and PostgreSQL), beside the bystander. Expected: every
receipt is answered, with a count or ``rate_limited``; the worker's RSS, once drained,
is within 20 MB of its start (and never 20 MB over it); no socket is dropped; a real
receipt afterwards still marks its notification delivered.
"""

from __future__ import annotations

import json
import random
import threading
import time
from typing import Any

import pytest

from tests.support.attack import (
    RSS_LIMIT_MB,
    WORKERS,
    RawSocket,
    notify_user,
    rss_kb,
    start_server,
    token,
    unique,
    worker_pid,
)
from tests.support.servers import migrate, server_env

pytestmark = [pytest.mark.server, pytest.mark.slow, pytest.mark.timeout(150)]

SOCKETS = 20
USERS = 4  # five sockets each: their receipts meet in one group, in lists of any length
RECEIPTS_PER_S = 5  # SOCKET_EVENT_RATE
IDS = 1000  # MAX_IDS
FLOOD_S = 20.0
DRAIN_S = 40.0  # reads are capped by SOCKET_READ_RATE: the last receipts wait in TCP


@pytest.fixture(scope="module")
def postgres_database(postgres_url, tmp_path_factory) -> str:
    """The run's PostgreSQL database, migrated once for this module's servers."""
    migrate(server_env(tmp_path_factory.mktemp("receipt-flood-pg"),
                       DATABASE_URL=postgres_url))
    return postgres_url


@pytest.fixture(params=[pytest.param((w, d), id=f"{w}-{d}", marks=[pytest.mark.postgres]
                                      if d == "postgresql" else [])
                        for w in WORKERS for d in ("sqlite", "postgresql")])
def flood_server(request, tmp_path_factory):
    """A fresh production server per worker and database: memory is measured on a
    worker no earlier attack has grown."""
    worker, database = request.param
    overrides = {}
    if database == "postgresql":
        overrides["DATABASE_URL"] = request.getfixturevalue("postgres_database")
    proc = start_server(tmp_path_factory, worker, f"receipt-flood-{database}", **overrides)
    proc.database = database
    yield proc
    proc.kill()
    proc.stop()


class Flooder:
    """One socket sending receipts at RECEIPTS_PER_S and reading their acks."""

    def __init__(self, raw: RawSocket) -> None:
        self.raw = raw
        self.sent = 0
        self.answers: dict[str, int] = {}  # "updated", or the error code

    def _note(self, message: Any) -> None:
        if not (isinstance(message, str) and message.startswith("43")):
            return
        reply = json.loads(message.lstrip("0123456789"))[0]
        kind = reply["error"]["code"] if "error" in reply else "updated"
        self.answers[kind] = self.answers.get(kind, 0) + 1

    @property
    def answered(self) -> int:
        return sum(self.answers.values())

    def receipt(self) -> str:
        ids = random.sample(range(1, 10**7), IDS)  # ~8 KB: under MAX_HTTP_BUFFER_SIZE
        return f"42{self.sent}" + json.dumps(["delivered", {"ids": ids}], separators=(",", ":"))

    def run(self, seconds: float, drain: float) -> None:
        due = started = time.monotonic()
        while time.monotonic() - started < seconds and self.raw.ended is None:
            while self.raw.readable():
                self._note(self.raw.read(0.05))
            if time.monotonic() >= due:
                if self.raw.send(self.receipt()):
                    self.sent += 1
                due += 1 / RECEIPTS_PER_S
            time.sleep(0.01)
        deadline = time.monotonic() + drain
        while self.answered < self.sent and self.raw.ended is None \
                and time.monotonic() < deadline:
            self._note(self.raw.read(0.5))


def flood(flooders: list[Flooder], seconds: float, drain: float) -> None:
    threads = [threading.Thread(target=f.run, args=(seconds, drain), daemon=True)
               for f in flooders]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + drain + 10)


def test_f7_a_receipt_flood_leaves_memory_flat(flood_server, bystander, figures):
    users = [unique("receipts") for _ in range(USERS)]
    tokens = [token(user) for user in users]
    with bystander(flood_server) as by:
        flooders = []
        for n in range(SOCKETS):
            raw = RawSocket(flood_server)
            raw.sign_in(tokens[n % USERS])
            flooders.append(Flooder(raw))
        flood(flooders, 1.0, 5.0)  # warm-up: statements compiled, pools opened
        pid = worker_pid(flood_server)
        start_kb = rss_kb(pid)
        flood(flooders, FLOOD_S, DRAIN_S)
        drained_kb = rss_kb(pid)

        answers: dict[str, int] = {}
        for flooder in flooders:
            for kind, count in flooder.answers.items():
                answers[kind] = answers.get(kind, 0) + count
        sent = sum(f.sent for f in flooders)
        figures.update(database=flood_server.database, receipts_sent=sent, answers=answers,
                       rss_start_mb=round(start_kb / 1024, 1),
                       rss_drained_mb=round(drained_kb / 1024, 1),
                       rss_after_drain_growth_mb=round((drained_kb - start_kb) / 1024, 1))

        assert all(f.raw.ended is None for f in flooders), "a flooding socket was dropped"
        assert sum(answers.values()) == sent, f"{sent - sum(answers.values())} unanswered"
        assert set(answers) <= {"updated", "rate_limited"}, answers
        assert answers.get("updated"), "no receipt was written: the flood tested nothing"
        assert (drained_kb - start_kb) / 1024 < RSS_LIMIT_MB, \
            f"RSS {start_kb // 1024} -> {drained_kb // 1024} MB after the drain"

        # The receipt path still works: a real notification, then its receipt.
        notification_id = notify_user(flood_server, users[0], "after the flood")
        flooders[0].raw.send("42999999" + json.dumps(["delivered", {"ids": [notification_id]}]))
        deadline = time.monotonic() + 10
        reply = None
        while reply is None and time.monotonic() < deadline:
            message = flooders[0].raw.read(1.0)
            if isinstance(message, str) and message.startswith("43999999"):
                reply = json.loads(message[len("43999999"):])[0]
        assert reply == {"updated": 1}, reply
        for flooder in flooders:
            flooder.raw.close()
    figures.update(rss_peak_growth_mb=round(by.rss_growth_mb, 1))
    assert by.rss_growth_mb < RSS_LIMIT_MB, f"RSS peaked {by.rss_growth_mb:.1f} MB up"
