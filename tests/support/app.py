"""An app for unit tests: create_app with a test configuration, migrated."""

from __future__ import annotations

from pathlib import Path

from flask_migrate import upgrade

SECRET = "unit-test-secret-" + "s" * 40


API_KEY = "unit-test-api-key-" + "k" * 30


ORIGIN = "http://localhost:3000"


def build_app(tmp_path: Path, **overrides: str):
    from app import create_app

    config = {
        "APP_ENV": "development",
        "INSTANCE_PATH": str(tmp_path / "instance"),
        "DATABASE_URL": f"sqlite:///{tmp_path / 'test.db'}",
        "ASYNC_MODE": "threading",
        "JWT_SECRET_KEY": SECRET,
        "NOTIFY_API_KEY": API_KEY,
        "FRONTEND_URLS": ORIGIN,
        "REDIS_URL": "",
        **overrides,
    }
    app = create_app(config)
    app.config["TESTING"] = True
    with app.app_context():
        upgrade()
    return app
