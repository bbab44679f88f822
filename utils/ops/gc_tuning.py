"""Garbage-collector settings for a long-running worker that holds many sockets.

Called once per server process after the app is loaded (entrypoints/runtime.py):

- ``gc.freeze()`` moves everything built at start-up (modules, the app, SQLAlchemy's
  mappers: over 100k objects) into the permanent generation, so no later collection
  walks them again. Start-up objects live as long as the worker, so nothing
  collectable is lost.
- The oldest generation is considered only every 1000 middle-generation passes
  (about 7 million net allocations) instead of every 10. A full pass walks every
  socket's objects (about 0.8 s at 10k sockets on the bench machine); with the
  default, connecting 10k sockets triggered 12 to 18 of them. CPython also skips a
  full pass unless the long-lived objects grew by 25% since the last one, so in a
  steady state they are rare; the cost is that cyclic garbage that reached the
  oldest generation waits longer to be freed.
- The youngest threshold stays at CPython's 700. Each producer request leaves a few
  dozen objects in reference cycles (request, environ, closures), and a young pass
  frees what piled up since the last one: with a threshold of 20,000 each pass
  freed ~25k objects and stalled the worker 40-100 ms (p99 84 ms at 500/s); at
  700 the longest pause measured was 2 ms (p99 8 ms).

``GC_TUNING=0`` turns all of it off (the benchmark's "before" figures).
"""

from __future__ import annotations

import gc

THRESHOLDS = (700, 10, 1000)


def tune_after_start(enabled: bool = True) -> bool:
    """Apply the settings unless ``enabled`` is False (GC_TUNING=0); returns whether
    it did."""
    if not enabled:
        return False
    gc.collect()  # leave start-up garbage out of the frozen set
    gc.freeze()
    gc.set_threshold(*THRESHOLDS)
    return True
