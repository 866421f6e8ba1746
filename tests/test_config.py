from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import ConfigError, check_strength, described, load_settings

from .conftest import RELAY_SECRET, public_pem
from .servers import Served, environment

PEM_KEY = "-----BEGIN PUBLIC KEY-----"


@pytest.fixture
def environ(provider_key: Any) -> dict[str, str]:
    return {"BRIDGE_SECRET_KEY": "s" * 32, "BRIDGE_SG_PUBLIC_KEY": public_pem(provider_key)}


def test_defaults(environ: dict[str, str]) -> None:
    settings = load_settings(environ)
    assert settings.database_url == "sqlite:///instance/bridge.sqlite3"
    assert settings.secret_keys == ("s" * 32,)
    assert len(settings.sg_public_keys) == 1
    assert settings.api_keys == ()
    assert settings.public_url is None and settings.return_url is None
    assert settings.frame_ancestors == ()
    assert (settings.action_timeout, settings.token_ttl) == (3600, 21600)
    assert settings.allow_insecure_acs is False
    assert settings.webhook_max_bytes == 65536


def test_every_variable_is_read(environ: dict[str, str], provider_key: Any, tmp_path: Path) -> None:
    pem_file = tmp_path / "provider.pem"
    pem_file.write_text(public_pem(provider_key) * 2)
    settings = load_settings(
        {
            **environ,
            "BRIDGE_DATABASE_URL": "sqlite:////var/lib/bridge.db",
            "BRIDGE_SECRET_KEY": '["old-secret", "new-secret"]',
            "BRIDGE_SG_PUBLIC_KEY": str(pem_file),
            "BRIDGE_API_KEYS": '["k1", "k2"]',
            "BRIDGE_PUBLIC_URL": "https://pay.shop.test/",
            "BRIDGE_FRAME_ANCESTORS": "https://shop.test  https://*.shop.test:8443",
            "BRIDGE_RETURN_URL": "https://shop.test/done",
            "BRIDGE_ACTION_TIMEOUT": "600",
            "BRIDGE_TOKEN_TTL": "900",
            "BRIDGE_ALLOW_INSECURE_ACS": "yes",
        }
    )
    assert settings.database_url == "sqlite:////var/lib/bridge.db"
    assert settings.secret_keys == ("old-secret", "new-secret")
    assert len(settings.sg_public_keys) == 2
    assert settings.api_keys == ("k1", "k2")
    assert settings.public_url == "https://pay.shop.test"
    assert settings.frame_ancestors == ("https://shop.test", "https://*.shop.test:8443")
    assert settings.return_url == "https://shop.test/done"
    assert (settings.action_timeout, settings.token_ttl) == (600, 900)
    assert settings.allow_insecure_acs is True


def test_pem_squeezed_into_one_line(environ: dict[str, str], provider_key: Any) -> None:
    one_line = public_pem(provider_key).replace("\n", "\\n")
    assert len(load_settings({**environ, "BRIDGE_SG_PUBLIC_KEY": one_line}).sg_public_keys) == 1


