"""Quiet-hour windows in a user's time zone: inside or not, when they end, and the
daylight-saving edges (a window across the change, a skipped hour, a repeated one)."""

from __future__ import annotations

from datetime import UTC, datetime, time
from zoneinfo import ZoneInfo

import pytest

from utils.notifications.quiet_hours import Window, overlapping, quiet_until

SEOUL = ZoneInfo("Asia/Seoul")  # UTC+9, no daylight saving
NEW_YORK = ZoneInfo("America/New_York")  # 2026: clocks forward Mar 8, back Nov 1
NIGHT = Window(time(22, 0), time(7, 0))


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def local(zone: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=zone, fold=fold)


@pytest.mark.parametrize(("moment", "inside"), [
    (time(21, 59), False), (time(22, 0), True), (time(23, 59), True), (time(0, 0), True),
    (time(6, 59), True), (time(7, 0), False), (time(12, 0), False)])
def test_a_window_across_midnight_holds_from_start_up_to_end(moment, inside):
    assert NIGHT.holds(moment) is inside


def test_inside_a_window_the_push_waits_for_its_end_in_the_users_zone():
    now = local(SEOUL, 2026, 12, 6, 23, 30)
    assert quiet_until([NIGHT], SEOUL, now) == local(SEOUL, 2026, 12, 7, 7, 0)
    after_midnight = local(SEOUL, 2026, 12, 7, 3, 0)
    assert quiet_until([NIGHT], SEOUL, after_midnight) == local(SEOUL, 2026, 12, 7, 7, 0)


def test_outside_every_window_nothing_waits():
    assert quiet_until([NIGHT], SEOUL, local(SEOUL, 2026, 12, 6, 12, 0)) is None
    assert quiet_until([], SEOUL, local(SEOUL, 2026, 12, 6, 23, 0)) is None


def test_the_same_instant_is_quiet_in_one_zone_and_not_in_another():
    now = utc(2026, 12, 6, 14, 0)  # 23:00 in Seoul, 09:00 in New York
    assert quiet_until([NIGHT], SEOUL, now) == utc(2026, 12, 6, 22, 0)
    assert quiet_until([NIGHT], NEW_YORK, now) is None


def test_touching_windows_defer_to_the_end_of_the_last():
    evening, morning = Window(time(20, 0), time(0, 0)), Window(time(0, 0), time(6, 0))
    now = local(SEOUL, 2026, 12, 6, 21, 0)
    assert quiet_until([evening, morning], SEOUL, now) == local(SEOUL, 2026, 12, 7, 6, 0)


def test_a_window_across_the_spring_change_ends_at_its_wall_time_in_summer_time():
    # 22:00 EST (UTC-5) on Mar 7; the clocks jump 02:00 -> 03:00 on Mar 8; 07:00 is EDT.
    now = local(NEW_YORK, 2026, 3, 7, 23, 0)
    assert quiet_until([NIGHT], NEW_YORK, now) == utc(2026, 3, 8, 11, 0)  # 07:00 EDT
    # Eight hours of wall time, seven of real time.
    assert utc(2026, 3, 8, 11, 0) - now.astimezone(UTC) == utc(2026, 1, 1, 8) - utc(2026, 1, 1, 1)


def test_a_window_across_the_autumn_change_lasts_an_hour_longer():
    now = local(NEW_YORK, 2026, 10, 31, 23, 0)  # EDT; the clocks go back at 02:00
    ends = quiet_until([NIGHT], NEW_YORK, now)
    assert ends == utc(2026, 11, 1, 12, 0)  # 07:00 EST
    assert (ends - now.astimezone(UTC)).total_seconds() == 9 * 3600


def test_a_window_ending_in_the_skipped_hour_ends_when_the_clocks_jump():
    window = Window(time(1, 0), time(2, 30))  # 02:30 does not exist on Mar 8
    now = local(NEW_YORK, 2026, 3, 8, 1, 30)  # EST
    assert quiet_until([window], NEW_YORK, now) == utc(2026, 3, 8, 7, 0)  # 03:00 EDT


def test_a_window_starting_in_the_skipped_hour_holds_once_the_clocks_have_jumped():
    window = Window(time(2, 30), time(4, 0))
    now = utc(2026, 3, 8, 7, 10)  # 03:10 EDT: after 02:30 on the wall
    assert quiet_until([window], NEW_YORK, now) == utc(2026, 3, 8, 8, 0)  # 04:00 EDT


def test_a_window_ending_in_the_repeated_hour_ends_at_its_first_coming():
    window = Window(time(0, 0), time(1, 30))
    now = local(NEW_YORK, 2026, 11, 1, 0, 45)  # EDT
    # (Compared in UTC: Python never calls an ambiguous wall time equal across zones.)
    assert quiet_until([window], NEW_YORK, now) == utc(2026, 11, 1, 5, 30)  # 01:30 EDT


def test_in_the_second_pass_of_the_repeated_hour_it_ends_at_the_second_coming():
    window = Window(time(0, 0), time(1, 30))
    now = local(NEW_YORK, 2026, 11, 1, 1, 10, fold=1)  # 01:10 EST, the second time
    assert quiet_until([window], NEW_YORK, now) == utc(2026, 11, 1, 6, 30)  # 01:30 EST


def test_overlap_is_found_across_midnight_and_touching_is_not_overlap():
    assert overlapping([NIGHT, Window(time(6, 0), time(8, 0))]) is not None
    assert overlapping([NIGHT, Window(time(23, 0), time(23, 30))]) is not None
    assert overlapping([NIGHT, Window(time(7, 0), time(8, 0))]) is None
    assert overlapping([Window(time(20, 0), time(0, 0)), Window(time(0, 0), time(6, 0))]) \
        is None
