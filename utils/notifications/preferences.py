"""A user's preference set: which channels reach them, per notification type and
overall, their time zone and quiet hours; checked, merged (RFC 7396), stored and
evaluated at send time.

The channels: ``in_app`` (the socket and the inbox) and ``push`` (Web Push). A
channel is on unless the set turns it off, overall or for the type. A notification
the producer marks ``critical`` ignores all of it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, time
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from utils.errors import ValidationError
from utils.notifications import quiet_hours
from utils.notifications.models import UserPreferences, isoformat, utcnow
from utils.notifications.validation import MAX_TYPE

CHANNELS = ("in_app", "push")
KEYS = ("channels", "types", "timezone", "quiet_hours")
MAX_TYPES = 100
MAX_WINDOWS = 10
_CLOCK = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
_TABLE = UserPreferences.__table__
# A merge's read (PATCH): built once, the users an expanding bound parameter.
_OF_USERS_LOCKED = (sa.select(_TABLE.c.user_id, _TABLE.c.settings, _TABLE.c.updated_at)
                    .where(_TABLE.c.user_id.in_(sa.bindparam("user_ids", expanding=True)))
                    .with_for_update())


@dataclass(frozen=True)
class Preferences:
    channels: dict[str, bool] = field(default_factory=dict)  # only what is set
    types: dict[str, dict[str, bool]] = field(default_factory=dict)
    timezone: str | None = None
    quiet_hours: tuple[quiet_hours.Window, ...] = ()
    updated_at: datetime | None = None

    def muted(self, type: str) -> list[str]:
        """The channels this set holds back for a notification of ``type``."""
        rule = self.types.get(type, {})
        return [c for c in CHANNELS if not (self.channels.get(c, True) and rule.get(c, True))]

    def quiet_until(self, now: datetime) -> datetime | None:
        """When the quiet window holding ``now`` (aware) ends, or None."""
        if not self.quiet_hours:
            return None
        zone = ZoneInfo(self.timezone or "UTC")
        return quiet_hours.quiet_until(list(self.quiet_hours), zone, now)

    def to_settings(self) -> dict[str, Any]:
        """The stored JSON: only what is set."""
        stored: dict[str, Any] = {}
        if self.channels:
            stored["channels"] = dict(self.channels)
        if self.types:
            stored["types"] = {t: dict(rule) for t, rule in self.types.items()}
        if self.timezone:
            stored["timezone"] = self.timezone
        if self.quiet_hours:
            stored["quiet_hours"] = [{"start": w.start.strftime("%H:%M"),
                                      "end": w.end.strftime("%H:%M")}
                                     for w in self.quiet_hours]
        return stored

    def to_dict(self) -> dict[str, Any]:
        """The answer of GET /api/preferences: the whole set, defaults filled in."""
        stored = self.to_settings()
        return {"channels": {c: self.channels.get(c, True) for c in CHANNELS},
                "types": stored.get("types", {}),
                "timezone": self.timezone,
                "quiet_hours": stored.get("quiet_hours", []),
                "updated_at": isoformat(self.updated_at)}


DEFAULTS = Preferences()


def parse(body: Any, updated_at: datetime | None = None) -> Preferences:
    """A preference set from its JSON (a PUT's body, or what a merge made), checked:
    ValidationError names the first thing wrong."""
    if not isinstance(body, dict):
        raise ValidationError("preferences must be a JSON object")
    unknown = sorted(set(body) - set(KEYS) - {"updated_at"})
    if unknown:
        raise ValidationError(f"unknown key {unknown[0]!r}; preferences have "
                              f"{', '.join(KEYS)}")
    return Preferences(
        channels=_channels(body.get("channels"), "channels"),
        types=_types(body.get("types")),
        timezone=_timezone(body.get("timezone")),
        quiet_hours=_windows(body.get("quiet_hours")),
        updated_at=updated_at,
    )


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7396: ``patch`` applied to ``target``; null removes a member."""
    if not isinstance(patch, dict):
        return patch
    merged = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            merged.pop(key, None)
        else:
            merged[key] = merge_patch(merged.get(key), value)
    return merged


def _channels(value: Any, where: str) -> dict[str, bool]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError(f"{where} must be an object of in_app and push booleans")
    for key, on in value.items():
        if key not in CHANNELS:
            raise ValidationError(f"unknown channel {key!r} in {where}; the channels are "
                                  "in_app and push")
        if not isinstance(on, bool):
            raise ValidationError(f"{where}.{key} must be true or false")
    return dict(value)


def _types(value: Any) -> dict[str, dict[str, bool]]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ValidationError("types must be an object: type -> {in_app, push}")
    if len(value) > MAX_TYPES:
        raise ValidationError(f"types may hold at most {MAX_TYPES} types")
    rules = {}
    for name, rule in value.items():
        if not name or len(name) > MAX_TYPE:
            raise ValidationError(f"a type must be 1 to {MAX_TYPE} characters")
        if not isinstance(rule, dict):
            raise ValidationError(f"types.{name} must be an object of in_app and push "
                                  "booleans")
        channels = _channels(rule, f"types.{name}")
        if channels:  # {} says nothing: not kept
            rules[name] = channels
    return rules


def _timezone(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not 0 < len(value) <= 64:
        raise ValidationError("timezone must be an IANA time zone name, like Asia/Seoul")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValidationError(f"unknown time zone {value!r}; use an IANA name, like "
                              "Asia/Seoul") from None
    return value


def _windows(value: Any) -> tuple[quiet_hours.Window, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise ValidationError('quiet_hours must be a list of {"start": "HH:MM", '
                              '"end": "HH:MM"}')
    if len(value) > MAX_WINDOWS:
        raise ValidationError(f"quiet_hours may hold at most {MAX_WINDOWS} windows")
    windows = []
    for index, item in enumerate(value):
        where = f"quiet_hours[{index}]"
        if not isinstance(item, dict) or set(item) != {"start", "end"}:
            raise ValidationError(f'{where} must be {{"start": "HH:MM", "end": "HH:MM"}}')
        window = quiet_hours.Window(_clock(item["start"], where + ".start"),
                                    _clock(item["end"], where + ".end"))
        if window.start == window.end:
            raise ValidationError(f"{where} is empty: its start and end are the same")
        windows.append(window)
    clash = quiet_hours.overlapping(windows)
    if clash:
        first, second = (f"{w.start:%H:%M}-{w.end:%H:%M}" for w in clash)
        raise ValidationError(f"quiet_hours overlap: {first} and {second}")
    return tuple(windows)


def _clock(value: Any, where: str) -> time:
    match = _CLOCK.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise ValidationError(f'{where} must be a time of day "HH:MM", 00:00 to 23:59')
    return time(int(match[1]), int(match[2]))


# -- storage

def of_users(conn: sa.Connection, user_ids: Iterable[str],
             lock: bool = False) -> dict[str, Preferences]:
    """The stored sets of those of ``user_ids`` who have one, in one query; with
    ``lock``, their rows are locked until ``conn``'s transaction ends (PostgreSQL)."""
    users = list(user_ids)
    if not users:
        return {}
    if lock:
        rows = conn.execute(_OF_USERS_LOCKED, {"user_ids": users}).all()
        return {row.user_id: _stored(row.settings, row.updated_at) for row in rows}
    return {user_id: _stored(settings, updated_at)
            for user_id, settings, updated_at in _select_unlocked(conn, users)}


def _select_unlocked(conn: sa.Connection, users: list[str]) -> list[tuple[Any, ...]]:
    """The rows of ``users``, on a cursor of ``conn``'s own DBAPI connection (so in its
    transaction): every producer request runs this, usually to find nothing, and
    SQLAlchemy's execution (statement, result metadata) cost several times the query
    (about 28 µs against 4 on SQLite; the bench's single POST is ~1,400 µs, and issue
    23 allows preferences 5% of it). Text and parameters in the driver's own
    style (qmark for sqlite3, format for pg8000); ``settings`` as the driver gives it
    (text on SQLite, decoded JSON on PostgreSQL)."""
    mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
    sql = ("SELECT user_id, settings, updated_at FROM user_preferences WHERE user_id IN ("
           + ", ".join([mark] * len(users)) + ")")
    driver_error = conn.dialect.loaded_dbapi.Error
    cursor = conn.connection.cursor()  # the DBAPI connection of conn's transaction
    try:
        cursor.execute(sql, tuple(users))
        rows = cursor.fetchall()
    except driver_error as exc:
        # As SQLAlchemy would raise it: the handlers (503 database_unavailable or
        # database_not_migrated) and SQLite's lock retry know only its exceptions.
        raise sa.exc.DBAPIError.instance(sql, users, exc, driver_error,
                                         dialect=conn.dialect) from None
    finally:
        cursor.close()
    return [(user_id, json.loads(settings) if isinstance(settings, str) else settings,
             _as_datetime(updated_at)) for user_id, settings, updated_at in rows]


def _as_datetime(value: Any) -> datetime:
    """SQLite's driver gives a DateTime column back as its text."""
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _stored(settings: Any, updated_at: datetime) -> Preferences:
    try:
        return parse(settings, updated_at)
    except ValidationError:
        # Stored before a rule it breaks (a time zone tzdata dropped): the defaults,
        # rather than no notification at all.
        return Preferences(updated_at=updated_at)


def read(conn: sa.Connection, user_id: str, lock: bool = False) -> Preferences:
    """The user's set, or the defaults; ``lock`` as of_users has it (a merge reads,
    then writes: two at once must not lose one's change)."""
    return of_users(conn, [user_id], lock).get(user_id, DEFAULTS)


def write(conn: sa.Connection, user_id: str, preferences: Preferences) -> Preferences:
    """Store ``preferences`` as the user's whole set; returns it as stored."""
    now = utcnow()
    values = {"settings": preferences.to_settings(), "updated_at": now}
    updated = conn.execute(sa.update(_TABLE).where(_TABLE.c.user_id == user_id)
                           .values(**values)).rowcount
    if not updated:
        try:
            with conn.begin_nested():  # a concurrent first write may win the insert
                conn.execute(sa.insert(_TABLE).values(user_id=user_id, **values))
        except IntegrityError:
            conn.execute(sa.update(_TABLE).where(_TABLE.c.user_id == user_id)
                         .values(**values))
    return Preferences(preferences.channels, preferences.types, preferences.timezone,
                       preferences.quiet_hours, now)