def test_overrides_take_names_with_or_without_prefix(environ: dict[str, str]) -> None:
    settings = load_settings(environ, {"ACTION_TIMEOUT": 60, "BRIDGE_API_KEYS": ["a"]})
    assert settings.action_timeout == 60 and settings.api_keys == ("a",)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BRIDGE_SECRET_KEY", ""),
        ("BRIDGE_SECRET_KEY", "[1, 2]"),
        ("BRIDGE_SECRET_KEY", '["ok", ""]'),
        ("BRIDGE_SG_PUBLIC_KEY", "/no/such/file.pem"),
        (
            "BRIDGE_SG_PUBLIC_KEY",
            "-----BEGIN PUBLIC KEY-----\nnot base64\n-----END PUBLIC KEY-----",
        ),
        ("BRIDGE_API_KEYS", "k1,k2"),
        ("BRIDGE_API_KEYS", '[""]'),
        ("BRIDGE_DATABASE_URL", "mysql://db/bridge"),
        ("BRIDGE_DATABASE_URL", "sqlite:///"),
        ("BRIDGE_PUBLIC_URL", "bridge.example"),
        ("BRIDGE_PUBLIC_URL", "https://bridge.example/?x=1"),
        ("BRIDGE_FRAME_ANCESTORS", "https://shop.test/path"),
        ("BRIDGE_FRAME_ANCESTORS", "*"),
        ("BRIDGE_RETURN_URL", "ftp://shop.test/"),
        ("BRIDGE_ACTION_TIMEOUT", "0"),
        ("BRIDGE_ACTION_TIMEOUT", "an hour"),
        ("BRIDGE_TOKEN_TTL", "3600"),
        ("BRIDGE_ALLOW_INSECURE_ACS", "maybe"),
        ("BRIDGE_WEBHOOK_MAX_BYTES", "-5"),
        ("BRIDGE_KEPT_ANSWERS_MB", "-1"),
        ("BRIDGE_KEPT_ANSWERS_MB", "1.5"),
        ("BRIDGE_RELAY_SECRET", "not-whsec"),
        ("BRIDGE_RELAY_SECRET", "whsec_c2hvcnQ="),  # 5 bytes
        ("BRIDGE_RELAY_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_!!"),
        ("BRIDGE_RELAY_EVENTS", "everything"),
        ("BRIDGE_RELAY_EVENTS", " "),
    ],
)
def test_a_bad_value_names_its_variable(environ: dict[str, str], name: str, value: str) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**environ, name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}: ")
    assert "\n" not in message


@pytest.mark.parametrize("missing", ["BRIDGE_SECRET_KEY", "BRIDGE_SG_PUBLIC_KEY"])
def test_required_values(environ: dict[str, str], missing: str) -> None:
    del environ[missing]
    with pytest.raises(ConfigError, match=f"^{missing}: must be set"):
        load_settings(environ)


@pytest.mark.parametrize("missing", ["BRIDGE_SECRET_KEY", "BRIDGE_SG_PUBLIC_KEY"])
def test_serve_refuses_to_start_with_one_clear_line(environ: dict[str, str], missing: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    env.update({k: v for k, v in environ.items() if k != missing})
    result = subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert missing in lines[0]


def serve(environ: dict[str, str]) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [sys.executable, "-m", "app", "serve", "--port", "1"],
        env={**env, **environ},
        capture_output=True,
        text=True,
        timeout=60,
    )


def weak_rsa_pem() -> str:
    return public_pem(rsa.generate_private_key(public_exponent=65537, key_size=1024))


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("BRIDGE_SECRET_KEY", "x", "at least 32 characters"),
        ("BRIDGE_SECRET_KEY", "s" * 31, "at least 32 characters"),
        ("BRIDGE_SECRET_KEY", json.dumps(["s" * 32, "old"]), "at least 32 characters"),
        ("BRIDGE_API_KEYS", json.dumps(["k"]), "at least 20 characters"),
        ("BRIDGE_API_KEYS", json.dumps(["k" * 20, "k" * 19]), "at least 20 characters"),
        ("BRIDGE_SG_PUBLIC_KEY", None, "at least 2048 bits"),
        # A customer holding their own signed return found "qzx" offline in 0.1 s.
        ("BRIDGE_RETURN_SECRET", "qzx", "at least 32 characters"),
        ("BRIDGE_RETURN_SECRET", "r" * 31, "at least 32 characters"),
        ("BRIDGE_METRICS_TOKEN", "m" * 19, "at least 20 characters"),
    ],
)
def test_serve_refuses_weak_secrets_in_one_line(
    environ: dict[str, str], name: str, value: str | None, said: str
) -> None:
    result = serve({**environ, name: value if value is not None else weak_rsa_pem()})
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and said in lines[0], lines


