"""The service version, reported by /healthz."""

__version__ = "0.1.0"
