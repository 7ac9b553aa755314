"""Settings: precedence flags > environment > file > profile, and clear refusals."""

from __future__ import annotations

from pathlib import Path

import pytest

from p2pshare.config import default_config_file, describe_sources, load_settings
from p2pshare.core.errors import ConfigError

MiB = 1024**2


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_profile_defaults() -> None:
    dev = load_settings()
    assert dev.env == "development"
    assert dev.log_level == "DEBUG"
    assert dev.log_format == "text"
    assert dev.chunk_size == 8 * MiB
    prod = load_settings(profile="production")
    assert prod.env == "production"
    assert prod.log_format == "json"
    assert prod.data_dir != dev.data_dir


def test_precedence_flags_over_env_over_file_over_profile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write(
        tmp_path / "p.toml",
        'storage = "1GiB"\nchunk_size = "1MiB"\nlog_level = "WARNING"\nlog_format = "json"\n',
    )
    # file over profile
    s = load_settings(config_file=cfg)
    assert (s.storage, s.chunk_size, s.log_level, s.log_format) == (1024**3, MiB, "WARNING", "json")
    # env over file
    monkeypatch.setenv("P2PSHARE_CHUNK_SIZE", "2MiB")
    monkeypatch.setenv("P2PSHARE_LOG_LEVEL", "ERROR")
    s = load_settings(config_file=cfg)
    assert (s.chunk_size, s.log_level, s.storage) == (2 * MiB, "ERROR", 1024**3)
    # flags over env
    s = load_settings(config_file=cfg, flags={"chunk_size": "8MiB", "log_level": None})
    assert (s.chunk_size, s.log_level) == (8 * MiB, "ERROR")
    sources = describe_sources(s, config_file=cfg, flags={"chunk_size": "8MiB"})
    assert sources["chunk_size"] == "flag --chunk-size"
    assert sources["log_level"] == "environment variable P2PSHARE_LOG_LEVEL"
    assert sources["storage"] == str(cfg)
    assert sources["tracker_url"] == "profile development"


def test_profile_chosen_by_env_variable_and_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSHARE_ENV", "production")
    assert load_settings().env == "production"
    assert load_settings(profile="development").env == "development"


def test_default_config_file_is_read_when_present(isolated_home: Path) -> None:
    path = default_config_file()
    assert str(path).startswith(str(isolated_home))
    assert load_settings().storage == 10 * 1024**3
    write(path, 'storage = "3GiB"\n')
    assert load_settings().storage == 3 * 1024**3


def test_unknown_key_in_file_names_key_and_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "p.toml", 'storage = "1GiB"\nstorgae = "2GiB"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=cfg)
    assert "storgae" in str(err.value)
    assert str(cfg) in str(err.value)


def test_invalid_value_in_file_names_key_and_file(tmp_path: Path) -> None:
    cfg = write(tmp_path / "p.toml", 'chunk_size = "3MiB"\n')
    with pytest.raises(ConfigError) as err:
        load_settings(config_file=cfg)
    assert "chunk_size" in str(err.value)
    assert str(cfg) in str(err.value)
    write(cfg, 'storage = "lots"\n')
    with pytest.raises(ConfigError, match=r"storage.*lots"):
        load_settings(config_file=cfg)
    write(cfg, 'tracker_url = "ftp://x"\n')
    with pytest.raises(ConfigError, match="tracker_url"):
        load_settings(config_file=cfg)


def test_invalid_env_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSHARE_STORAGE", "ten gigs")
    with pytest.raises(ConfigError, match="P2PSHARE_STORAGE"):
        load_settings()


def test_unknown_env_variable_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("P2PSHARE_STORGE", "1GiB")
    with pytest.raises(ConfigError, match="P2PSHARE_STORGE"):
        load_settings()


def test_invalid_flag_names_the_flag() -> None:
    with pytest.raises(ConfigError, match="flag --log-level"):
        load_settings(flags={"log_level": "LOUD"})


def test_unknown_profile_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="staging"):
        load_settings(profile="staging")
    with pytest.raises(ConfigError, match="not found"):
        load_settings(config_file=tmp_path / "absent.toml")
    bad = write(tmp_path / "bad.toml", "storage = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_settings(config_file=bad)


def test_settings_are_frozen() -> None:
    s = load_settings()
    with pytest.raises(ValueError, match="frozen"):
        s.storage = 1  # type: ignore[misc]
