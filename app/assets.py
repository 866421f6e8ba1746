"""Where the app's templates and static files are: inside the package when installed (the wheel
carries them there), at the top of the repository in a checkout."""

from __future__ import annotations

from pathlib import Path

_PACKAGE = Path(__file__).resolve().parent
# What every customer page and the embedding script need: without them the app serves errors.
_TEMPLATES_NEEDED = ("base.html", "pay/layout.html", "pay/page.js", "errors/http.html")
_STATIC_NEEDED = ("js/redirect-bridge.js", "css/bridge.css")


class MissingAssetsError(RuntimeError):
    """The templates or static files cannot be found; the message says where they were sought."""


def _folder(name: str) -> Path:
    beside = _PACKAGE / name
    return beside if beside.is_dir() else _PACKAGE.parent / name


TEMPLATES = _folder("templates")
STATIC = _folder("static")


def check(templates: Path = TEMPLATES, static: Path = STATIC) -> None:
    """Raise :class:`MissingAssetsError` unless every file the pages need is there."""
    missing = [templates / name for name in _TEMPLATES_NEEDED] + [
        static / name for name in _STATIC_NEEDED
    ]
    missing = [path for path in missing if not path.is_file()]
    if missing:
        raise MissingAssetsError(
            f"the templates or static files are missing ({', '.join(map(str, missing))});"
            " reinstall the package"
        )
