"""The production app with its quiet hours read from a wall clock a test sets, so a
real server can be at 06:59:50 in a user's time zone without waiting for it.

``TEST_WALL_CLOCK_START=2026-12-07T06:59:50Z``: the wall clock reads this instant when
this module is imported (in the gunicorn worker), then runs at the real rate. Without
it the wall clock is the real one. Due times stay on the real clock: only the distance
to a quiet window's end is read from this one.
``gunicorn --worker-class eventlet -w 1 tests.support.clocked_app:app``
"""

import os
import time
from datetime import UTC, datetime, timedelta

from app import app
from utils.services import services

START = os.environ.get("TEST_WALL_CLOCK_START")

if START:
    _reading = datetime.fromisoformat(START.replace("Z", "+00:00")).astimezone(UTC)
    _started = time.monotonic()

    def wall_clock() -> datetime:
        return _reading + timedelta(seconds=time.monotonic() - _started)

    services(app).dispatcher.checks.wall_clock = wall_clock
