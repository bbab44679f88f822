"""The doctor: diagnose a live deployment in one command, as a browser sees it.

    python -m utils.doctor URL [--origin ORIGIN] [--token JWT] [--api-key KEY]
                               [--transports websocket|polling,websocket]
                               [--json] [--timeout S]
    flask --app app doctor URL ...            (the same command)

It needs none of the server's configuration and imports nothing of the server,
so it runs from any machine against the deployed URL. Each check ends pass, warn
or fail with one line of evidence and one line of fix. Exit status: 0 when
nothing failed (warnings allowed), 1 when a check failed, 2 when the arguments
are unusable or the server cannot be reached.

The modules, from the wire up:

    target.py      the URL being checked
    transport.py   what checks call to reach the server (an interface), and its errors
    network.py     the real transport: http.client, and websocket.py (wsproto)
    packets.py     Engine.IO / Socket.IO packets
    served.py      the transports a server serves (a WebSocket-only one gets no polling)
    probe.py       a polling session, Engine.IO over WebSocket, Socket.IO connect
    model.py       Options, Context, Facts, Result, Check
    checks/        one module per concern; checks/__init__.py holds the one ordered list
    report.py      the table and the JSON
    cli.py         the arguments and the exit status
"""

from utils.doctor.cli import main

__all__ = ["main"]
