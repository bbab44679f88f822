"""Every change this service makes to a library's internals: one module per library.

- python_socketio.py: importing it without redis, ending sessions at once, and the
  admission rules in front of its packet handling (the rules come in as arguments)
- python_engineio.py: bounded WebSocket messages, one ping task, aborting sessions
- eventlet.py: eventlet's WebSocket reader (bounded, fast unmasking, take-overs)
- limits.py: the in-memory storage's expiry without a timer thread
- The Redis queue's changes to python-socketio's RedisManager are product policy,
  not a library fix: utils/realtime/queue.py.

Each patch names the upstream behaviour it replaces. They were written against the
versions in ``PATCHED_FOR``; ``check_versions`` refuses to start with others, naming
the package, because a private method that moved or changed would break a patch
silently. Nothing here edits a library's files: each patch wraps a method on one
object, replaces one attribute, or overrides private methods in a subclass mixin.
No module here imports its library at module level (utils/extensions.py imports
``without_modules`` before python-socketio; eventlet is never imported under gevent).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import metadata

PATCHED_FOR = {"python-engineio": "4.15.1", "python-socketio": "5.18.1", "eventlet": "0.41.3",
               "limits": "5.8.0"}


class PatchedVersionError(RuntimeError):
    """An installed library is not the version the patches here were written for."""


def check_versions(installed: Callable[[str], str] = metadata.version) -> None:
    """Raise PatchedVersionError naming each package whose version differs."""
    wrong = []
    for package, expected in PATCHED_FOR.items():
        try:
            found = installed(package)
        except metadata.PackageNotFoundError:
            found = "not installed"
        if found != expected:
            wrong.append(f"{package} {found} (patched for {expected})")
    if wrong:
        raise PatchedVersionError(
            "utils/patches/ was written for other library versions: " + ", ".join(wrong)
            + "; install requirements.txt, or review each patch against the new version")
