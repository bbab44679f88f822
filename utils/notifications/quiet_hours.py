"""Quiet hours: windows of local wall-clock time in a user's IANA time zone, and when
a push that falls due inside one may go (the window's end).

Wall-clock times across daylight-saving changes:
- a window's end that the clocks skip (02:30 on a spring-forward night) ends the
  window when the clocks jump: the first instant whose wall time is past it;
- a wall time that comes twice (01:30 on a fall-back night) ends the window at its
  first coming after now.
Windows may cross midnight (22:00 to 07:00); windows that touch (22:00-00:00 and
00:00-07:00) defer to the end of the last.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

MINUTES_A_DAY = 24 * 60


@dataclass(frozen=True)
class Window:
    start: time
    end: time

    def holds(self, moment: time) -> bool:
        """Whether the wall time ``moment`` is inside: from start, up to but not
        including end."""
        if self.start < self.end:
            return self.start <= moment < self.end
        return moment >= self.start or moment < self.end  # across midnight

    def minutes(self) -> list[tuple[int, int]]:
        """The window as half-open minute ranges within one day."""
        start = self.start.hour * 60 + self.start.minute
        end = self.end.hour * 60 + self.end.minute
        if start < end:
            return [(start, end)]
        return [(start, MINUTES_A_DAY), (0, end)]


def overlapping(windows: list[Window]) -> tuple[Window, Window] | None:
    """The first two windows that share a minute, or None."""
    for i, first in enumerate(windows):
        for second in windows[i + 1:]:
            for a_start, a_end in first.minutes():
                for b_start, b_end in second.minutes():
                    if a_start < b_end and b_start < a_end:
                        return first, second
    return None


def quiet_until(windows: list[Window], zone: ZoneInfo, now: datetime) -> datetime | None:
    """When the quiet window holding ``now`` (aware) ends, as an aware UTC instant, or
    None when ``now`` is in no window."""
    moment = now.astimezone(UTC)
    ended = None
    for _ in range(len(windows) + 1):  # each window at most once: touching ones chain
        wall = moment.astimezone(zone).time().replace(tzinfo=None, fold=0)
        window = next((w for w in windows if w.holds(wall)), None)
        if window is None:
            return ended
        ended = moment = _next_wall_time(window.end, zone, moment)
    return ended


def _next_wall_time(wall: time, zone: ZoneInfo, after: datetime) -> datetime:
    """The first instant after ``after`` whose wall time in ``zone`` is ``wall``, or
    the first past it when the clocks skip it."""
    today = after.astimezone(zone).date()
    found = [instant for day in (today - timedelta(days=1), today, today + timedelta(days=1),
                                 today + timedelta(days=2))
             for instant in _instants(day, wall, zone) if instant > after]
    return min(found)


def _instants(day: date, wall: time, zone: ZoneInfo) -> list[datetime]:
    """The UTC instants at which ``zone``'s clocks read ``wall`` on ``day``: one, two
    (the clocks went back), or, when they skipped it, the instant they jumped."""
    naive = datetime.combine(day, wall)
    first = naive.replace(tzinfo=zone, fold=0).astimezone(UTC)
    second = naive.replace(tzinfo=zone, fold=1).astimezone(UTC)
    if first.astimezone(zone).replace(tzinfo=None) == naive:
        return sorted({first, second})
    # Skipped: fold=1 reads the wall time with the offset after the jump (an earlier
    # instant), fold=0 with the one before (a later instant); the jump lies between.
    low, high = min(first, second), max(first, second)
    while high - low > timedelta(seconds=1):
        middle = low + (high - low) / 2
        if middle.astimezone(zone).replace(tzinfo=None) >= naive:
            high = middle
        else:
            low = middle
    return [high.replace(microsecond=0)]
