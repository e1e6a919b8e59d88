"""Settings precedence and parsing (DESIGN.md, Settings)."""

from pathlib import Path

import pytest

from callstream.config import SettingsError, load_settings, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90", 90.0), ("1.5", 1.5), ("250ms", 0.25), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "ten", "5 minutes", "-3", "1w"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(SettingsError):
        parse_duration(text)


def test_defaults() -> None:
    settings = load_settings(env={})
    assert settings.port == 8080
    assert settings.host == "127.0.0.1"
    assert settings.complete_after == 1800.0
    assert settings.partial_after == 10.0
    assert settings.allow_private_destinations is False
    assert settings.base_url == "http://127.0.0.1:8080"


def test_flag_beats_env_beats_file(tmp_path: Path) -> None:
    config = tmp_path / "callstream.toml"
    config.write_text('port = 7000\ncomplete_after = "5m"\nhost = "127.0.0.2"\n')
    env = {"CALLSTREAM_PORT": "7100", "CALLSTREAM_CONFIG": str(config)}
    settings = load_settings({"port": 7200, "host": None}, env)
    assert settings.port == 7200
    assert settings.host == "127.0.0.2"
    assert settings.complete_after == 300.0
    assert load_settings({}, env).port == 7100


def test_public_url_and_booleans_from_env() -> None:
    env = {
        "CALLSTREAM_PUBLIC_URL": "https://events.example.com/",
        "CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "yes",
    }
    settings = load_settings(env={**env, "CALLSTREAM_DATA_DIR": "/srv/callstream"})
    assert settings.data_dir == Path("/srv/callstream")
    assert settings.base_url == "https://events.example.com"
    assert settings.allow_private_destinations is True


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="port"):
        load_settings(env={"CALLSTREAM_PORT": "eighty"})
    with pytest.raises(SettingsError, match="ALLOW_PRIVATE_DESTINATIONS"):
        load_settings(env={"CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS": "maybe"})
    bad = tmp_path / "bad.toml"
    bad.write_text("colour = 'blue'\n")
    with pytest.raises(SettingsError, match="colour"):
        load_settings(config_file=bad)
    with pytest.raises(SettingsError, match="cannot read"):
        load_settings(config_file=tmp_path / "missing.toml")


def test_roles() -> None:
    assert load_settings(env={}).role_set == {"api", "ingest", "engine", "delivery"}
    assert load_settings({"roles": "ingest, api"}).role_set == {"api", "ingest"}
    with pytest.raises(SettingsError, match="ROLES"):
        load_settings({"roles": "ingest,cook"})
