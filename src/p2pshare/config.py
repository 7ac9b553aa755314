"""Settings: read once at the entry point into one frozen object that is passed down.

Where a value comes from, highest first (design.md §7):

1. command-line flags (the caller passes them to :func:`load_settings`),
2. environment variables ``P2PSHARE_<KEY>`` (``P2PSHARE_STORAGE=20GiB``),
3. the TOML file (``--config FILE``; by default ``p2pshare.toml`` in the user's config dir,
   read only when it exists),
4. the profile's defaults (``development`` or ``production``, chosen by ``--env`` or
   ``P2PSHARE_ENV``).

Unknown keys and invalid values are refused with a :class:`ConfigError` that names the key and
where it came from (the file's path, the variable, or the flag).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import AfterValidator, BeforeValidator, Field, ValidationError
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from p2pshare.core.admission import (
    DEFAULT_BODY_TIMEOUT,
    DEFAULT_BURST,
    DEFAULT_HEADER_TIMEOUT,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_HEADER_SIZE,
    DEFAULT_RATE,
    ServerLimits,
)
from p2pshare.core.chunking import DEFAULT_CHUNK_SIZE, validate_chunk_size
from p2pshare.core.errors import ConfigError, InvalidSize
from p2pshare.core.sizes import parse_size

APP_NAME = "p2pshare"
ENV_PREFIX = "P2PSHARE_"
Profile = Literal["development", "production"]
PROFILE_NAMES: tuple[str, ...] = ("development", "production")


def _size(value: object) -> int:
    try:
        return parse_size(value)  # type: ignore[arg-type]
    except InvalidSize as exc:
        raise ValueError(exc.detail) from None


def _chunk_size(value: int) -> int:
    try:
        return validate_chunk_size(value)
    except InvalidSize as exc:
        raise ValueError(exc.detail) from None


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")) or len(value) < 10:
        raise ValueError(f"must be an http:// or https:// URL, got {value!r}")
    return value.rstrip("/")


def _db_url(value: str) -> str:
    scheme, sep, rest = value.partition("://")
    if not sep or not scheme or not rest:
        raise ValueError("must be a database URL like postgresql+asyncpg://user@host/db")
    return value


Size = Annotated[int, BeforeValidator(_size)]
DbUrl = Annotated[str, AfterValidator(_db_url)]
ChunkSize = Annotated[int, BeforeValidator(_size), AfterValidator(_chunk_size)]
HttpUrl = Annotated[str, AfterValidator(_http_url)]


def default_config_file() -> Path:
    """Return the path of the config file read when ``--config`` is not given."""
    return Path(platformdirs.user_config_dir(APP_NAME)) / f"{APP_NAME}.toml"


def profile_defaults(profile: str) -> dict[str, Any]:
    """Return the defaults of ``profile``; raise :class:`ConfigError` for an unknown name."""
    data_root = Path(platformdirs.user_data_dir(APP_NAME))
    if profile == "development":
        return {
            "env": "development",
            "data_dir": data_root / "development",
            "log_level": "DEBUG",
            "log_format": "text",
            "repair_grace": 120.0,
            "audit_interval": 60.0,
        }
    if profile == "production":
        return {
            "env": "production",
            "data_dir": data_root / "production",
            "log_level": "INFO",
            "log_format": "json",
            "repair_grace": 3600.0,
            "audit_interval": 600.0,
            "encrypt": True,
        }
    raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILE_NAMES)}")


@dataclass(frozen=True)
class _LoadContext:
    profile: str
    config_file: Path | None


_CONTEXT: ContextVar[_LoadContext | None] = ContextVar("p2pshare_settings_context", default=None)


class Settings(BaseSettings):
    """Every setting of p2pshare. Build it with :func:`load_settings`, never directly."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX, extra="forbid", frozen=True, case_sensitive=False
    )

    env: Profile = Field("development", description="profile: development or production")
    data_dir: Path = Field(description="where the node keeps its chunks and state")
    storage: Size = Field(10 * 1024**3, description="bytes this node offers to others (10GiB)")
    chunk_size: ChunkSize = Field(DEFAULT_CHUNK_SIZE, description="chunk size for uploads (8MiB)")
    tracker_url: HttpUrl = Field("http://127.0.0.1:7070", description="the tracker's address")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="least severe log level shown"
    )
    log_format: Literal["text", "json"] = Field("text", description="log lines as text or JSON")
    tracker_host: str = Field("127.0.0.1", min_length=1, description="address the tracker binds")
    tracker_port: int = Field(7070, ge=0, le=65535, description="port the tracker listens on")
    heartbeat_interval: float = Field(
        30.0, gt=0, le=86400, description="seconds between node announces; 3 missed = offline"
    )
    db_url: DbUrl | None = Field(
        None, description="tracker database URL (default: SQLite file DATA_DIR/tracker.db)"
    )
    max_body_size: Size = Field(
        96 * 1024**2, ge=1024, description="largest request body the tracker accepts (96MiB)"
    )
    # -- what the tracker and a node's peer API bound for each client (core.admission) --
    rate_limit: float = Field(
        DEFAULT_RATE,
        gt=0,
        le=1e9,
        description="requests per second one client address may send to the tracker or a "
        "node's peer API (5000); more get 429",
    )
    rate_burst: int = Field(
        DEFAULT_BURST, ge=1, le=10**9, description="requests a client may send at once (20000)"
    )
    max_connections: int = Field(
        DEFAULT_MAX_CONNECTIONS,
        ge=1,
        le=1_000_000,
        description="connections the tracker or a node's peer API serves at once (1024); "
        "more get 503",
    )
    header_timeout: float = Field(
        DEFAULT_HEADER_TIMEOUT,
        gt=0,
        le=3600,
        description="seconds a client has to send a request's headers (20); then it is cut off",
    )
    body_timeout: float = Field(
        DEFAULT_BODY_TIMEOUT,
        gt=0,
        le=3600,
        description="seconds a server waits for each 64KiB of a request body (30); then it is "
        "cut off",
    )
    max_header_size: Size = Field(
        DEFAULT_MAX_HEADER_SIZE,
        ge=1024,
        le=16 * 1024**2,
        description="largest request head the tracker reads (64KiB); nodes allow 8KiB a line",
    )
    repair_grace: float = Field(
        120.0,
        ge=0,
        le=30 * 86400,
        description="seconds a holder may be offline before its chunks are copied elsewhere "
        "(development 120, production 3600)",
    )
    audit_interval: float = Field(
        60.0,
        gt=0,
        le=86400,
        description="seconds between the tracker's rounds of audits (development 60, "
        "production 600)",
    )
    node_host: str = Field(
        "127.0.0.1", min_length=1, description="address the node's peer API binds"
    )
    node_port: int = Field(7071, ge=0, le=65535, description="port of the node's peer API")
    control_port: int = Field(
        7072, ge=0, le=65535, description="port of the node's control API (loopback only)"
    )
    node_name: str = Field(
        "node", min_length=1, max_length=64, description="this node's name as others see it"
    )
    public_address: HttpUrl | None = Field(
        None, description="URL other nodes reach this node at (default: https://HOST:PORT)"
    )
    node_url: HttpUrl = Field(
        "http://127.0.0.1:7072", description="control URL of the local node, used by the CLI"
    )
    scan_interval: float = Field(
        21600.0,
        gt=0,
        le=30 * 86400,
        description="seconds between a node's re-hash of every chunk it stores (6 h)",
    )
    max_upload_rate: Size | None = Field(
        None, description="bytes per second this node sends at most, e.g. 10MiB (none: no cap)"
    )
    max_download_rate: Size | None = Field(
        None, description="bytes per second this node receives at most (none: no cap)"
    )
    max_peers_served: int = Field(
        32, ge=1, le=4096, description="chunk downloads this node serves at once"
    )
    replicas: int = Field(2, ge=1, le=16, description="holders per uploaded chunk besides you")
    tls: bool = Field(
        True, description="serve and call over TLS with pinned certificates (production: required)"
    )
    encrypt: bool = Field(
        False,
        description="encrypt uploads before they leave this node (development off, production on)",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order the sources: flags, environment, TOML file, profile defaults."""
        ctx = _CONTEXT.get()
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if ctx is not None:
            if ctx.config_file is not None:
                sources.append(TomlConfigSettingsSource(settings_cls, toml_file=ctx.config_file))
            sources.append(InitSettingsSource(settings_cls, profile_defaults(ctx.profile)))
        return tuple(sources)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def load_settings(
    *,
    profile: str | None = None,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
) -> Settings:
    """Return the settings, merged from flags > environment > file > profile.

    ``profile`` and ``config_file`` are the ``--env`` and ``--config`` flags (None when not
    given); ``flags`` holds the other flags that were given (None values are dropped).
    Environment variables are read from ``os.environ``. Raises :class:`ConfigError` naming
    the key and its source for an unknown key, a bad value, an unknown profile or an
    unreadable file.
    """
    environ = os.environ
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    chosen = profile or given.get("env") or _env_value(environ, "env") or "development"
    profile_defaults(chosen)  # refuse an unknown profile by name, before anything else
    given["env"] = chosen

    if config_file is None:
        candidate = default_config_file()
        config_file = candidate if candidate.is_file() else None
    elif not config_file.is_file():
        raise ConfigError(f"{config_file}: config file not found")
    file_values = _read_toml(config_file) if config_file is not None else {}

    known = set(Settings.model_fields)
    for key in file_values:
        if key not in known:
            raise ConfigError(
                f"{config_file}: unknown key {key!r} (known: {', '.join(sorted(known))})"
            )
    for name in environ:
        if name.upper().startswith(ENV_PREFIX) and name[len(ENV_PREFIX) :].lower() not in known:
            raise ConfigError(f"environment variable {name}: unknown setting")

    token = _CONTEXT.set(_LoadContext(chosen, config_file))
    try:
        settings = Settings(**given)
    except ValidationError as exc:
        err = exc.errors(include_url=False)[0]
        key = str(err["loc"][0]) if err["loc"] else "?"
        where = _origin(key, given, environ, config_file, file_values, chosen)
        msg = str(err["msg"]).removeprefix("Value error, ")
        raise ConfigError(f"{where}: invalid value for {key!r}: {msg}") from None
    finally:
        _CONTEXT.reset(token)
    if settings.env == "production" and not settings.tls:
        where = _origin("tls", given, environ, config_file, file_values, chosen)
        raise ConfigError(f"{where}: the production profile requires TLS ('tls' cannot be off)")
    return settings


def _env_value(environ: Mapping[str, str], key: str) -> str | None:
    wanted = (ENV_PREFIX + key).upper()
    for name, value in environ.items():
        if name.upper() == wanted:
            return value
    return None


def _origin(
    key: str,
    flags: Mapping[str, Any],
    environ: Mapping[str, str],
    config_file: Path | None,
    file_values: Mapping[str, Any],
    profile: str,
) -> str:
    """Return where the winning value of ``key`` came from, for messages and ``config``."""
    if key in flags and not (key == "env" and _env_value(environ, "env") == flags[key]):
        return f"flag --{key.replace('_', '-')}"
    if _env_value(environ, key) is not None:
        return f"environment variable {ENV_PREFIX}{key.upper()}"
    if key in file_values:
        return str(config_file)
    return f"profile {profile}"


def describe_sources(
    settings: Settings,
    *,
    profile: str | None = None,
    config_file: Path | None = None,
    flags: Mapping[str, Any] | None = None,
) -> dict[str, str]:
    """Return, for each setting, where its value came from (as :func:`load_settings` merged)."""
    environ = os.environ
    given = {k: v for k, v in (flags or {}).items() if v is not None}
    if profile is not None:
        given["env"] = profile
    if config_file is None:
        candidate = default_config_file()
        config_file = candidate if candidate.is_file() else None
    file_values = _read_toml(config_file) if config_file is not None else {}
    return {
        key: _origin(key, given, environ, config_file, file_values, settings.env)
        for key in Settings.model_fields
    }


def server_limits(settings: Settings) -> ServerLimits:
    """Return what the tracker or a node's peer API bounds for each client, per ``settings``."""
    return ServerLimits(
        rate=settings.rate_limit,
        burst=settings.rate_burst,
        max_connections=settings.max_connections,
        header_timeout=settings.header_timeout,
        body_timeout=settings.body_timeout,
        max_header_size=settings.max_header_size,
    )
