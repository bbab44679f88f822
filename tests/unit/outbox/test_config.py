"""OUTBOX_* settings: off by default, PostgreSQL only, one clear line otherwise."""

from __future__ import annotations

import pytest

from utils.config import ConfigError, load_settings

PG = "postgresql://u:secret-password@db.example:5432/app"


def settings(tmp_path, **env):
    return load_settings({"INSTANCE_PATH": str(tmp_path), **env}, tmp_path)


def test_off_by_default_with_the_database_url_as_its_database(tmp_path):
    s = settings(tmp_path, DATABASE_URL=PG)
    assert s.outbox_enabled is False
    assert s.outbox_database_url == s.database_url == "postgresql+pg8000://" + PG[13:]
    assert (s.outbox_batch_size, s.outbox_poll_seconds) == (500, 1.0)


def test_its_own_database_and_tuning(tmp_path):
    s = settings(tmp_path, DATABASE_URL=PG, OUTBOX_ENABLED="1",
                 OUTBOX_DATABASE_URL="postgres://p@producer:5432/shop",
                 OUTBOX_BATCH_SIZE="50", OUTBOX_POLL_SECONDS="0.5")
    assert s.outbox_enabled is True
    assert s.outbox_database_url == "postgresql+pg8000://p@producer:5432/shop"
    assert (s.outbox_batch_size, s.outbox_poll_seconds) == (50, 0.5)


@pytest.mark.parametrize("env", [
    {},  # the development default: a SQLite file
    {"DATABASE_URL": "sqlite:////data/n.db"},
    {"DATABASE_URL": PG, "OUTBOX_DATABASE_URL": "sqlite:////data/outbox.db"},
    {"DATABASE_URL": "sqlite:////data/n.db", "OUTBOX_DATABASE_URL": PG},
])
def test_sqlite_with_the_outbox_on_is_a_configuration_error(tmp_path, env):
    with pytest.raises(ConfigError, match="OUTBOX_ENABLED needs PostgreSQL") as caught:
        settings(tmp_path, OUTBOX_ENABLED="1", **env)
    assert "SQLite" in str(caught.value)
    assert "secret-password" not in str(caught.value)
    assert "\n" not in str(caught.value)


def test_sqlite_with_the_outbox_off_is_fine(tmp_path):
    assert settings(tmp_path, OUTBOX_ENABLED="0").outbox_enabled is False


@pytest.mark.parametrize(("name", "value"), [("OUTBOX_BATCH_SIZE", "0"),
                                             ("OUTBOX_BATCH_SIZE", "many"),
                                             ("OUTBOX_POLL_SECONDS", "0")])
def test_bad_tuning_is_refused(tmp_path, name, value):
    with pytest.raises(ConfigError, match=name):
        settings(tmp_path, DATABASE_URL=PG, **{name: value})
