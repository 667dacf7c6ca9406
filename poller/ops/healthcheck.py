"""`poller healthcheck`: GET /healthz of the daemon the configuration describes.

For a container's HEALTHCHECK, which cannot see the daemon's arguments: it reads the same file
the daemon does (`-c` or `POLLER_CONFIG`) with the same environment, so it probes whatever
`server.host` and `server.port` say instead of a port written into the image.
"""

from __future__ import annotations

import ipaddress
import urllib.error
import urllib.request

from poller.config.settings import ServerSettings

DEFAULT_URL = "http://127.0.0.1:9102"


def ops_url(server: ServerSettings) -> str:
    """Where a process on the same host reaches the ops endpoints of `server`.

    A wildcard address (`0.0.0.0`, `::`) is reached on loopback, any other host as it is.
    Raises ValueError for port 0, which the daemon resolves only when it binds.
    """
    if server.port == 0:
        raise ValueError(
            "server.port is 0 (any free port): only the daemon knows which one it got; "
            "set a fixed port to check it from outside"
        )
    host = server.host or "0.0.0.0"
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return f"http://{host}:{server.port}"
    if address.is_unspecified:
        address = ipaddress.ip_address("::1" if address.version == 6 else "127.0.0.1")
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"http://{shown}:{server.port}"


def probe(base_url: str, timeout: float) -> str | None:
    """GET `base_url`/healthz; None when it answers 200, else what went wrong."""
    url = base_url.rstrip("/") + "/healthz"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        return f"{url}: no answer ({reason})"
    return None if status == 200 else f"{url}: HTTP {status}"
