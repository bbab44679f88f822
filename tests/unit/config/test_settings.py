"""Configuration parsing: development defaults and production's fail-fast rules."""

import re

import pytest

from tests.support.servers import ROOT
from utils.config import ConfigError, load_settings
from utils.config.values import Env

GOOD_SECRET = "p" * 40


def prod(**env):
    return {"APP_ENV": "production", "JWT_SECRET_KEY": GOOD_SECRET,
            "FRONTEND_URLS": "https://app.example.com",
            "DATABASE_URL": "postgresql://u:p@db.example.com:5432/notifications", **env}


def test_development_works_with_no_environment(tmp_path):
    settings = load_settings({}, tmp_path)
    assert settings.app_env == "development"
    assert settings.frontend_urls == ("http://localhost:3000",)
    assert settings.database_url == f"sqlite:///{tmp_path / 'notifications.db'}"
    assert settings.async_mode == "eventlet"
    assert (settings.ping_interval, settings.ping_timeout) == (25, 60)
    assert settings.max_http_buffer_size == 32 * 1024
    assert settings.transports == ("polling", "websocket")
    assert set(settings.generated) == {"JWT_SECRET_KEY", "NOTIFY_API_KEY", "VAPID_PRIVATE_KEY"}
    assert (tmp_path / "jwt_secret_key.txt").stat().st_mode & 0o077 == 0


def test_development_secrets_are_kept_and_not_regenerated(tmp_path):
    first = load_settings({}, tmp_path)
    second = load_settings({}, tmp_path)
    assert second.jwt_secret_keys == first.jwt_secret_keys
    assert second.notify_api_key == first.notify_api_key
    assert second.generated == ()


def test_railway_environment_implies_production(tmp_path):
    with pytest.raises(ConfigError, match="JWT_SECRET_KEY"):
        load_settings({"RAILWAY_ENVIRONMENT": "production"}, tmp_path)


@pytest.mark.parametrize("env, variable", [
    ({"JWT_SECRET_KEY": ""}, "JWT_SECRET_KEY"),
    ({"JWT_SECRET_KEY": "short"}, "JWT_SECRET_KEY"),
    ({"FRONTEND_URLS": None}, "FRONTEND_URLS"),
    ({"FRONTEND_URLS": "*"}, "FRONTEND_URLS"),
    ({"FRONTEND_URLS": " , "}, "FRONTEND_URLS"),
    ({"FRONTEND_URLS": "https://a.example.com,*"}, "FRONTEND_URLS"),
    ({"FRONTEND_URLS": "app.example.com"}, "FRONTEND_URLS"),
    ({"JWT_ALGORITHMS": "none"}, "JWT_ALGORITHMS"),
    ({"JWT_ALGORITHMS": "HS256,none"}, "JWT_ALGORITHMS"),
    ({"ASYNC_MODE": "asyncio"}, "ASYNC_MODE"),
    ({"SOCKETIO_TRANSPORTS": "carrier-pigeon"}, "SOCKETIO_TRANSPORTS"),
    ({"PING_INTERVAL": "soon"}, "PING_INTERVAL"),
    ({"JWT_LEEWAY": "300"}, "JWT_LEEWAY"),
    ({"APP_ENV": "staging"}, "APP_ENV"),
    ({"DATABASE_URL": None}, "DATABASE_URL"),
    ({"DATABASE_URL": " "}, "DATABASE_URL"),
])
def test_production_refuses_to_start_naming_the_variable(tmp_path, env, variable):
    config = prod(**env)
    config = {k: v for k, v in config.items() if v is not None}
    with pytest.raises(ConfigError) as excinfo:
        load_settings(config, tmp_path)
    message = str(excinfo.value)
    assert variable in message
    assert "\n" not in message


def test_production_generates_nothing(tmp_path):
    settings = load_settings(prod(), tmp_path)
    assert settings.generated == ()
    assert settings.notify_api_key == ""
    assert not (tmp_path / "jwt_secret_key.txt").exists()