def test_the_app_itself_takes_what_serve_refuses(environ: dict[str, str]) -> None:
    """Tests and embedders may build the app with short values; only ``serve`` refuses them."""
    settings = load_settings({**environ, "BRIDGE_SECRET_KEY": "x", "BRIDGE_API_KEYS": '["k"]'})
    assert settings.secret_keys == ("x",)
    with pytest.raises(ConfigError, match="BRIDGE_SECRET_KEY"):
        check_strength(settings)
    check_strength(load_settings({**environ, "BRIDGE_API_KEYS": json.dumps(["k" * 20])}))


def test_create_app_reads_the_environment_unless_given_one(
    environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from app import create_app

    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("BRIDGE_RETURN_URL", "https://shop.test/from-env")
    from_process = create_app().extensions["bridge"].settings
    assert from_process.return_url == "https://shop.test/from-env"
    given = create_app(dict(environ), environ={}).extensions["bridge"].settings
    assert given.return_url is None


# --- numbers, each with its unit ----------------------------------------------------------------

NUMBERS = {  # every numeric setting and the unit its message names
    "BRIDGE_ACTION_TIMEOUT": "a whole number of seconds",
    "BRIDGE_TOKEN_TTL": "a whole number of seconds",
    "BRIDGE_WEBHOOK_MAX_BYTES": "a whole number of bytes",
    "BRIDGE_SWEEP_INTERVAL": "a number of seconds",
    "BRIDGE_DB_POOL_MIN": "a whole number of connections",
    "BRIDGE_DB_POOL_MAX": "a whole number of connections",
    "BRIDGE_DB_TIMEOUT": "a number of seconds",
    "BRIDGE_STATUS_RATE_LIMIT": "a whole number of requests per minute",
    "BRIDGE_TOKEN_RATE_LIMIT": "a whole number of requests per minute",
    "BRIDGE_KEPT_ANSWERS_MB": "a whole number of MB",
    "BRIDGE_RELAY_TIMEOUT": "a number of seconds",
    "BRIDGE_RELAY_MAX_DELAY": "a number of seconds",
    "BRIDGE_RELAY_MAX_AGE": "a number of seconds",
    "BRIDGE_RETENTION_DAYS": "a number of days",
}


@pytest.mark.parametrize("name", sorted(NUMBERS))
def test_a_number_that_is_not_one_says_so_in_the_bridges_words(
    environ: dict[str, str], name: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**environ, name: "abc"})
    assert str(raised.value) == f"{name}: must be {NUMBERS[name]}, got 'abc'"


@pytest.mark.parametrize(
    ("name", "value", "said"),
    [
        ("BRIDGE_ACTION_TIMEOUT", "1.5", "must be a whole number of seconds, got '1.5'"),
        ("BRIDGE_ACTION_TIMEOUT", "0", "must be a whole number of seconds above 0, got '0'"),
        ("BRIDGE_RETENTION_DAYS", "-3", "must be a number of days above 0, got '-3'"),
        ("BRIDGE_DB_POOL_MAX", "", "must be a whole number of connections, got ''"),
        ("BRIDGE_STATUS_RATE_LIMIT", "-1", "0 switches it off"),
        ("BRIDGE_KEPT_ANSWERS_MB", "64MB", "must be a whole number of MB"),
        ("BRIDGE_DB_TIMEOUT", "0", "must be a number of seconds above 0, got '0'"),
        ("BRIDGE_RELAY_TIMEOUT", "nan", "must be a number of seconds, got 'nan'"),
        ("BRIDGE_RELAY_MAX_AGE", "inf", "must be a number of seconds, got 'inf'"),
        ("BRIDGE_SWEEP_INTERVAL", "15s", "must be a number of seconds, got '15s'"),
        ("BRIDGE_WEBHOOK_MAX_BYTES", "1e3", "must be a whole number of bytes, got '1e3'"),
        ("BRIDGE_TOKEN_TTL", "x" * 200, "got 'xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx…'"),
    ],
)
def test_a_number_out_of_range_names_its_unit(
    environ: dict[str, str], name: str, value: str, said: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**environ, name: value})
    message = str(raised.value)
    assert message.startswith(f"{name}: ") and said in message and "\n" not in message
    assert "invalid literal" not in message and "could not convert" not in message


