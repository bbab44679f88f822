"""gunicorn reads this file from the working directory on every start.

The access log format leaves out the query string: Socket.IO clients may send
their token as ?token=..., and a token must never reach a log.
"""

import logging
import warnings

# eventlet warns on import with a multi-line banner; each worker logs one line about
# it instead (entrypoints/runtime.py). This file is read before gunicorn imports the
# worker class.
warnings.filterwarnings("ignore", message=r"\s*Eventlet is deprecated")


class _OneDeprecationLine(logging.Filter):
    """gunicorn 25's eventlet worker logs its own deprecation WARNING at each worker
    start; entrypoints/runtime.py logs one line that also names the way out
    (ASYNC_MODE=gevent). One line at start, not two."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "eventlet worker is DEPRECATED" not in record.getMessage()


logging.getLogger("gunicorn.error").addFilter(_OneDeprecationLine())

access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"'
# Socket.IO long-polls last up to PING_INTERVAL; the worker must not be killed
# for a pending long-poll. Eventlet/gevent workers heartbeat independently.
timeout = 120
graceful_timeout = 20
# One eventlet worker holds thousands of sockets.
worker_connections = 20000


def _raise_open_file_limit() -> None:
    """Each socket is a descriptor, and many containers start processes with a soft
    limit of 1024: raise it to the hard limit, for the master and so its workers."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 65536)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


_raise_open_file_limit()


def post_worker_init(worker) -> None:
    """In each worker, once the app is loaded: what every server process of the app
    installs (entrypoints/runtime.py: GC settings, GC pause recording when asked for,
    and the drain that ends the worker's sockets on SIGTERM so clients reconnect to
    other nodes)."""
    from entrypoints.runtime import start_serving

    start_serving(worker.wsgi, worker)


def on_starting(server) -> None:
    """Master start, PROMETHEUS_MULTIPROC_DIR set: drop the last run's metric files,
    whose workers are gone, so their counters and gauges do not linger."""
    import glob
    import os

    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory and os.path.isdir(directory):
        for kind in ("counter", "gauge", "histogram", "summary"):
            for path in glob.glob(os.path.join(directory, f"{kind}_*.db")):
                os.remove(path)


def child_exit(server, worker) -> None:
    """A worker exited, PROMETHEUS_MULTIPROC_DIR set: its live gauges (sockets held)
    leave the sums; its counters stay counted."""
    import os

    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)