def test_production_has_no_default_database(tmp_path):
    """A default SQLite file would sit in the deploy's filesystem, which Railway
    replaces on every deploy: production names DATABASE_URL and what to set."""
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"RAILWAY_ENVIRONMENT": "production", "JWT_SECRET_KEY": GOOD_SECRET,
                       "FRONTEND_URLS": "https://app.example.com"}, tmp_path)
    message = str(excinfo.value)
    assert message.startswith("DATABASE_URL is required in production")
    assert "PostgreSQL" in message and "${{Postgres.DATABASE_URL}}" in message
    assert "sqlite:////" in message and "volume" in message
    assert not list(tmp_path.iterdir()), "nothing may be created on the way out"


def test_production_accepts_an_explicit_sqlite_url(tmp_path):
    url = f"sqlite:///{tmp_path / 'volume' / 'notifications.db'}"
    assert load_settings(prod(DATABASE_URL=url), tmp_path).database_url == url


def test_postgres_urls_get_a_cooperative_driver(tmp_path):
    for url in ("postgres://u:p@h:5432/d", "postgresql://u:p@h:5432/d"):
        settings = load_settings(prod(DATABASE_URL=url), tmp_path)
        assert settings.database_url == "postgresql+pg8000://u:p@h:5432/d"


def test_public_key_refuses_hmac_algorithms(tmp_path):
    pem = "-----BEGIN PUBLIC KEY-----\\nabc\\n-----END PUBLIC KEY-----"
    with pytest.raises(ConfigError, match="HS"):
        load_settings(prod(JWT_SECRET_KEY="", JWT_PUBLIC_KEY=pem, JWT_ALGORITHMS="HS256"),
                      tmp_path)
    settings = load_settings(prod(JWT_SECRET_KEY="", JWT_PUBLIC_KEY=pem), tmp_path)
    assert settings.jwt_algorithms == ("RS256",)
    assert "\n" in settings.jwt_public_key


def test_frontend_urls_are_exact_origins(tmp_path):
    settings = load_settings(prod(FRONTEND_URLS="https://a.example.com/, https://b.example.com"),
                             tmp_path)
    assert settings.frontend_urls == ("https://a.example.com", "https://b.example.com")


CONFIGURATION = ROOT / "docs" / "CONFIGURATION.md"


def _documented_variables() -> set[str]:
    """The variables named in the first column of docs/CONFIGURATION.md's table."""
    names: set[str] = set()
    for line in CONFIGURATION.read_text().splitlines():
        if line.startswith("| `"):
            names.update(re.findall(r"`([A-Z][A-Z0-9_]+)`", line.split("|")[1]))
    return names


def _parsed_variables(tmp_path) -> set[str]:
    """Every variable load_settings reads, in development and in production."""
    read: set[str] = set()
    for environ in ({}, prod()):
        env = Env(environ)
        load_settings(env, tmp_path)
        read |= env.read
    return read


def test_configuration_table_and_parsed_settings_agree(tmp_path):
    documented, parsed = _documented_variables(), _parsed_variables(tmp_path)
    assert len(documented) > 40
    assert parsed - documented == set(), "parsed but missing from docs/CONFIGURATION.md"
    assert documented - parsed == set(), "in docs/CONFIGURATION.md but never parsed"


def test_the_readme_points_to_the_configuration_table():
    assert "(docs/CONFIGURATION.md)" in (ROOT / "README.md").read_text()


def test_every_production_problem_is_named_in_one_error(tmp_path):
    """Issue 24, finding 6: three failed deploys to learn the required set. Now one
    start names all of them, one line each."""
    with pytest.raises(ConfigError) as excinfo:
        load_settings({"APP_ENV": "production", "PING_INTERVAL": "soon"}, tmp_path)
    lines = str(excinfo.value).splitlines()
    assert lines[0] == "4 settings stop the start:"
    named = " ".join(lines[1:])
    for variable in ("JWT_SECRET_KEY", "FRONTEND_URLS", "DATABASE_URL", "PING_INTERVAL"):
        assert variable in named, (variable, lines)
    assert all(line.startswith("  - ") for line in lines[1:])


def test_one_problem_is_still_one_line(tmp_path):
    with pytest.raises(ConfigError) as excinfo:
        load_settings(prod(FRONTEND_URLS="*"), tmp_path)
    assert "\n" not in str(excinfo.value)
