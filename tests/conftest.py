"""Shared fixtures: one moto server per session (reset before each test), dummy credentials."""

from __future__ import annotations

import logging
import os
import urllib.request
from collections.abc import Iterator

import pytest

# Fixtures for the tests that run against moto: clients, checkpoint files, daemon clean-up.
pytest_plugins = ["tests.support.fixtures"]

# Dummy credentials for moto; set before any client is made, never real ones.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
    }
)
for _name in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_name, None)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[str]:
    """moto in server mode on a free loopback port, for the whole test session."""
    from moto.server import ThreadedMotoServer

    from tests.support import moto_patches

    moto_patches.apply()
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture
def moto(moto_server: str) -> str:
    """The moto endpoint, with every backend reset (about 1 ms) so tests never share state."""
    request = urllib.request.Request(f"{moto_server}/moto-api/reset", method="POST")
    with urllib.request.urlopen(request, timeout=10) as response:
        response.read()
    return moto_server
