"""Settings from ``BRIDGE_*`` environment variables, checked once at start-up."""

from __future__ import annotations

import base64
import dataclasses
import json
import logging
import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from .returns import joinable

PREFIX = "BRIDGE_"
DEFAULT_DATABASE_URL = "sqlite:///instance/bridge.sqlite3"
# Defaults that code outside this module needs too (the stores' own arguments).
DB_POOL_MIN, DB_POOL_MAX, DB_TIMEOUT = 2, 10, 5.0
RELAY_TIMEOUT, RELAY_MAX_DELAY, RELAY_MAX_AGE = 10.0, 600.0, 259_200.0
# Webhook bodies hold PaReq, MD and card data: kept long enough to answer a dispute about a
# session's flow or a late chargeback question with the history (which stays), not for years.
RETENTION_DAYS = 30
KEPT_ANSWERS_MB = 64  # per process: thousands of customer pages
DAY = 86_400  # seconds
_PEM_BLOCK = re.compile(
    rb"-----BEGIN (?:RSA )?PUBLIC KEY-----.+?-----END (?:RSA )?PUBLIC KEY-----", re.DOTALL
)
_ORIGIN = re.compile(r"^https?://(\*\.)?[A-Za-z0-9.-]+(:\d{1,5})?$")
_SEGMENT = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@]+")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}

log = logging.getLogger(__name__)


