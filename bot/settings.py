"""The one settings object, read once at start by the composition root (environment and .env)."""
from __future__ import annotations

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SIGNALBOT_", env_file=".env", env_file_encoding="utf-8",
                                      extra="ignore")

    database_url: str = "sqlite+aiosqlite:///signalbot.db"
    telegram_token: SecretStr | None = Field(None, validation_alias=AliasChoices("TELEGRAM_TOKEN", "SIGNALBOT_TELEGRAM_TOKEN"))
    telegram_base_url: str | None = Field(None, description="Bot API base, e.g. http://127.0.0.1:8081/bot (a local "
                                          "Bot API server or a test fake); default https://api.telegram.org/bot")
    telegram_base_file_url: str | None = None
    telegram_messages_per_second: float = Field(30.0, ge=0, description="bot-wide send rate (PTB's rate limiter); "
                                                "0 = unlimited")
    discord_token: SecretStr | None = Field(None, validation_alias=AliasChoices("DISCORD_TOKEN", "SIGNALBOT_DISCORD_TOKEN"))
    admins: str = Field("", description="comma-separated platform:user_id pairs, e.g. telegram:123,discord:456")
    costs_bps: float = Field(5.0, ge=0, description="trading costs per side, in basis points, taken from every return")
    scan_interval: float = Field(2.0, gt=0, description="seconds between scans for newly closed bars")
    track_interval: float = Field(2.0, gt=0, description="seconds between lifecycle updates")
    delivery_poll: float = Field(1.0, gt=0, description="seconds between outbox polls when idle")
    sim_seed: int = 7
    sim_history_days: int = Field(400, ge=60)
    speed: float | None = Field(None, gt=0, description="simulated seconds per wall second (offline markets)")
    log_level: str = "INFO"
    market: str = Field("offline", pattern="^(offline|live)$", description="offline: simulated/replay; live: providers")
    update_interval: float = Field(300.0, gt=0, description="seconds between stored-bar updates (live)")
    yahoo_base_url: str | None = Field(None, description="override Yahoo's API host (tests, proxies)")
    crypto_exchange: str = "binance"
    crypto_base_url: str | None = Field(None, description="override the exchange's API host (tests, proxies)")

    @property
    def admin_ids(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.admins.split(",") if a.strip())