def test_serve_says_a_bad_number_in_one_line_of_its_own_words(environ: dict[str, str]) -> None:
    result = serve({**environ, "BRIDGE_ACTION_TIMEOUT": "abc"})
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "redirect-bridge: configuration error: BRIDGE_ACTION_TIMEOUT: must be a whole number"
        " of seconds, got 'abc'"
    ]


# --- settings that cannot work together -----------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (
            {"BRIDGE_RELAY_MAX_AGE": "1", "BRIDGE_RELAY_TIMEOUT": "100"},
            "BRIDGE_RELAY_MAX_AGE: must be longer than BRIDGE_RELAY_TIMEOUT (100 s)",
        ),
        (
            {"BRIDGE_RELAY_MAX_AGE": "10"},  # the default attempt takes up to 10 s
            "BRIDGE_RELAY_MAX_AGE: must be longer than BRIDGE_RELAY_TIMEOUT (10 s)",
        ),
        (
            {"BRIDGE_TOKEN_TTL": str(7 * 86_400), "BRIDGE_RETENTION_DAYS": "1"},
            "BRIDGE_TOKEN_TTL: must be at most BRIDGE_RETENTION_DAYS (1 day, 86400 s)",
        ),
        (
            {"BRIDGE_TOKEN_TTL": "86401", "BRIDGE_RETENTION_DAYS": "1"},
            "BRIDGE_TOKEN_TTL: must be at most BRIDGE_RETENTION_DAYS (1 day, 86400 s)",
        ),
        (
            {"BRIDGE_TOKEN_TTL": "43201", "BRIDGE_RETENTION_DAYS": "0.5"},
            "BRIDGE_TOKEN_TTL: must be at most BRIDGE_RETENTION_DAYS (0.5 days, 43200 s)",
        ),
        (
            {"BRIDGE_ACTION_TIMEOUT": "600", "BRIDGE_TOKEN_TTL": "600"},
            "BRIDGE_TOKEN_TTL: must be longer than BRIDGE_ACTION_TIMEOUT (600 s)",
        ),
        (
            {"BRIDGE_DB_POOL_MIN": "5", "BRIDGE_DB_POOL_MAX": "4"},
            "BRIDGE_DB_POOL_MAX: must be at least BRIDGE_DB_POOL_MIN (5)",
        ),
    ],
)
def test_settings_that_cannot_work_together_are_refused_with_the_reason(
    environ: dict[str, str], values: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**environ, **values})
    assert str(raised.value).startswith(said), str(raised.value)
    assert "\n" not in str(raised.value)


def test_the_edges_of_those_combinations_are_taken(environ: dict[str, str]) -> None:
    settings = load_settings(
        {
            **environ,
            "BRIDGE_RELAY_TIMEOUT": "100",
            "BRIDGE_RELAY_MAX_AGE": "100.5",
            "BRIDGE_RELAY_MAX_DELAY": "3600",  # longer than the age: retries end with the age
            "BRIDGE_TOKEN_TTL": "86400",
            "BRIDGE_RETENTION_DAYS": "1",
        }
    )
    assert (settings.relay_max_age, settings.token_ttl) == (100.5, 86400)


@pytest.mark.parametrize(
    ("values", "said"),
    [
        (
            {"BRIDGE_RETURN_SECRET": "s" * 32},  # the token secret shared with the shop
            "BRIDGE_RETURN_SECRET: must not be one of BRIDGE_SECRET_KEY's",
        ),
        (
            {"BRIDGE_METRICS_TOKEN": "k" * 20, "BRIDGE_API_KEYS": json.dumps(["k" * 20])},
            "BRIDGE_METRICS_TOKEN: must not be one of BRIDGE_API_KEYS",
        ),
    ],
)
def test_serve_refuses_one_secret_doing_two_jobs(
    environ: dict[str, str], values: dict[str, str], said: str
) -> None:
    with pytest.raises(ConfigError, match=f"^{re.escape(said)}"):
        check_strength(load_settings({**environ, **values}))


