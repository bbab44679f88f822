"""Keep optional back-ends out of processes that do not use them.

python-socketio's package ``__init__`` imports every client manager, and its Redis
managers run ``import redis`` at module level whenever the package is installed.
``redis`` is a pinned runtime dependency here (for REDIS_URL deployments), so a
single-process server would import it (about 0.1 s and several MB) without ever
using it. ``without_modules`` hides such modules while python-socketio is imported;
python-socketio treats them as not installed, and ``utils.delivery`` imports
``redis`` itself when REDIS_URL is set.
"""

from __future__ import annotations

import importlib.abc
import sys
from collections.abc import Iterator
from contextlib import contextmanager

# Optional back-ends python-socketio probes for at import time.
SOCKETIO_OPTIONAL = ("redis", "valkey", "aioredis")


class _Hide(importlib.abc.MetaPathFinder):
    def __init__(self, names: tuple[str, ...]) -> None:
        self.names = names

    def find_spec(self, fullname, path=None, target=None):
        if fullname.split(".", 1)[0] in self.names:
            raise ModuleNotFoundError(f"{fullname} is deferred", name=fullname)
        return None


@contextmanager
def without_modules(names: tuple[str, ...], active: bool = True) -> Iterator[None]:
    """Within the block, importing any of ``names`` (not yet imported) fails."""
    if not active:
        yield
        return
    finder = _Hide(names)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
