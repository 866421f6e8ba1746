from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from app.config import ConfigError, check_strength, load_settings

from .conftest import public_pem

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
