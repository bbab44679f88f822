"""The database machinery: the engine and its pool (engine.py), waiting for SQLite's
write lock without holding the worker (sqlite_locks.py), and group commit."""
