"""The command line: arguments, progress on a terminal, the report, the exit status."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import TextIO

from utils.doctor import report, served
from utils.doctor.checks import run_checks
from utils.doctor.claims import decode_claims
from utils.doctor.model import Options, Unreachable
from utils.doctor.network import Network
from utils.doctor.target import Target
from utils.doctor.transport import Transport

PROG = "python -m utils.doctor"
DEFAULT_TIMEOUT = 8.0
MIN_TIMEOUT, MAX_TIMEOUT = 0.5, 120


class UsageError(Exception):
    """Unusable arguments: exit 2."""


def parse_args(argv: list[str], prog: str = PROG) -> Options:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Diagnose a live deployment of the notification backend, as a browser "
                    "sees it. Exit 0: nothing failed; 1: a check failed; 2: unusable "
                    "arguments or unreachable.")
    parser.add_argument("url", help="the server's public URL, e.g. https://notify.example.com")
    parser.add_argument("--origin", help="the front end's origin, e.g. https://app.example.com")
    parser.add_argument("--token", help="a user's JWT: checks a real connect")
    parser.add_argument("--api-key", dest="api_key",
                        help="NOTIFY_API_KEY (with --token): times a real delivery; stores one "
                             "notification of type 'doctor' for that user")
    parser.add_argument("--transports", metavar="LIST",
                        help="the server's SOCKETIO_TRANSPORTS: websocket (WebSocket-only: "
                             "nothing is checked over polling) or polling,websocket; default: "
                             "what the server says (/healthz, or its 400 Invalid transport)")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds to wait for each answer (default 8)")
    ns = parser.parse_args(argv)
    transports = None
    if ns.transports is not None:
        transports = served.parse(ns.transports)
        if transports is None:
            raise UsageError(f"--transports {ns.transports!r} is not websocket or "
                             "polling,websocket (the values of SOCKETIO_TRANSPORTS)")
    options = Options(ns.url, ns.origin.rstrip("/") if ns.origin else None, ns.token,
                      ns.api_key, ns.timeout, ns.json, transports)
    validate(options)
    return options


def validate(options: Options) -> None:
    try:
        Target.parse(options.url)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if options.origin and not is_origin(options.origin):
        raise UsageError(f"--origin {options.origin!r} is not an origin like "
                         "https://app.example.com")
    if not MIN_TIMEOUT <= options.timeout <= MAX_TIMEOUT:
        raise UsageError(f"--timeout must be between {MIN_TIMEOUT:g} and {MAX_TIMEOUT:g} "
                         "seconds")
    if options.api_key and not options.token:
        raise UsageError("--api-key needs --token: the test notification goes to that user")
    if options.token:
        try:
            decode_claims(options.token)
        except ValueError as exc:
            raise UsageError(str(exc)) from None


def is_origin(text: str) -> bool:
    try:
        return not Target.parse(text).path
    except ValueError:
        return False


def progress_writer(stream: TextIO) -> Callable[[str], None] | None:
    """A one-line progress display on a terminal; None elsewhere."""
    if not stream.isatty():
        return None

    def write(text: str) -> None:
        stream.write(f"\r\033[K  checking {text}…")
        stream.flush()

    return write


def main(argv: list[str] | None = None, out: TextIO | None = None, err: TextIO | None = None,
         prog: str = PROG, transport: Transport | None = None) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    try:
        options = parse_args(sys.argv[1:] if argv is None else argv, prog)
    except UsageError as exc:
        print(f"doctor: {exc}", file=err)
        return report.EXIT_UNUSABLE
    except SystemExit as exc:  # argparse: --help (0) or bad arguments (2)
        return int(exc.code or 0)
    progress = progress_writer(err)
    try:
        findings, target = run_checks(options, transport or Network(),
                                      progress or (lambda _step: None))
    except Unreachable as exc:
        if progress:
            err.write("\r\033[K")
        if options.json:
            print(report.render_unreachable_json(options, str(exc)), file=out)
        else:
            print(f"doctor: unreachable: {exc}", file=err)
        return report.EXIT_UNUSABLE
    if progress:
        err.write("\r\033[K")
        err.flush()
    if options.json:
        print(report.render_json(options, findings, target), file=out)
    else:
        colour = out.isatty() and not os.environ.get("NO_COLOR")
        print(report.render_table(options, findings, colour), file=out)
    return report.exit_code(findings)
