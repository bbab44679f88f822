"""The notification backend's own code: one package per concern (see README, "Layout")."""

__version__ = "0.1.0"
