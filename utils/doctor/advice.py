"""Diagnoses and fixes that more than one check names, worded once."""

from __future__ import annotations

from utils.doctor.target import Target
from utils.doctor.transport import ProbeError, ProbeTimeout

SYNC_WORKER = ("the server handles one request at a time: gunicorn's default sync "
               "worker, the original incident")
WORKER_FIX = ("run the Procfile's command: gunicorn --worker-class eventlet -w 1 app:app "
              "(ASYNC_MODE=eventlet), or --worker-class gevent with ASYNC_MODE=gevent")
PROXY_FIX = ('nginx: proxy_http_version 1.1; proxy_set_header Upgrade $http_upgrade; '
             'proxy_set_header Connection "upgrade"; (other proxies: pass Upgrade and '
             'Connection through to the app)')
SPLIT_CAUSE = ("the requests of one session reach different processes or replicas (several "
               "replicas, e.g. Railway's, or a round-robin balancer, or several servers on "
               "one port), and a polling session lives in the one process that issued it")
SPLIT_FIX = ("run one replica and one process; or SOCKETIO_TRANSPORTS=websocket with "
             "REDIS_URL on every replica (clients: io(url, {transports: ['websocket']})); "
             "or a sticky proxy in front (deploy/haproxy-sticky.cfg)")
NOT_JUDGED_SPLIT = "not judged: polling sessions split across processes (see split sessions)"
FIX_SPLIT_FIRST = "fix the split sessions first"
WEBSOCKET_ONLY = "skipped (server is WebSocket-only)"
WEBSOCKET_CLIENTS = ("clients must connect with io(url, {transports: ['websocket']}): polling "
                     "is answered 400 Invalid transport")


def websocket_only(source: str | None, why: str) -> str:
    """The evidence of a check that has nothing to judge on a WebSocket-only server."""
    return f"{WEBSOCKET_ONLY}: transports websocket per {source or '?'}; {why}"


def busy_hint(exc: ProbeError) -> str:
    """What a timeout usually means here: a long-poll holding the only worker."""
    return (" (still busy with an earlier long-poll: one request at a time, gunicorn's "
            "sync worker)") if isinstance(exc, ProbeTimeout) else ""


def websocket_fix(target: Target) -> str:
    """The fix when a WebSocket failed for no reason the answer names."""
    if target.secure:
        return ("clients must use wss:// for an https server; check that the proxy passes "
                "WebSocket upgrades through")
    return "check that the proxy passes WebSocket upgrades (Upgrade/Connection headers)"
