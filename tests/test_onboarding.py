"""The README's way from nothing to production, its commands run as written against a real
``serve``: ``pay.shop.example`` is a loopback port here, and ``/etc`` and ``/var/lib`` a folder
of the test's own."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import rsa

from .conftest import public_pem
from .servers import free_port

ROOT = Path(__file__).resolve().parent.parent
SECTION = "## From nothing to production"


def steps() -> list[str]:
    """The README section's shell blocks, in order."""
    text = (ROOT / "README.md").read_text()
    start = text.index(SECTION)
    section = text[start : text.index("\n## ", start + len(SECTION))]
    blocks = re.findall(r"^ *```sh\n(.*?)^ *```$", section, re.DOTALL | re.MULTILINE)
    return [re.sub(r"(?m)^   ", "", block) for block in blocks]


def test_the_readme_takes_a_partner_from_nothing_to_a_working_bridge(tmp_path: Path) -> None:
    port = free_port()
    here = {
        "https://pay.shop.example": f"http://127.0.0.1:{port}",
        "--port 8000": f"--port {port}",
        "/etc/redirect-bridge": str(tmp_path / "etc/redirect-bridge"),
        "/var/lib/redirect-bridge": str(tmp_path / "var/lib/redirect-bridge"),
    }

    def localised(text: str) -> str:
        for written, meant in here.items():
            text = text.replace(written, meant)
        return text

    for folder in ("etc/redirect-bridge", "var/lib/redirect-bridge", "docs/deploy"):
        (tmp_path / folder).mkdir(parents=True)
    for example in (ROOT / "docs/deploy").iterdir():
        (tmp_path / "docs/deploy" / example.name).write_text(localised(example.read_text()))
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    (tmp_path / "etc/redirect-bridge/smart-glocal.pem").write_text(public_pem(key))

    blocks = steps()
    assert len(blocks) == 8
    script = ["set -euo pipefail"]
    for number, block in enumerate(blocks):
        script += [f"echo '@@ step {number}'", localised(block)]
    (tmp_path / "steps.sh").write_text("\n".join(script) + "\n")
    environment = {
        name: value for name, value in os.environ.items() if not name.startswith("BRIDGE_")
    }
    environment["PATH"] = f"{Path(sys.executable).parent}:{environment['PATH']}"
    output, log = tmp_path / "output.txt", tmp_path / "log.txt"
    with output.open("w") as sink, log.open("w") as logged:
        shell = subprocess.Popen(
            ["bash", "steps.sh"],
            cwd=tmp_path,
            env=environment,
            stdout=sink,
            stderr=logged,  # the bridge's log lines, curl's complaints
            start_new_session=True,  # the served bridge is in its group, and goes with it
        )
        try:
            code = shell.wait(timeout=120)
        finally:
            os.killpg(shell.pid, signal.SIGTERM)
    said = output.read_text()
    assert code == 0, (said, log.read_text())
    shown = dict(re.findall(r"@@ step (\d+)\n(.*?)(?=@@ step |\Z)", said, re.DOTALL))
    installed, key_size, settings, ready, refused, token, deliveries, metrics = (
        shown[str(number)] for number in range(8)
    )
    assert installed.strip() == f"redirect-bridge, version {version('redirect-bridge')}"
    assert key_size.strip() == "Public-Key: (2048 bit)"
    assert "warning" not in settings.lower(), settings
    assert "BRIDGE_RELAY_URL" in settings and "BRIDGE_RETURN_SECRET" in settings
    assert json.loads(ready.splitlines()[-1]) == {"status": "ready"}
    assert refused.strip() == "401"
    answer = json.loads((tmp_path / "token.json").read_text())
    for link in ("pay_url", "status_url", "return_url"):
        assert answer[link].startswith(f"http://127.0.0.1:{port}/")
    assert json.loads(token.splitlines()[-1])["status"] == "pending"
    assert json.loads(deliveries)["deliveries"] == []
    assert re.search(
        r'^bridge_webhooks_total\{.*outcome="invalid_signature".*\} 1\.0$', metrics, re.M
    )
    assert shutil.which("redirect-bridge", path=environment["PATH"])
