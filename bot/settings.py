"""The one settings object, read once at start by the composition root (environment and .env)."""
from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.risk import SERVICE_COSTS_BPS

SHIPPED_MODELS = Path(__file__).resolve().parents[1] / "models_store"  # found from the package, not the working dir


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
    costs_bps: float = Field(SERVICE_COSTS_BPS, ge=0, description="trading costs per side, in basis points, taken from every return")
    families: str = Field("trend,ranking", pattern=r"^\s*[a-z_]+(\s*,\s*[a-z_]+)*\s*$",
                          description="strategy families that issue signals: trend (crypto, FX), ranking (equities), "
                                      "setups (the per-bar pullback and oversold setups)")
    breaker: bool = Field(True, description="the strategy breaker: a strategy scope (family/asset class) whose followed "
                                            "record falls 15 % from its peak or whose last 50 closed signals lost on "
                                            "average stops sending until its shadow signals recover")
    scan_interval: float = Field(2.0, gt=0, description="seconds between scans for newly closed bars")
    track_interval: float = Field(2.0, gt=0, description="seconds between lifecycle updates")
    delivery_poll: float = Field(1.0, gt=0, description="seconds between outbox polls when idle")
    metrics_token: SecretStr | None = Field(None, description="bearer token GET /metrics requires (unset: open to "
                                            "whoever reaches the HTTP port)")
    leader_interval: float = Field(2.0, gt=0, le=10, description="seconds between tries of the leader's lock (a "
                                   "follower takes over within this long after the leader's session ended)")
    sim_seed: int = 7
    sim_history_days: int = Field(400, ge=60)
    speed: float | None = Field(None, gt=0, description="simulated seconds per wall second (offline markets)")
    log_level: str = "INFO"
    log_format: str = Field("text", pattern=r"^(text|json)$", description="text lines, or one JSON object per line "
                            "(structlog): timestamp, level, logger, event, process, exception")
    market: str = Field("offline", pattern="^(offline|live)$", description="offline: simulated/replay; live: providers")
    update_interval: float = Field(300.0, gt=0, description="seconds between stored-bar updates (live)")
    yahoo_base_url: str | None = Field(None, description="override Yahoo's API host (tests, proxies)")
    crypto_exchange: str = "binance"
    crypto_base_url: str | None = Field(None, description="override the exchange's API host (tests, proxies)")
    crypto_stream: bool = Field(True, description="live: crypto bars from the exchange's WebSocket as they close "
                                "(each closed bar scanned at once); false: the update job's polling alone")
    crypto_ws_url: str | None = Field(None, description="override the exchange's stream URL (tests), e.g. "
                                      "ws://127.0.0.1:8083/ws")
    discord_api_base: str | None = Field(None, description="override Discord's HTTP API base (tests), e.g. "
                                         "http://127.0.0.1:8082/api/v10")
    discord_guild_id: int | None = Field(None, description="sync slash commands to this guild only (instant)")
    # HTTP server in the process: webhooks, /healthz, metrics
    http_host: str = "127.0.0.1"
    http_port: int | None = Field(None, ge=0, le=65535, description="port of the HTTP server; None: no server "
                                  "(it starts when a Stripe key is set or a port is given; 0 = any free port)")
    public_url: str = Field("http://127.0.0.1:8080", description="where users reach the HTTP server (Stripe "
                            "success/cancel pages)")
    # payments
    web_secret: SecretStr | None = Field(None, min_length=32, description="signs the dashboard's session cookies (JWT, HS256); "
                                         "at least 32 characters; unset: a random one per process (sessions end at a "
                                         "restart, and several processes need the same one)")
    stripe_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("STRIPE_API_KEY", "SIGNALBOT_STRIPE_API_KEY"))
    stripe_webhook_secret: SecretStr | None = Field(None, validation_alias=AliasChoices("STRIPE_WEBHOOK_SECRET",
                                                                                        "SIGNALBOT_STRIPE_WEBHOOK_SECRET"))
    stripe_api_base: str | None = Field(None, description="override Stripe's API base (tests)")
    stripe_prices: str = Field("", description="tier=price_id pairs, e.g. hobbyist=price_1,trader=price_2,"
                               "professional=price_3")
    stars_prices: str = Field("hobbyist=250,trader=750,professional=2000", description="tier=Telegram Stars per "
                              "30 days")
    # email and webhook delivery channels
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: SecretStr | None = None
    smtp_from: str = "signals@localhost"
    smtp_starttls: bool = True
    webhook_timeout: float = Field(10.0, gt=0)
    # LLM analysts
    openai_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("OPENAI_API_KEY", "SIGNALBOT_OPENAI_API_KEY"))
    openai_base_url: str | None = None
    openai_model: str = "gpt-4o-mini"
    anthropic_api_key: SecretStr | None = Field(None, validation_alias=AliasChoices("ANTHROPIC_API_KEY",
                                                                                   "SIGNALBOT_ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = None
    anthropic_model: str = "claude-haiku-4-5"
    llm_daily_token_budget: int = Field(2_000_000, ge=0, description="tokens per provider and UTC day")
    llm_daily_cost_budget_usd: float = Field(5.0, ge=0, description="spend per provider and UTC day")
    llm_timeout: float = Field(20.0, gt=0)
    llm_reasoning: bool = Field(True, description="signal reasoning written by the LLMs (Claude, then GPT) when a key "
                                "is set; false, or no key: the template text")
    llm_reasoning_budget: float = Field(8.0, gt=0, description="seconds the LLMs get per scan batch to write the "
                                        "reasoning; what is not written by then keeps the template text")
    news_dir: str | None = Field(None, description="replay news from this folder (layout of ../shared/data/news)")
    news_sources: str = Field("", description="live news sources, comma-separated: yahoo, rss:URL (none: no news "
                              "vote; offline, replayed data with a news folder is replayed)")
    news_interval: float = Field(300.0, gt=0, description="seconds between news fetches")
    # models
    models_dir: str = Field(str(SHIPPED_MODELS), description="where model versions live (default: the ones shipped "
                            "with the package, wherever the service is started from)")
    backtest_reports_dir: str = Field(str(SHIPPED_MODELS / "backtests"), description="the latest backtest report per scope, "
                                      "shown by /performance (`signalbot backtest --publish DIR` puts one there)")
    retrain_interval_hours: float = Field(24 * 7, gt=0)

    @property
    def admin_ids(self) -> frozenset[str]:
        return frozenset(a.strip() for a in self.admins.split(",") if a.strip())

    @staticmethod
    def pairs(text: str) -> dict[str, str]:
        """`a=1,b=2` -> {"a": "1", "b": "2"} (stripe_prices, stars_prices)."""
        out: dict[str, str] = {}
        for part in text.split(","):
            if part.strip():
                key, sep, value = part.partition("=")
                if not sep or not key.strip() or not value.strip():
                    raise ValueError(f"expected name=value, got {part.strip()!r}")
                out[key.strip().lower()] = value.strip()
        return out
