"""``python -m app``: the same as the ``redirect-bridge`` command."""

from .cli import main

main(prog_name="redirect-bridge")
