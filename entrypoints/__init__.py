"""The processes' entry points, above everything and beside app.py: the flask CLI
(cli.py), what a server process installs once it serves (runtime.py, from
gunicorn.conf.py), and `python app.py`'s server (devserver.py)."""
