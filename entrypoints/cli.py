"""Command-line tools: ``flask --app app create-token|notify|prune|doctor|vapid-keys``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import click
from flask import Flask
from flask.cli import with_appcontext
from sqlalchemy.exc import OperationalError

from utils.auth.tokens import create_access_token
from utils.errors import ValidationError
from utils.notifications.notifier import IDEMPOTENCY_TTL, notify_users
from utils.notifications.validation import notification_request
from utils.services import services


@contextmanager
def database_errors_in_one_line() -> Iterator[None]:
    """A database still locked after the write deadline (utils/db/sqlite_locks.py), or
    unreachable, ends the command with one line instead of a traceback."""
    try:
        yield
    except OperationalError as exc:
        reason = str(exc.orig).splitlines()[0] if exc.orig is not None else "error"
        message = f"the database is unavailable ({reason}); retry later"
        raise click.ClickException(message) from None


def register_commands(app: Flask) -> None:
    app.cli.add_command(create_token)
    app.cli.add_command(notify)
    app.cli.add_command(prune)
    app.cli.add_command(doctor)
    app.cli.add_command(vapid_keys)


@click.command("create-token")
@with_appcontext
@click.argument("user_id")
@click.option("--ttl", type=click.IntRange(1, 365 * 24 * 3600), default=3600, show_default=True,
              help="Lifetime in seconds.")
def create_token(user_id: str, ttl: int) -> None:
    """Print a user JWT signed with the configured key."""
    try:
        click.echo(create_access_token(user_id, ttl))
    except RuntimeError as exc:
        raise click.ClickException(str(exc)) from None


@click.command("notify")
@with_appcontext
@click.argument("user_id")
@click.option("--type", "type_", required=True, help="Notification type, e.g. comment.")
@click.option("--title", required=True)
@click.option("--body", default=None)
@click.option("--data", default=None, help="A JSON object.")
def notify(user_id: str, type_: str, title: str, body: str | None, data: str | None) -> None:
    """Store a notification and emit it (through REDIS_URL to running servers)."""
    try:
        parsed = json.loads(data) if data is not None else None
    except json.JSONDecodeError as exc:
        raise click.BadParameter(f"not JSON: {exc.msg}", param_hint="--data") from None
    payload = {"user_id": user_id, "type": type_, "title": title, "body": body, "data": parsed}
    try:
        req = notification_request(payload)
    except ValidationError as exc:
        raise click.ClickException(exc.message) from None
    with database_errors_in_one_line():
        delivery = notify_users(req.user_ids, req.type, req.title, req.body, req.data)
    click.echo(json.dumps(delivery.response))


@click.command("prune")
@with_appcontext
@click.option("--older-than", "days", type=click.IntRange(1, 36500), default=None,
              help="Age in days (default NOTIFICATION_RETENTION_DAYS).")
def prune(days: int | None) -> None:
    """Delete notifications older than the retention period."""
    from utils.notifications import store
    from utils.push.subscriptions import prune_expired_sends

    days = days or services().settings.retention_days
    with database_errors_in_one_line():
        deleted = store.prune(timedelta(days=days), IDEMPOTENCY_TTL)
        prune_expired_sends()
    click.echo(f"deleted {deleted} notification(s) older than {days} day(s)")


@click.command("doctor", add_help_option=False,
               context_settings={"ignore_unknown_options": True})
@click.argument("args", nargs=-1, type=click.UNPROCESSED)
def doctor(args: tuple[str, ...]) -> None:
    """Diagnose a deployment: doctor URL [--origin O] [--token JWT] [--api-key K]
    [--transports websocket|polling,websocket] [--json]."""
    from utils.doctor import main

    # One parser: the same options and exit codes as python -m utils.doctor.
    raise SystemExit(main(list(args), prog="flask --app app doctor"))


@click.command("vapid-keys")
def vapid_keys() -> None:
    """Print a new VAPID key pair for Web Push, as environment variables."""
    from utils.config.vapid import generate

    private, public = generate()
    click.echo(f"VAPID_PRIVATE_KEY={private}")
    click.echo(f"# the public key, which browsers get from GET /api/push/config: {public}")
