"""gunicorn reads this file from the working directory on every start.

The access log format leaves out the query string: Socket.IO clients may send
their token as ?token=..., and a token must never reach a log.
"""

access_log_format = '%(h)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(L)ss "%(a)s"'
# Socket.IO long-polls last up to PING_INTERVAL; the worker must not be killed
# for a pending long-poll. Eventlet/gevent workers heartbeat independently.
timeout = 120
graceful_timeout = 20
# One eventlet worker holds thousands of sockets.
worker_connections = 20000


def post_worker_init(worker) -> None:
    """In each worker, once the app is loaded: GC pause recording when GC_PAUSE_LOG
    is set (the benchmark's probe; nothing is installed otherwise)."""
    from utils.gcpauses import install_from_env

    install_from_env()
