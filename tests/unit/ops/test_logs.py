"""Issue 24, finding 9: a line one connection can cause is rate-limited, with a count
of what was dropped; other lines are never held back."""

from __future__ import annotations

import logging

from utils.ops.logs import PerConnectionLimit


def record(msg: str, *args: object, level: int = logging.WARNING) -> logging.LogRecord:
    return logging.LogRecord("utils.edge.eio_guard", level, __file__, 1, msg, args, None)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_at_most_a_burst_per_window_then_one_line_counts_the_dropped():
    clock = Clock()
    limit = PerConnectionLimit(burst=3, window=60, clock=clock)
    passed = [limit.filter(record("closed an Engine.IO session: %s", f"no CONNECT {i}"))
              for i in range(30)]
    assert passed == [True] * 3 + [False] * 27
    clock.now = 59.9
    assert not limit.filter(record("closed an Engine.IO session: %s", "still"))
    clock.now = 60.0
    line = record("closed an Engine.IO session: %s", "late")
    assert limit.filter(line)
    assert line.getMessage() == ("closed an Engine.IO session: late (and 28 more like it "
                                 "not logged: at most 3 a 60 s)")
    following = record("closed an Engine.IO session: %s", "next")
    assert limit.filter(following) and following.getMessage() == \
        "closed an Engine.IO session: next"


def test_each_message_has_its_own_budget_and_other_lines_always_pass():
    limit = PerConnectionLimit(burst=1, window=60, clock=Clock())
    assert limit.filter(record("socket flood: closing %s", "a"))
    assert not limit.filter(record("socket flood: closing %s", "b"))
    assert limit.filter(record("closed a WebSocket after a bad frame (%s)", "ValueError"))
    for _ in range(100):
        assert limit.filter(record("push to %s not sent: %s", "origin", "why"))
        assert limit.filter(record("database error: %s", "OperationalError",
                                   level=logging.ERROR))


def test_configured_logging_limits_before_it_redacts():
    from utils.ops.logs import configure_logging

    configure_logging("INFO", ["s" * 20])
    (handler,) = [h for h in logging.getLogger().handlers if getattr(h, "_notifier", False)]
    assert isinstance(handler.filters[0], PerConnectionLimit)
    handler.filters[0] = PerConnectionLimit()  # a fresh budget for this test
    records = [record("closed an Engine.IO session: %s", f"token=abc{i}") for i in range(25)]
    passed = [r for r in records if handler.filter(r)]
    assert len(passed) == 10
    assert all("token=[redacted]" in r.getMessage() for r in passed)


def test_engineio_refusals_of_a_client_are_warnings_not_errors():
    from utils.ops.logs import socketio_loggers

    _, engineio = socketio_loggers(False)
    origin = logging.LogRecord("engineio.server", logging.ERROR, __file__, 1,
                               "%s is not an accepted origin.", ("https://x.invalid",), None)
    assert engineio.filter(origin) and origin.levelno == logging.WARNING
    assert origin.levelname == "WARNING"
    other = logging.LogRecord("engineio.server", logging.ERROR, __file__, 1,
                              "something broke", None, None)
    assert engineio.filter(other) and other.levelno == logging.ERROR
    socketio_loggers(False)  # configured again: still one filter
    assert sum(type(f).__name__ == "ClientRefusalLevel" for f in engineio.filters) == 1
