"""Configuration: every environment variable the service reads, parsed once at
start (settings.py), with one parser per kind of value (values.py)."""

from utils.config.settings import ConfigError, Settings, load_settings

__all__ = ["ConfigError", "Settings", "load_settings"]
