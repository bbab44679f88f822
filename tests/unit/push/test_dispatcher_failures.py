"""The dispatcher's loop on a database that fails the same way every second (issue 24:
a server started before `flask db upgrade` logged "push dispatch pass failed:
ProgrammingError" once a second): one line naming the fix, then one when it recovers."""

from __future__ import annotations

import logging

import pytest
from sqlalchemy.exc import ProgrammingError


class Stop(Exception):
    pass


def test_a_repeating_failure_is_logged_once_and_names_the_migration(app, caplog):
    from utils.services import services

    dispatcher = services(app).dispatcher
    outcomes = [ProgrammingError("SELECT", {}, Exception('relation "notifications" does '
                                                          "not exist (42P01)"))] * 5
    outcomes += [None, RuntimeError("boom"), None]
    ticks = iter(range(len(outcomes)))

    def wait(_timeout):
        if next(ticks, None) is None:
            raise Stop
        return True

    def sweep_once():
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome
        return 0

    dispatcher._wakeup.wait = wait
    dispatcher.sweep_once = sweep_once
    with caplog.at_level(logging.WARNING, logger="utils.push.dispatcher"), \
            pytest.raises(Stop):
        dispatcher._run()
    lines = [r.getMessage() for r in caplog.records if r.name == "utils.push.dispatcher"]
    assert lines == [
        "push dispatch pass failed: ProgrammingError: the database is not migrated; run "
        "`flask db upgrade` (logged again when it changes)",
        "push dispatch passes again",
        "push dispatch pass failed: RuntimeError (logged again when it changes)",
        "push dispatch passes again",
    ]
