"""Running the service: logs, metrics, garbage-collector settings, the CLI, and what
a server process installs when it starts serving (runtime.py)."""
