"""Settings, from ``GAIA_*`` environment variables and the command line, in one place."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "gaia"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GAIA_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    # Empty: SQLite at <data_dir>/gaia.db. Otherwise any SQLAlchemy URL; PostgreSQL is the
    # production store (postgresql+psycopg://user:pass@host/db).
    database_url: str = ""
    # Fernet key (urlsafe base64, 32 bytes) that encrypts secrets at rest. Empty: a key file is
    # created in the data dir on first start (mode 0600).
    secret_key: str = ""
    admin_password: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    session_ttl_seconds: int = 12 * 3600
    cluster_health_interval_seconds: float = 10.0
    cluster_health_timeout_seconds: float = 5.0
    app_reconcile_interval_seconds: float = 1.0
    reservation_ttl_seconds: int = 600
    demo: bool = True

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.data_dir / 'gaia.db'}"
