"""Garbage-collector settings for a long-running worker that holds many sockets.

Called once per worker after the app is loaded (gunicorn.conf.py, post_worker_init):

- ``gc.freeze()`` moves everything built at start-up (modules, the app, SQLAlchemy's
  mappers: a few hundred thousand objects) into the permanent generation, so no
  later collection walks them again. Start-up objects live as long as the worker, so
  nothing collectable is lost.
- A larger first-generation threshold: a notification allocates a few thousand
  short-lived objects, and with the default 700 the collector runs several times per
  request; most of those objects die by reference counting before a larger
  threshold is reached.
- A full pass considered only every 100 second-generation passes (about 10 million
  allocations) instead of every 10. A full pass walks every socket's objects (about
  a second at 10k sockets on the bench machine); with the default, connecting 10k
  sockets triggered 17 of them. CPython still skips a full pass unless the long-lived
  objects grew by 25% since the last one, so in a steady state they stay rare; the
  cost is that cyclic garbage that reached the oldest generation waits longer.

``GC_TUNING=0`` turns both off (the benchmark's "before" figures).
"""

from __future__ import annotations

import gc
import os
from collections.abc import Mapping

ENV_VAR = "GC_TUNING"
THRESHOLDS = (20_000, 5, 100)


def tune_after_start(env: Mapping[str, str] = os.environ) -> bool:
    """Apply the settings unless ``GC_TUNING`` is 0/off; returns whether it did."""
    if (env.get(ENV_VAR) or "").strip().lower() in ("0", "off", "false", "no"):
        return False
    gc.collect()  # leave start-up garbage out of the frozen set
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return True
