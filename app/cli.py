"""The ``redirect-bridge`` command: ``serve``, ``check-config``, ``relay-test`` and ``demo``."""

from __future__ import annotations

import atexit
import logging
import os
import shutil
import sys
import tempfile

import click

from . import assets, changes, logs, server
from .config import (
    ConfigError,
    Settings,
    check_strength,
    described,
    load_settings,
    redacted_url,
)


@click.group()
@click.version_option(package_name="redirect-bridge")
def main() -> None:
    """Redirect Bridge: Smart Glocal's 3-D Secure redirects, done once and properly."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, type=int, help="Port to listen on.")
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    default=None,
    help="Worker processes.  [default: one per core]",
)
@click.option(
    "--max-connections",
    type=click.IntRange(min=1),
    default=server.MAX_CONNECTIONS,
    show_default=True,
    help="Open connections per worker; a request beyond them is answered 503.",
)
def serve(host: str, port: int, workers: int | None, max_connections: int) -> None:
    """Serve the bridge with the production ASGI server (uvicorn)."""
    import uvicorn

    settings = _check_settings()
    _check_assets()
    logs.configure(settings.log_format)
    workers = workers or len(os.sched_getaffinity(0))
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # Each worker writes its metrics here and a scrape adds them up (set before the
        # workers start, so they all see it).
        folder = tempfile.mkdtemp(prefix="redirect-bridge-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = folder
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
    fitting = server.fit_open_files(max_connections)
    if fitting < max_connections:
        logging.getLogger(__name__).warning(
            "the open files limit (ulimit -n) leaves room for %d connections per worker, not %d",
            fitting,
            max_connections,
        )
    uvicorn.run(
        "app:serve_app",
        factory=True,
        host=host,
        port=port,
        workers=workers,
        # Heads bounded in size and time, connections per worker bounded (app/server.py).
        **server.options(fitting, on_shutdown=changes.drain_all),
    )


@main.command("check-config")
def check_config() -> None:
    """Check the environment as serve would, and show every setting (secrets masked).

    Exits 2 with serve's own one-line message when serve would refuse to start. Nothing is
    created or written: no database, no folder.
    """
    settings = _check_settings()
    _check_assets()
    rows = [("setting", "from", "value"), *described(settings, os.environ)]
    name_width = max(len(name) for name, _, _ in rows)
    source_width = max(len(source) for _, source, _ in rows)
    for name, source, value in rows:
        click.echo(f"{name:<{name_width}}  {source:<{source_width}}  {value}")
    if settings.warnings:
        click.echo("")
    for warning in settings.warnings:
        click.echo(f"warning: {warning}")
    click.echo("\nredirect-bridge serve would start with these settings.")


@main.command("relay-test")
def relay_test() -> None:
    """Send a signed test message to BRIDGE_RELAY_URL and show what it answered.

    The message is signed and addressed as every relayed one is (Standard Webhooks, with
    BRIDGE_RELAY_SECRET), so a partner checks its endpoint and its verification before the
    first payment. Exits 0 when the partner answered 2xx, 1 otherwise, 2 on a configuration
    error. Nothing is stored.
    """
    import asyncio

    from .probe import send_test

    settings = _check_settings()
    if settings.relay_url is None:
        click.echo("redirect-bridge: BRIDGE_RELAY_URL is not set: there is no relay", err=True)
        sys.exit(2)
    probed = asyncio.run(send_test(settings))
    click.echo(f"sent relay.test {probed.message_id} to {redacted_url(probed.url)}")
    if probed.status is None:
        click.echo(f"no answer: {probed.error}")
    else:
        click.echo(f"answer: HTTP {probed.status}")
        if probed.answer:
            click.echo(probed.answer)
    sys.exit(0 if probed.delivered else 1)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=int,
    help="The bridge's port; the simulated shop, provider and bank use the next one.",
)
def demo(host: str, port: int) -> None:
    """Run the whole journey on this machine with nothing configured."""
    from .demo import run_demo

    logs.configure("text")
    run_demo(host, port)


def _check_settings() -> Settings:
    try:
        settings = load_settings()
        check_strength(settings)
        return settings
    except ConfigError as error:
        click.echo(f"redirect-bridge: configuration error: {error}", err=True)
        sys.exit(2)


def _check_assets() -> None:
    try:
        assets.check()
    except assets.MissingAssetsError as error:
        click.echo(f"redirect-bridge: cannot serve: {error}", err=True)
        sys.exit(2)
