"""This backend with its NoWebSocketCompression middleware taken out of the WSGI
chain, so eventlet's WebSocket negotiates permessage-deflate when a browser offers
it. Everything else is the production app: the doctor must pass it with one warning.
``gunicorn --worker-class eventlet -w 1 tests.support.compressed_app:app``
"""

from typing import Any

from app import app
from utils.edge.compression import NoWebSocketCompression


def _without(wsgi: Any, unwanted: type) -> Any:
    """The WSGI chain with the ``unwanted`` middleware spliced out."""
    if isinstance(wsgi, unwanted):
        return wsgi.app
    inner = getattr(wsgi, "app", None)
    if inner is None or inner is app:
        raise RuntimeError(f"{unwanted.__name__} is not in the WSGI chain")
    wsgi.app = _without(inner, unwanted)
    return wsgi


app.wsgi_app = _without(app.wsgi_app, NoWebSocketCompression)