# --- the return URL and its secret ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "said"),
    [
        ("https://shop.test/done?status=succeeded", "already names 'status' in its query"),
        ("https://shop.test/done?order=1&session_id=x", "already names 'session_id'"),
        ("https://shop.test/done?ts=1", "already names 'ts'"),
        ("https://shop.test/done?%73ig=1", "already names '%73ig'"),
        ("https://shop.test/done?STATUS=1", "already names 'STATUS'"),
        ("https://[shop.test/done", "does not parse as a URL"),
        ("https://shop.test]/done", "does not parse as a URL"),
        ("https://shop.test/done\n", "control characters or surrounding spaces"),
    ],
)
def test_a_return_url_the_outcome_cannot_join_is_refused(
    environ: dict[str, str], value: str, said: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_settings({**environ, "BRIDGE_RETURN_URL": value})
    message = str(raised.value)
    assert message.startswith("BRIDGE_RETURN_URL: ") and said in message, message
    assert "\n" not in message


def test_a_return_url_of_its_own_names_only_is_taken(environ: dict[str, str]) -> None:
    url = "https://shop.test/done?order=7&statuses=all#top"
    assert load_settings({**environ, "BRIDGE_RETURN_URL": url}).return_url == url


@pytest.mark.parametrize(
    "values",
    [
        {"BRIDGE_RETURN_URL": "https://shop.test/done"},
        {"BRIDGE_RETURN_ORIGINS": "https://shop.test"},
    ],
)
def test_returns_without_a_secret_start_with_a_warning(
    environ: dict[str, str], values: dict[str, str]
) -> None:
    unsigned = load_settings({**environ, **values}).warnings
    assert any("BRIDGE_RETURN_SECRET" in warning and "unsigned" in warning for warning in unsigned)
    signed = load_settings({**environ, **values, "BRIDGE_RETURN_SECRET": "r" * 32}).warnings
    assert signed == ()
    assert load_settings(environ).warnings == ()  # no return URL: nothing goes out


def test_serve_says_at_start_that_returns_go_out_unsigned(
    environ: dict[str, str], tmp_path: Path
) -> None:
    settings = environment(
        DATABASE_URL=f"sqlite:///{tmp_path / 'bridge.sqlite3'}",
        SECRET_KEY=environ["BRIDGE_SECRET_KEY"],
        SG_PUBLIC_KEY=environ["BRIDGE_SG_PUBLIC_KEY"],
        RETURN_URL="https://shop.test/done",
    )
    server = Served(settings, log=tmp_path / "serve.log").start()
    server.stop()
    entries = [json.loads(line) for line in (tmp_path / "serve.log").read_text().splitlines()]
    said = [entry["message"] for entry in entries if entry.get("level") == "warning"]
    assert any("returns go out unsigned" in line for line in said), said


# --- check-config ------------------------------------------------------------------------------

SCRIPT = Path(sys.executable).parent / "redirect-bridge"


def check_config(
    environ: dict[str, str], cwd: Path, *, module: bool = False
) -> subprocess.CompletedProcess[str]:
    """``redirect-bridge check-config`` (or ``python -m app check-config``) in ``cwd``."""
    command = [sys.executable, "-m", "app"] if module else [str(SCRIPT)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("BRIDGE_")}
    return subprocess.run(
        [*command, "check-config"],
        env={**env, **environ},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def rows(output: str) -> dict[str, tuple[str, str]]:
    """``BRIDGE_NAME  source  value`` lines: name -> (source, value)."""
    found = {}
    for line in output.splitlines():
        parts = line.split(None, 2)
        if parts and parts[0].startswith("BRIDGE_"):
            found[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return found


PLANTED = {
    "BRIDGE_SECRET_KEY": json.dumps(
        ["old-secret-planted-0123456789-abcdef", "new-secret-planted-" + "n" * 20]
    ),
    "BRIDGE_API_KEYS": json.dumps(["api-key-planted-0123456789"]),
    "BRIDGE_RETURN_SECRET": "return-secret-planted-0123456789-abcdef",
    "BRIDGE_METRICS_TOKEN": "metrics-token-planted-0123",
    "BRIDGE_DATABASE_URL": "postgresql://bridge:DBPASSWORD-planted@db.internal:5432/bridge?sslpassword=SSLPASS-planted",
    "BRIDGE_RELAY_URL": "https://user:RELAYPASSWORD-planted@partner.example/hook?token=RELAYSECRET-planted",
    "BRIDGE_RELAY_SECRET": "whsec_RELAYplantedSECRETplantedKEYS012",
    "BRIDGE_RETURN_URL": "https://shop.test/done?order=QUERYVALUE-planted#top",
}


def secrets_in(values: dict[str, str]) -> list[str]:
    """The planted secrets, each on its own (a JSON list's items too)."""
    found = []
    for value in values.values():
        found += re.findall(r"[A-Za-z0-9-]*planted[A-Za-z0-9-]*", value)
    return found


def test_check_config_shows_every_setting_its_source_and_no_secret(
    environ: dict[str, str], tmp_path: Path
) -> None:
    result = check_config({**environ, **PLANTED, "BRIDGE_RELAY_MAX_DELAY": "60"}, tmp_path)
    assert result.returncode == 0, result.stderr
    shown = rows(result.stdout)
    every = set(NUMBERS) | {
        "BRIDGE_DATABASE_URL",
        "BRIDGE_SECRET_KEY",
        "BRIDGE_SG_PUBLIC_KEY",
        "BRIDGE_API_KEYS",
        "BRIDGE_PUBLIC_URL",
        "BRIDGE_FRAME_ANCESTORS",
        "BRIDGE_RETURN_URL",
        "BRIDGE_RETURN_SECRET",
        "BRIDGE_RETURN_ORIGINS",
        "BRIDGE_RELAY_URL",
        "BRIDGE_RELAY_SECRET",
        "BRIDGE_RELAY_EVENTS",
        "BRIDGE_METRICS_TOKEN",
        "BRIDGE_ALLOW_INSECURE_ACS",
        "BRIDGE_LOG_FORMAT",
    }
    assert every <= set(shown), every - set(shown)
    assert shown["BRIDGE_RELAY_MAX_DELAY"] == ("environment", "60 s")
    assert shown["BRIDGE_RELAY_MAX_AGE"] == ("default", "259200 s")
    assert shown["BRIDGE_ACTION_TIMEOUT"] == ("default", "3600 s")
    assert shown["BRIDGE_SECRET_KEY"][0] == "environment"
    assert shown["BRIDGE_PUBLIC_URL"][0] == "default"
    assert shown["BRIDGE_DATABASE_URL"][1].startswith(
        "postgresql://bridge:***@db.internal:5432/bridge?***"
    )
    assert shown["BRIDGE_RELAY_URL"][1] == "https://***@partner.example/hook?***"
    assert shown["BRIDGE_RETURN_URL"][1] == "https://shop.test/done?***#top"
    assert "2 secrets" in shown["BRIDGE_SECRET_KEY"][1]
    assert "RSA" in shown["BRIDGE_SG_PUBLIC_KEY"][1] and PEM_KEY not in result.stdout
    leaked = [secret for secret in secrets_in(PLANTED) if secret in result.stdout + result.stderr]
    assert leaked == []
    # the columns line up: every source starts at one place, and every value
    columns = {
        (len(match[1]), len(match[1] + match[2]))
        for line in result.stdout.splitlines()
        if (match := re.match(r"(BRIDGE_\S+ +)(\S+ +)\S", line))
    }
    assert len(columns) == 1, columns


def test_check_config_shows_each_setting_the_readme_lists(environ: dict[str, str]) -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    table = readme.split("### Configuration\n", 1)[1].split("\n## ", 1)[0]
    first_cells = re.findall(r"^\| ([^|]+) \|", table, re.MULTILINE)  # some hold several
    listed = {name for cell in first_cells for name in re.findall(r"BRIDGE_[A-Z_]+", cell)}
    shown = [name for name, _, _ in described(load_settings(environ), environ)]
    assert sorted(shown) == sorted(listed)


def test_check_config_lists_the_warnings(environ: dict[str, str], tmp_path: Path) -> None:
    result = check_config(
        {**environ, "BRIDGE_RETURN_URL": "https://shop.test/done", "BRIDGE_API_KEY": "typo"},
        tmp_path,
        module=True,
    )
    assert result.returncode == 0, result.stderr
    assert "returns go out unsigned" in result.stdout
    assert "BRIDGE_API_KEY is not a setting of this version" in result.stdout
    assert rows(result.stdout)["BRIDGE_RETURN_SECRET"] == ("default", "not set")


@pytest.mark.parametrize(
    "values",
    [
        {"BRIDGE_ACTION_TIMEOUT": "abc"},
        {"BRIDGE_RETURN_SECRET": "qzx"},
        {"BRIDGE_RELAY_MAX_AGE": "1", "BRIDGE_RELAY_TIMEOUT": "100"},
        {"BRIDGE_RETURN_URL": "https://shop.test/?status=succeeded"},
        {"BRIDGE_SECRET_KEY": ""},
    ],
)
def test_check_config_fails_as_serve_does(
    environ: dict[str, str], tmp_path: Path, values: dict[str, str]
) -> None:
    checked = check_config({**environ, **values}, tmp_path)
    served = serve({**environ, **values})
    assert checked.returncode == served.returncode == 2
    assert checked.stderr.strip() == served.stderr.strip()
    assert len(checked.stderr.strip().splitlines()) == 1


def test_check_config_changes_nothing(environ: dict[str, str], tmp_path: Path) -> None:
    database = tmp_path / "data" / "bridge.sqlite3"
    (tmp_path / "data").mkdir()
    for values in ({"BRIDGE_DATABASE_URL": f"sqlite:///{database}"}, {}):  # and the default
        result = check_config({**environ, **values}, tmp_path)
        assert result.returncode == 0, result.stderr
    assert not database.exists()
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["data"]  # no ./instance/ either


def test_the_relay_is_signed_or_refused(environ: dict[str, str]) -> None:
    """Every relayed message is signed (Standard Webhooks): a relay URL without the bridge's
    secret cannot start; rotation lists several, and each signs."""
    relay = {**environ, "BRIDGE_RELAY_URL": "https://partner.test/hook"}
    with pytest.raises(ConfigError, match="^BRIDGE_RELAY_SECRET: must be set with"):
        load_settings(relay)
    old, new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", "whsec_" + "QUJD" * 8
    settings = load_settings({**relay, "BRIDGE_RELAY_SECRET": f"{old} {new}"})
    assert settings.relay_secrets == (old, new)
    assert settings.relay_events == {"provider"}
    both = load_settings(
        {**relay, "BRIDGE_RELAY_SECRET": old, "BRIDGE_RELAY_EVENTS": "bridge provider"}
    )
    assert both.relay_events == {"provider", "bridge"}


@pytest.mark.parametrize(
    "url", ["https://u:p@partner.example:99999/h", "http://u:p@:80/h", "https://:8443/h"]
)
def test_a_url_with_no_host_or_an_impossible_port_is_refused(
    environ: dict[str, str], url: str
) -> None:
    """Such a relay URL would fail every delivery quietly for days."""
    with pytest.raises(ConfigError, match="^BRIDGE_RELAY_URL: "):
        load_settings({**environ, "BRIDGE_RELAY_URL": url, "BRIDGE_RELAY_SECRET": RELAY_SECRET})


def test_an_unpadded_relay_secret_is_taken_as_the_libraries_take_it(
    environ: dict[str, str],
) -> None:
    """The Standard Webhooks libraries decode a secret without its base64 padding too."""
    unpadded = "whsec_" + "QUJDREVGR0hJSktMTU5PUFFSU1RVVldYWVo"  # 26 bytes, no "="
    relay = {"BRIDGE_RELAY_URL": "https://partner.test/hook", "BRIDGE_RELAY_SECRET": unpadded}
    assert load_settings({**environ, **relay}).relay_secrets == (unpadded,)
