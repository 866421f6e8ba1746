"""docs/deploy/ stays true to the code: the unit runs a ``serve`` command line the CLI accepts,
the environment file and every ``BRIDGE_`` variable the docs name are settings, the nginx site
fits the bridge's limits, and every metric the alerts use is on ``/metrics``. Where nginx,
systemd-analyze or promtool are installed, they check their files too."""

from __future__ import annotations

import base64
import datetime
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from uvicorn import Config

from app import create_app
from app.cli import serve
from app.config import ConfigError, check_strength, load_settings
from app.schemas import MAX_WAIT
from app.signature import sign
from app.status_service import KEEP_ALIVE_SECONDS

from .conftest import public_pem
from .payloads import webhook

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "docs" / "deploy"
UNIT = DEPLOY / "redirect-bridge.service"
ENV_FILE = DEPLOY / "redirect-bridge.env"
NGINX = DEPLOY / "nginx.conf"
NGINX_UNDER_A_PATH = DEPLOY / "nginx-under-a-path.conf"  # a location for the shop's own server
PROMETHEUS = DEPLOY / "prometheus.yml"
ALERTS = DEPLOY / "redirect-bridge-alerts.yml"
ALERT_TESTS = DEPLOY / "redirect-bridge-alerts.test.yml"
# A KEY='value' line, the subset that systemd's EnvironmentFile= and a shell read alike.
_ENV_LINE = re.compile(r"([A-Z_][A-Z0-9_]*)='([^'\\]*)'")
_VARIABLE = re.compile(r"\bBRIDGE_[A-Z0-9_]+\b")
_METRIC = re.compile(r"\bbridge_[a-z0-9_]+\b")
_SELECTOR = re.compile(r"\b(bridge_[a-z0-9_]+)\{([^}]*)\}")
_MATCHER = re.compile(r'([a-z_]+)\s*(=~|!~|!=|=)\s*"([^"]*)"')


def docs() -> dict[str, str]:
    return {path.name: path.read_text() for path in sorted(DEPLOY.iterdir()) if path.is_file()}


def unit_service() -> dict[str, list[str]]:
    """The unit's [Service] section: every key with its values in order (keys repeat)."""
    section, values = "", {}
    for line in UNIT.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
        elif section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


def exec_start() -> list[str]:
    (line,) = unit_service()["ExecStart"]
    return shlex.split(line)


def nginx_block(start: str, text: str | None = None) -> str:
    """The text of the nginx block that opens with ``start`` (up to its closing brace), in
    ``text`` or else nginx.conf."""
    text = NGINX.read_text() if text is None else text
    begin = text.index(start)
    depth = 0
    for at in range(text.index("{", begin), len(text)):
        depth += {"{": 1, "}": -1}.get(text[at], 0)
        if depth == 0:
            return text[begin : at + 1]
    raise AssertionError(f"no end to {start!r}")


def directive(block: str, name: str) -> list[str]:
    """The values of ``name`` directly in ``block`` (not inside its nested blocks)."""
    depth, found = 0, []
    for line in block.splitlines()[1:]:
        code = line.split("#", 1)[0].strip()
        if depth == 0 and code.startswith(name + " "):
            found.append(code[len(name) :].strip().rstrip(";").strip())
        depth += code.count("{") - code.count("}")
    return found


