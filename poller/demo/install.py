"""How to add the `demo` extra to the installation of poller that is running.

poller is not on a package index: `pip install 'poller[demo]'` would find nothing (or someone
else's package). The hint names what this installation came from (pip records it, PEP 610) and
the interpreter it lives in.
"""

from __future__ import annotations

import json
import os
import sys
from importlib.metadata import PackageNotFoundError, distribution
from urllib.parse import unquote, urlsplit


def _direct_url() -> str | None:
    try:
        return distribution("poller").read_text("direct_url.json")
    except PackageNotFoundError:
        return None


def install_hint(direct_url: str | None = None, python: str | None = None) -> str:
    """The pip command that adds the demo extra here; by default from this installation's
    `direct_url.json` and `sys.executable`."""
    text = _direct_url() if direct_url is None else direct_url
    pip = f"{python or sys.executable} -m pip install"
    try:
        origin = json.loads(text) if text else None
    except ValueError:
        origin = None
    url = origin.get("url", "") if isinstance(origin, dict) else ""
    path = unquote(urlsplit(url).path) if url.startswith("file://") else ""
    if path and os.path.exists(path):  # a wheel built in a container's builder stage is gone
        editable = "-e " if (origin or {}).get("dir_info", {}).get("editable") else ""
        return f"{pip} {editable}'{path}[demo]'"
    return f"{pip} '.[demo]' (in a checkout of poller's source)"