class ConfigError(Exception):
    """A configuration value is missing or wrong; the message names the variable."""


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str
    secret_keys: tuple[str, ...]
    sg_public_keys: tuple[RSAPublicKey, ...]
    api_keys: tuple[str, ...]
    public_url: str | None
    frame_ancestors: tuple[str, ...]
    return_url: str | None
    action_timeout: int
    token_ttl: int
    allow_insecure_acs: bool
    webhook_max_bytes: int
    sweep_interval: float
    db_pool_min: int
    db_pool_max: int
    db_timeout: float
    status_rate_limit: int
    token_rate_limit: int
    log_format: str
    metrics_token: str | None = None
    return_secret: str | None = None  # signs the return to the partner (``sig``)
    return_origins: tuple[str, ...] = ()  # where a token's own return_url may go
    relay_url: str | None = None  # the partner backend that receives every accepted webhook
    relay_secrets: tuple[str, ...] = ()  # whsec_…: each signs every relayed message
    relay_events: frozenset[str] = frozenset({"provider"})  # what goes to relay_url
    relay_timeout: float = RELAY_TIMEOUT
    relay_max_delay: float = RELAY_MAX_DELAY
    relay_max_age: float = RELAY_MAX_AGE
    retention_days: float = RETENTION_DAYS  # fractions allowed (a soak's short retention)
    kept_answers_mb: int = KEPT_ANSWERS_MB  # status answers and pages kept per process
    warnings: tuple[str, ...] = ()  # said in the log at start: settings that work but worry


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read settings from the environment, then from ``overrides`` (keys with or without prefix).

    Raises :class:`ConfigError` with one line that names the variable at fault.
    """
    values = {k: v for k, v in (os.environ if environ is None else environ).items()}
    for key, value in (overrides or {}).items():
        name = key if key.startswith(PREFIX) else PREFIX + key
        values[name] = _as_text(value)

    known: set[str] = set()

    def read(name: str, parse: Callable[[str], Any], default: Any = None) -> Any:
        known.add(PREFIX + name)
        raw = values.get(PREFIX + name)
        if raw is None:
            return default
        try:
            return parse(raw)
        except (ValueError, OSError) as error:
            raise ConfigError(f"{PREFIX}{name}: {error}") from None

    secret_keys = read("SECRET_KEY", _secret_keys)
    if not secret_keys:
        raise ConfigError(f"{PREFIX}SECRET_KEY: must be set (a secret, or a JSON list of secrets)")
    sg_keys = read("SG_PUBLIC_KEY", _public_keys)
    if not sg_keys:
        raise ConfigError(f"{PREFIX}SG_PUBLIC_KEY: must be set (PEM text or a path to a PEM file)")
    seconds, whole_seconds = _number("seconds"), _whole("seconds")
    settings = Settings(
        database_url=read("DATABASE_URL", _database_url, DEFAULT_DATABASE_URL),
        secret_keys=secret_keys,
        sg_public_keys=sg_keys,
        api_keys=read("API_KEYS", _api_keys, ()),
        public_url=read("PUBLIC_URL", _base_url),
        frame_ancestors=read("FRAME_ANCESTORS", _origins, ()),
        return_url=read("RETURN_URL", _return_url),
        action_timeout=read("ACTION_TIMEOUT", whole_seconds, 3600),
        token_ttl=read("TOKEN_TTL", whole_seconds, 21600),
        allow_insecure_acs=read("ALLOW_INSECURE_ACS", _boolean, False),
        webhook_max_bytes=read("WEBHOOK_MAX_BYTES", _whole("bytes"), 64 * 1024),
        sweep_interval=read("SWEEP_INTERVAL", seconds, 15.0),
        db_pool_min=read("DB_POOL_MIN", _whole("connections"), DB_POOL_MIN),
        db_pool_max=read("DB_POOL_MAX", _whole("connections"), DB_POOL_MAX),
        db_timeout=read("DB_TIMEOUT", seconds, DB_TIMEOUT),
        status_rate_limit=read("STATUS_RATE_LIMIT", _whole_or_off("requests per minute"), 120),
        token_rate_limit=read("TOKEN_RATE_LIMIT", _whole_or_off("requests per minute"), 600),
        log_format=read("LOG_FORMAT", _log_format, "json"),
        metrics_token=read("METRICS_TOKEN", _secret),
        return_secret=read("RETURN_SECRET", _secret),
        return_origins=read("RETURN_ORIGINS", _exact_origins, ()),
        relay_url=read("RELAY_URL", _absolute_url),
        relay_secrets=read("RELAY_SECRET", _relay_secrets, ()),
        relay_events=read("RELAY_EVENTS", _relay_events, frozenset({"provider"})),
        relay_timeout=read("RELAY_TIMEOUT", seconds, RELAY_TIMEOUT),
        relay_max_delay=read("RELAY_MAX_DELAY", seconds, RELAY_MAX_DELAY),
        relay_max_age=read("RELAY_MAX_AGE", seconds, RELAY_MAX_AGE),
        retention_days=read("RETENTION_DAYS", _number("days"), RETENTION_DAYS),
        kept_answers_mb=read("KEPT_ANSWERS_MB", _whole_or_off("MB"), KEPT_ANSWERS_MB),
    )
    _refuse_what_cannot_work_together(settings)
    unknown = sorted(name for name in values if name.startswith(PREFIX) and name not in known)
    warnings = [f"{name} is not a setting of this version; it is ignored" for name in unknown]
    if settings.allow_insecure_acs:
        warnings.append(
            f"{PREFIX}ALLOW_INSECURE_ACS is on: plain http:// bank pages are shown (demo and"
            " local tests only)"
        )
    if (settings.return_url or settings.return_origins) and settings.return_secret is None:
        which = "RETURN_URL" if settings.return_url else "RETURN_ORIGINS"
        warnings.append(
            f"{PREFIX}{which} is set without {PREFIX}RETURN_SECRET: returns go out unsigned,"
            " so a customer can change the status they carry (set one of 32 or more random"
            " characters, and have the shop check sig)"
        )
    return dataclasses.replace(settings, warnings=tuple(warnings))


def _refuse_what_cannot_work_together(settings: Settings) -> None:
    """Raise :class:`ConfigError` for values that are each fine but cannot work together; the
    message names the one to change and why."""
    if settings.token_ttl <= settings.action_timeout:
        raise ConfigError(
            f"{PREFIX}TOKEN_TTL: must be longer than {PREFIX}ACTION_TIMEOUT"
            f" ({settings.action_timeout} s), so a status answer can still say canceled"
        )
    days = settings.retention_days
    if settings.token_ttl > days * DAY:
        raise ConfigError(
            f"{PREFIX}TOKEN_TTL: must be at most {PREFIX}RETENTION_DAYS ({days:g} day"
            f"{'' if days == 1 else 's'}, {days * DAY:g} s): a token must not outlive its"
            " session's data"
        )
    if settings.db_pool_max < settings.db_pool_min:
        raise ConfigError(
            f"{PREFIX}DB_POOL_MAX: must be at least {PREFIX}DB_POOL_MIN ({settings.db_pool_min})"
        )
    if settings.relay_url is not None and not settings.relay_secrets:
        raise ConfigError(
            f"{PREFIX}RELAY_SECRET: must be set with {PREFIX}RELAY_URL: every relayed message is"
            " signed for the partner to verify (Standard Webhooks). Make one:"
            " python3 -c 'import base64, secrets;"
            ' print("whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())\''
        )
    if settings.relay_max_age <= settings.relay_timeout:
        raise ConfigError(
            f"{PREFIX}RELAY_MAX_AGE: must be longer than {PREFIX}RELAY_TIMEOUT"
            f" ({settings.relay_timeout:g} s): a delivery is tried until it is that old, and"
            " one attempt may take that long"
        )


# What ``serve`` takes as strong enough; ``demo`` makes stronger ones.
MIN_SECRET_LENGTH = 32
MIN_API_KEY_LENGTH = 20
MIN_RSA_BITS = 2048


def check_strength(settings: Settings) -> None:
    """Raise :class:`ConfigError` for a secret that is too weak to serve customers with: anyone
    holding one token could guess a short signing secret offline, a short API key online, and a
    small RSA key can be factored."""
    if any(len(key) < MIN_SECRET_LENGTH for key in settings.secret_keys):
        raise ConfigError(
            f"{PREFIX}SECRET_KEY: every secret must be at least {MIN_SECRET_LENGTH} characters"
            " (for example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if any(len(key) < MIN_API_KEY_LENGTH for key in settings.api_keys):
        raise ConfigError(
            f"{PREFIX}API_KEYS: every key must be at least {MIN_API_KEY_LENGTH} characters"
        )
    if any(key.key_size < MIN_RSA_BITS for key in settings.sg_public_keys):
        raise ConfigError(f"{PREFIX}SG_PUBLIC_KEY: RSA keys must be at least {MIN_RSA_BITS} bits")
    # A customer holds the signed return of their own payment: a short secret is found offline
    # from it, and then any status can be signed.
    if settings.return_secret is not None and len(settings.return_secret) < MIN_SECRET_LENGTH:
        raise ConfigError(
            f"{PREFIX}RETURN_SECRET: must be at least {MIN_SECRET_LENGTH} characters (for"
            " example: python3 -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    if settings.return_secret in settings.secret_keys:
        raise ConfigError(
            f"{PREFIX}RETURN_SECRET: must not be one of {PREFIX}SECRET_KEY's secrets: the shop"
            " holds it, and could then mint any customer's token"
        )
    if settings.metrics_token is not None and len(settings.metrics_token) < MIN_API_KEY_LENGTH:
        raise ConfigError(
            f"{PREFIX}METRICS_TOKEN: must be at least {MIN_API_KEY_LENGTH} characters"
        )
    if settings.metrics_token in settings.api_keys:
        raise ConfigError(
            f"{PREFIX}METRICS_TOKEN: must not be one of {PREFIX}API_KEYS: whatever scrapes the"
            " metrics could then call the partner API"
        )


def redacted_url(url: str, *, keep_user: bool = False) -> str:
    """``url`` with its userinfo and its query as ``***``, as logs and ``check-config`` show it:
    either may carry a credential (``https://user:password@host/hook?token=...``).
    ``keep_user`` keeps a user name and masks only its password (a database URL's)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    if parts.netloc:
        userinfo, at, host = parts.netloc.rpartition("@")
        if at:
            user, colon, _ = userinfo.partition(":")
            userinfo = f"{user}{':***' if colon else ''}" if keep_user else "***"
        start = url.index("//") + 2  # spliced, not rebuilt: urlunsplit spoils sqlite:///PATH
        url = f"{url[:start]}{userinfo}{at}{host}{url[start + len(parts.netloc) :]}"
    if parts.query:
        before, _, after = url.partition("?")
        _, hash_mark, fragment = after.partition("#")
        url = f"{before}?***{hash_mark}{fragment}"
    return url


def described(settings: Settings, environ: Mapping[str, str]) -> list[tuple[str, str, str]]:
    """Every setting as ``check-config`` shows it, in README's order: its variable, where its
    value came from (``environment`` or ``default``), and the value with every secret masked
    (keys, tokens, a URL's userinfo and query)."""
    shown = _shown(settings, environ.get(f"{PREFIX}SG_PUBLIC_KEY", ""))
    return [
        (PREFIX + name, "environment" if PREFIX + name in environ else "default", value)
        for name, value in shown.items()
    ]


def _shown(settings: Settings, key_source: str) -> dict[str, str]:
    s = settings
    return {
        "DATABASE_URL": redacted_url(s.database_url, keep_user=True),
        "SECRET_KEY": _masked(s.secret_keys, "secret"),
        "SG_PUBLIC_KEY": _described_keys(s.sg_public_keys, key_source),
        "API_KEYS": _masked(s.api_keys, "key"),
        "PUBLIC_URL": _url(s.public_url),
        "FRAME_ANCESTORS": " ".join(s.frame_ancestors) or "none",
        "RETURN_URL": _url(s.return_url),
        "RETURN_SECRET": _masked((s.return_secret,) if s.return_secret else (), "secret"),
        "RETURN_ORIGINS": " ".join(s.return_origins) or "none",
        "ACTION_TIMEOUT": f"{s.action_timeout} s",
        "TOKEN_TTL": f"{s.token_ttl} s",
        "ALLOW_INSECURE_ACS": "true" if s.allow_insecure_acs else "false",
        "WEBHOOK_MAX_BYTES": f"{s.webhook_max_bytes} bytes",
        "SWEEP_INTERVAL": f"{s.sweep_interval:g} s",
        "DB_POOL_MIN": str(s.db_pool_min),
        "DB_POOL_MAX": str(s.db_pool_max),
        "DB_TIMEOUT": f"{s.db_timeout:g} s",
        "KEPT_ANSWERS_MB": f"{s.kept_answers_mb} MB" if s.kept_answers_mb else "0 (off)",
        "STATUS_RATE_LIMIT": _per_minute(s.status_rate_limit),
        "TOKEN_RATE_LIMIT": _per_minute(s.token_rate_limit),
        "LOG_FORMAT": s.log_format,
        "RELAY_URL": _url(s.relay_url),
        "RELAY_SECRET": _masked(s.relay_secrets, "secret"),
        "RELAY_EVENTS": " ".join(sorted(s.relay_events)),
        "RELAY_TIMEOUT": f"{s.relay_timeout:g} s",
        "RELAY_MAX_DELAY": f"{s.relay_max_delay:g} s",
        "RELAY_MAX_AGE": f"{s.relay_max_age:g} s",
        "RETENTION_DAYS": f"{s.retention_days:g} days",
        "METRICS_TOKEN": _masked((s.metrics_token,) if s.metrics_token else (), "token"),
    }


def _masked(secrets: tuple[str, ...], kind: str) -> str:
    """How many secrets and how long: enough to tell a rotation or a truncated paste."""
    lengths = ", ".join(str(len(secret)) for secret in secrets)
    if len(secrets) > 1:
        return f"******** ({len(secrets)} {kind}s: {lengths} characters)"
    return f"******** ({lengths} characters)" if secrets else "not set"


def _described_keys(keys: tuple[RSAPublicKey, ...], source: str) -> str:
    where = "PEM text" if "-----BEGIN" in source else source.strip()
    bits = ", ".join(str(key.key_size) for key in keys)
    return f"{where} ({len(keys)} RSA key{'s' if len(keys) > 1 else ''}, {bits} bits)"


def _url(url: str | None) -> str:
    return "not set" if url is None else redacted_url(url)


def _per_minute(limit: int) -> str:
    return f"{limit} requests per minute" if limit else "0 (off)"


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list | tuple):
        return json.dumps(list(value))
    return str(value)


def _secret_keys(raw: str) -> tuple[str, ...]:
    keys = _json_strings(raw) if raw.lstrip().startswith("[") else [raw]
    if not all(keys):
        raise ValueError("secrets must not be empty")
    return tuple(keys)


def _public_keys(raw: str) -> tuple[RSAPublicKey, ...]:
    text = raw.strip()
    if "-----BEGIN" not in text:
        path = Path(text)
        if not path.is_file():
            raise ValueError(f"no PEM text and no file at {text!r}")
        text = path.read_text()
    if "\n" not in text.strip():
        text = text.replace("\\n", "\n")  # PEM squeezed into one line of an env file
    blocks = _PEM_BLOCK.findall(text.encode())
    if not blocks:
        raise ValueError("no PEM public key block found")
    keys = []
    for block in blocks:
        key = load_pem_public_key(block)
        if not isinstance(key, RSAPublicKey):
            raise ValueError("every key must be an RSA public key")
        keys.append(key)
    return tuple(keys)


RELAY_SECRET_PREFIX = "whsec_"
MIN_RELAY_SECRET_BYTES = 24
RELAY_EVENT_KINDS = ("provider", "bridge")


def _relay_secrets(raw: str) -> tuple[str, ...]:
    """Standard Webhooks secrets, space-separated while rotating: ``whsec_`` and the base64 of
    at least 24 random bytes each."""
    secrets = tuple(raw.split())
    if not secrets:
        raise ValueError("must not be empty")
    for secret in secrets:
        key = secret.removeprefix(RELAY_SECRET_PREFIX)
        try:  # padded or not, as the libraries take it
            decoded = base64.b64decode(key + "=" * (-len(key) % 4), validate=True)
        except ValueError:
            decoded = b""
        if not secret.startswith(RELAY_SECRET_PREFIX) or len(decoded) < MIN_RELAY_SECRET_BYTES:
            raise ValueError(
                f"each secret must be {RELAY_SECRET_PREFIX} and the base64 of at least"
                f" {MIN_RELAY_SECRET_BYTES} random bytes"
            )
    return secrets


def _relay_events(raw: str) -> frozenset[str]:
    kinds = frozenset(raw.split())
    if not kinds or not kinds <= set(RELAY_EVENT_KINDS):
        raise ValueError(f"expected {' or '.join(RELAY_EVENT_KINDS)}, or both, space-separated")
    return kinds


def _secret(raw: str) -> str:
    if not raw:
        raise ValueError("must not be empty")
    return raw


def _api_keys(raw: str) -> tuple[str, ...]:
    keys = _json_strings(raw)
    if not all(keys):
        raise ValueError("API keys must not be empty")
    return tuple(keys)


def _json_strings(raw: str) -> list[str]:
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        raise ValueError("expected a JSON list of strings") from None
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError("expected a JSON list of strings")
    return value


def _database_url(raw: str) -> str:
    if raw.startswith("sqlite:///") and len(raw) > len("sqlite:///"):
        return raw
    if raw.startswith(("postgresql://", "postgres://")) and urlsplit(raw).hostname:
        return raw
    raise ValueError("expected sqlite:///PATH or postgresql://USER@HOST/DATABASE")


def _absolute_url(raw: str) -> str:
    try:
        parts = urlsplit(raw)
    except ValueError:  # brackets around no IPv6 address, and the like
        raise ValueError("does not parse as a URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected an absolute http(s) URL with a host")
    try:
        parts.port  # noqa: B018 - read for its check
    except ValueError:
        raise ValueError("its port is not a number from 0 to 65535") from None
    return raw


def _return_url(raw: str) -> str:
    """An absolute URL the outcome can be appended to (see :func:`app.returns.joinable`)."""
    joinable(raw)  # raises ReturnURLRefusedError, a ValueError whose message follows the name
    return _absolute_url(raw)


def _base_url(raw: str) -> str:
    url = _absolute_url(raw).rstrip("/")
    if urlsplit(url).query or urlsplit(url).fragment:
        raise ValueError("a base URL cannot carry a query or a fragment")
    segments = urlsplit(url).path.split("/")[1:]
    # A link to "//bridge/…" or "/\\evil.example/…" is to another host, and one with a dot
    # segment may leave the path: only plain segments.
    if any(segment in ("", ".", "..") or not _SEGMENT.fullmatch(segment) for segment in segments):
        raise ValueError(
            "a base URL's path must be plain segments (letters, digits and -._~!$&'()*+,;=:@),"
            " with no empty (//), . or .. segment"
        )
    return url


def _origins(raw: str) -> tuple[str, ...]:
    origins = tuple(raw.split())
    for origin in origins:
        if not _ORIGIN.match(origin):
            raise ValueError(f"{origin!r} is not an origin like https://shop.example")
    return origins


def _exact_origins(raw: str) -> tuple[str, ...]:
    origins = _origins(raw)
    if any("*" in origin for origin in origins):
        raise ValueError("origins here are exact: no * patterns")
    return origins


def _whole(unit: str) -> Callable[[str], int]:
    """A parser of a whole number of ``unit`` above 0, whose message names the unit."""

    def parse(raw: str) -> int:
        value = _integer(raw, unit)
        if value <= 0:
            raise ValueError(f"must be a whole number of {unit} above 0, got {_quoted(raw)}")
        return value

    return parse


def _whole_or_off(unit: str) -> Callable[[str], int]:
    """A parser of a whole number of ``unit``, 0 switching the feature off."""

    def parse(raw: str) -> int:
        value = _integer(raw, unit)
        if value < 0:
            raise ValueError(
                f"must be a whole number of {unit} (0 switches it off), got {_quoted(raw)}"
            )
        return value

    return parse


def _number(unit: str) -> Callable[[str], float]:
    """A parser of a number of ``unit`` above 0, fractions allowed (``0.5``)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not math.isfinite(value):
            raise ValueError(f"must be a number of {unit}, got {_quoted(raw)}")
        if value <= 0:
            raise ValueError(f"must be a number of {unit} above 0, got {_quoted(raw)}")
        return value

    return parse


def _integer(raw: str, unit: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError(f"must be a whole number of {unit}, got {_quoted(raw)}") from None


def _quoted(raw: str) -> str:
    """``raw`` as a message quotes it: on one line, and not all of a long one."""
    return repr(raw if len(raw) <= 40 else f"{raw[:40]}…")


def _log_format(raw: str) -> str:
    if raw not in ("json", "text"):
        raise ValueError("expected json or text")
    return raw


def _boolean(raw: str) -> bool:
    text = raw.strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("expected true or false")
