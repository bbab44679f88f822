"""Notifications themselves: the models, every query, validation, SQLite lock
waits, and the one path that stores and then emits."""