def seconds(value: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    number, unit = re.fullmatch(r"(\d+)(ms|s|m|h)?", value).groups()  # type: ignore[union-attr]
    return int(number) * units[unit or "s"]


def size(value: str) -> int:
    number, unit = re.fullmatch(r"(\d+)([kKmM]?)", value).groups()  # type: ignore[union-attr]
    return int(number) * {"": 1, "k": 1024, "m": 1024 * 1024}[unit.lower()]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("provider") / "smart-glocal.pem"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path.write_text(public_pem(key))
    return path


def example_environment(key_file: Path) -> dict[str, str]:
    """The example environment file as systemd reads it, its placeholders filled in."""
    values = {}
    for number, line in enumerate(ENV_FILE.read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _ENV_LINE.fullmatch(line)
        assert match, f"{ENV_FILE.name}:{number}: write KEY='value' (no ' or \\ inside)"
        values[match[1]] = match[2]
    for name, value in values.items():  # as the README's first steps fill them in
        random_base64 = base64.b64encode(secrets.token_bytes(32)).decode()
        values[name] = re.sub(r"REPLACE-[A-Za-z0-9-]*", random_base64, value)
    values["BRIDGE_SG_PUBLIC_KEY"] = str(key_file)
    return values


def test_the_unit_runs_a_serve_command_line_the_cli_accepts() -> None:
    command = exec_start()
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert Path(command[0]).name in scripts, "ExecStart names the package's own command"
    assert Path(command[0]).is_absolute()
    assert command[1] == "serve"
    context = serve.make_context("serve", command[2:])  # a bad option or value raises here
    assert (context.params["host"], context.params["port"]) == ("127.0.0.1", 8000)
    # The installed command's own help names every option used.
    script = shutil.which("redirect-bridge", path=str(Path(sys.executable).parent))
    assert script, "the redirect-bridge command is installed beside this Python"
    shown = subprocess.run(
        [script, "serve", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for option in (word.split("=")[0] for word in command[2:] if word.startswith("--")):
        assert re.search(rf"(^|\s){re.escape(option)}\b", shown, re.M), option


def test_the_unit_is_hardened_and_stops_after_the_graceful_shutdown() -> None:
    service = unit_service()
    one = {key: values[-1] for key, values in service.items()}
    assert one["User"] == "redirect-bridge" and one["Group"] == "redirect-bridge"
    assert one["EnvironmentFile"].startswith("/etc/redirect-bridge/")
    assert one["NoNewPrivileges"] == "yes" and one["PrivateTmp"] == "yes"
    assert one["ProtectSystem"] == "strict"
    # The SQLite file in the environment file is in the only folder the unit may write.
    writable = one["ReadWritePaths"].split()
    assert one["WorkingDirectory"] in writable
    database = example_environment(Path("/unused"))["BRIDGE_DATABASE_URL"]
    assert database.startswith("sqlite:////")
    assert any(database.removeprefix("sqlite:///").startswith(path + "/") for path in writable)
    assert one["Restart"] == "on-failure"
    assert one["KillSignal"] == "SIGTERM" and one["KillMode"] == "mixed"
    assert seconds(one["TimeoutStopSec"]) > 5 + 2, "uvicorn's 5 s, then the app's shutdown"
    assert one["RestartPreventExitStatus"] == "2"


def test_serve_hands_uvicorn_what_the_docs_say(key_file: Path, tmp_path: Path) -> None:
    """``serve`` with the unit's options and the example environment: uvicorn is given proxy
    headers and no trusted addresses of its own (so FORWARDED_ALLOW_IPS decides), 5 s to shut
    down, and the address nginx proxies to. Run in a process of its own: ``serve`` sets up
    logging and metrics folders for the whole process."""
    probe = (
        "import json, sys, uvicorn\n"
        "uvicorn.run = lambda app, **options: print(json.dumps(options, default=repr))\n"
        "from app.cli import main\n"
        "main(sys.argv[1:], standalone_mode=False)\n"
    )
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith("BRIDGE_") and name != "FORWARDED_ALLOW_IPS"
    }
    done = subprocess.run(
        [sys.executable, "-c", probe, *exec_start()[1:]],
        capture_output=True,
        text=True,
        env=inherited | example_environment(key_file) | {"PROMETHEUS_MULTIPROC_DIR": str(tmp_path)},
        cwd=tmp_path,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    options = json.loads(done.stdout.splitlines()[-1])
    assert options["proxy_headers"] is True
    assert "forwarded_allow_ips" not in options
    assert options["timeout_graceful_shutdown"] == 5
    upstream = directive(nginx_block("upstream redirect_bridge"), "server")[0].split()[0]
    assert f"{options['host']}:{options['port']}" == upstream


def test_uvicorn_takes_trusted_proxies_from_forwarded_allow_ips(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("FORWARDED_ALLOW_IPS", raising=False)
    assert Config("app:create_app", proxy_headers=True).forwarded_allow_ips == "127.0.0.1,::1"
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "10.0.0.5")
    assert Config("app:create_app", proxy_headers=True).forwarded_allow_ips == "10.0.0.5"


def test_the_example_environment_is_a_strong_configuration(key_file: Path) -> None:
    values = example_environment(key_file)
    settings = load_settings(values)
    check_strength(settings)
    assert settings.warnings == ()
    assert settings.public_url == "https://pay.shop.example"
    assert directive(nginx_block("server {\n    listen 443 ssl http2"), "server_name") == [
        "pay.shop.example"
    ]


def test_every_bridge_variable_in_the_docs_is_a_setting(key_file: Path) -> None:
    base = example_environment(key_file)
    named = {name for text in docs().values() for name in _VARIABLE.findall(text)}
    assert "BRIDGE_PUBLIC_URL" in named
    for name in sorted(named - set(base)):
        try:
            settings = load_settings({**base, name: "x"})
        except ConfigError as error:  # a setting, and "x" is no value for it
            assert str(error).startswith(name + ":"), (name, error)
            continue
        assert not any(name in warning for warning in settings.warnings), name


def test_the_nginx_site_fits_the_bridge(key_file: Path) -> None:
    settings = load_settings(example_environment(key_file))
    site = nginx_block("server {\n    listen 443 ssl http2")
    (body,) = directive(site, "client_max_body_size")
    assert size(body) >= settings.webhook_max_bytes
    headers = {
        value.split()[0].lower(): value.split(None, 1)[1]
        for value in directive(site, "proxy_set_header")
    }
    assert headers["host"] == "$host"
    assert headers["x-forwarded-for"] == "$remote_addr"
    assert headers["x-forwarded-proto"] == "$scheme"
    assert directive(site, "proxy_cache") == ["off"]
    status = nginx_block("location /api/v1/status/")
    assert directive(status, "proxy_buffering") == ["off"]
    (timeout,) = directive(status, "proxy_read_timeout")
    assert seconds(timeout) > max(MAX_WAIT, KEEP_ALIVE_SECONDS) + 5
    for location in re.findall(r"^\s*(location [^{\n]+\{)", site, re.M):
        assert "proxy_set_header" not in nginx_block(location), "it would drop the server's"
    assert directive(nginx_block("location = /metrics"), "deny") == ["all"]


def test_the_location_under_a_path_strips_the_path_the_bridge_is_told(key_file: Path) -> None:
    """``location /bridge/ { proxy_pass http://127.0.0.1:8000/; }``: nginx forwards
    ``/bridge/pay/T`` as ``/pay/T``, and ``BRIDGE_PUBLIC_URL`` names the same path, so the
    bridge's links come back under it. The headers and bounds are nginx.conf's."""
    text = NGINX_UNDER_A_PATH.read_text()
    public_url = re.search(r"BRIDGE_PUBLIC_URL='([^']+)'", text)[1]  # type: ignore[index]
    settings = load_settings({**example_environment(key_file), "BRIDGE_PUBLIC_URL": public_url})
    path = urlsplit(settings.public_url or "").path
    assert path and not path.endswith("/")
    location = nginx_block(f"location {path}/ {{", text)
    address = directive(nginx_block("upstream redirect_bridge"), "server")[0].split()[0]
    assert directive(location, "proxy_pass") == [f"http://{address}/"]  # the slash strips it
    headers = {
        value.split()[0].lower(): value.split(None, 1)[1]
        for value in directive(location, "proxy_set_header")
    }
    site = nginx_block("server {\n    listen 443 ssl http2")
    for value in directive(site, "proxy_set_header"):
        name, sent = value.split(None, 1)
        if name != "X-Request-ID":  # nginx.conf's map is the http block's, not a location's
            assert headers[name.lower()] == sent, name
    assert directive(location, "proxy_cache") == ["off"]
    (body,) = directive(location, "client_max_body_size")
    assert size(body) >= settings.webhook_max_bytes
    status = nginx_block(f"location {path}/api/v1/status/ ", text)
    assert directive(status, "proxy_pass") == [f"http://{address}/api/v1/status/"]
    assert directive(status, "proxy_buffering") == ["off"]
    (timeout,) = directive(status, "proxy_read_timeout")
    assert seconds(timeout) > max(MAX_WAIT, KEEP_ALIVE_SECONDS) + 5
    assert directive(nginx_block(f"location = {path}/metrics", text), "deny") == ["all"]
    assert "proxy_set_header" not in status, "it would drop the location's"
    assert NGINX_UNDER_A_PATH.name in (DEPLOY / "README.md").read_text()


@pytest.fixture
async def scraped(tmp_path: Path) -> AsyncIterator[tuple[str, set[str]]]:
    """A running app's /metrics after a few of each kind of request, and its routes."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    settings = {
        "DATABASE_URL": f"sqlite:///{tmp_path}/bridge.sqlite3",
        "SECRET_KEY": secrets.token_urlsafe(32),
        "SG_PUBLIC_KEY": public_pem(key),
        "API_KEYS": ["partner-key-0123456789"],
        "METRICS_TOKEN": "metrics-token",
    }
    app = create_app(settings)
    async with app.test_app():
        client = app.test_client()
        body = json.dumps(webhook("action_required", "ps_1")).encode()
        for signature in (sign(key, body), "bm90IGEgc2lnbmF0dXJl"):
            await client.post(
                "/webhooks/smart-glocal", data=body, headers={"X-PARTNER-SIGN": signature}
            )
        await client.post("/api/v1/sessions/ps_1/tokens", headers={"Authorization": "Bearer no"})
        await client.get("/api/v1/status/not-a-token")
        token = await client.post(
            "/api/v1/sessions/ps_1/tokens",
            headers={"Authorization": "Bearer partner-key-0123456789"},
        )
        status_path = urlsplit((await token.get_json())["status_url"]).path
        await client.get(f"{status_path}?wait=1")  # a long-poll, held 1 s
        answer = await client.get("/metrics", headers={"Authorization": "Bearer metrics-token"})
        assert answer.status_code == 200
        yield await answer.get_data(as_text=True), {rule.rule for rule in app.url_map.iter_rules()}


async def test_the_alerts_use_metrics_and_routes_the_bridge_has(
    scraped: tuple[str, set[str]],
) -> None:
    exposition, routes = scraped
    labels: dict[str, set[str]] = {}
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            labels.setdefault(line.split()[2], set())
        elif line and not line.startswith("#"):
            name, _, rest = line.partition("{")
            keys = set(re.findall(r'([a-z_]+)="', rest.partition("}")[0])) if rest else set()
            labels.setdefault(name.split()[0], set()).update(keys)
    texts = docs()
    used = {
        name
        for file, text in texts.items()
        if file != NGINX.name  # its $bridge_request_id is no metric
        for name in _METRIC.findall(text)
    }
    assert {"bridge_webhooks_total", "bridge_request_duration_seconds_count"} <= used
    assert not used - set(labels), "named in docs/deploy but not on /metrics"
    for name in (ALERTS.name, ALERT_TESTS.name):
        for metric, matchers in _SELECTOR.findall(texts[name]):
            for label, operator, value in _MATCHER.findall(matchers):
                if label in ("instance", "job"):
                    continue  # Prometheus's own
                assert label in labels[metric], (name, metric, label)
                if label == "route" and operator == "=":
                    assert value in routes, (name, value)
    job = re.search(r"job_name:\s*(\S+)", texts[PROMETHEUS.name])[1]  # type: ignore[index]
    assert f'up{{job="{job}"}}' in texts[ALERTS.name]
    assert ALERTS.name in texts[PROMETHEUS.name]


def test_readme_links_the_deploy_docs() -> None:
    assert "(docs/deploy/" in (ROOT / "README.md").read_text()


# The tools themselves (scripts/test installs them).


def test_systemd_analyze_verifies_the_unit(tmp_path: Path) -> None:
    tool = shutil.which("systemd-analyze")
    assert tool is not None, "scripts/test installs systemd"
    script = shutil.which("redirect-bridge", path=str(Path(sys.executable).parent))
    unit = tmp_path / UNIT.name  # the command where this checkout has it
    unit.write_text(UNIT.read_text().replace(exec_start()[0], str(script)))
    done = subprocess.run([tool, "verify", str(unit)], capture_output=True, text=True)
    assert done.returncode == 0 and not done.stderr.strip(), done.stderr


def test_nginx_accepts_the_site(tmp_path: Path) -> None:
    nginx = shutil.which("nginx", path="/usr/sbin:/usr/bin:/usr/local/sbin")
    assert nginx is not None, "scripts/test installs nginx"
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "pay.shop.example")])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    (tmp_path / "site.crt").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (tmp_path / "site.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    site = (
        NGINX.read_text()
        .replace("/etc/nginx/tls/pay.shop.example.crt", str(tmp_path / "site.crt"))
        .replace("/etc/nginx/tls/pay.shop.example.key", str(tmp_path / "site.key"))
        .replace("/var/log/nginx/", f"{tmp_path}/")
    )
    (tmp_path / "site.conf").write_text(site)
    # The location under a path, in a shop's own server as its comment says to include it.
    (tmp_path / "shop.conf").write_text(
        "server {\n  listen 8443 ssl;\n  server_name shop.example;\n"
        f"  ssl_certificate {tmp_path}/site.crt;\n  ssl_certificate_key {tmp_path}/site.key;\n"
        f"  location / {{ return 204; }}\n  include {NGINX_UNDER_A_PATH};\n}}\n"
    )
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{\n  access_log off;\n  include {tmp_path}/site.conf;\n"
        f"  include {tmp_path}/shop.conf;\n}}\n"
    )
    done = subprocess.run(
        [nginx, "-t", "-q", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf")],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr


def test_promtool_passes_the_config_and_the_alert_tests(tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "scripts/test installs prometheus"
    for name in (PROMETHEUS.name, ALERTS.name, ALERT_TESTS.name):
        (tmp_path / name).write_text((DEPLOY / name).read_text())
    token = tmp_path / "token"
    token.write_text("metrics-token\n")
    config = tmp_path / PROMETHEUS.name
    config.write_text(
        config.read_text().replace("/etc/prometheus/redirect-bridge-metrics.token", str(token))
    )
    for command in (["check", "config", str(config)], ["test", "rules", ALERT_TESTS.name]):
        done = subprocess.run([promtool, *command], capture_output=True, text=True, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
