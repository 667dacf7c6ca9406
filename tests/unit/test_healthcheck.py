"""`poller healthcheck`, the image's HEALTHCHECK: it probes the port the configuration sets."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import pytest

from poller import cli
from poller.config.settings import ServerSettings
from poller.ops.healthcheck import ops_url
from poller.ops.metrics import Metrics
from poller.ops.server import OpsServer

CONFIG = """\
server: {{host: 0.0.0.0, port: {port}}}
mappings:
  - name: q
    source: arn:aws:sqs:us-east-1:123456789012:q
    target: {{type: http, url: "http://127.0.0.1:1/invoke"}}
"""


@pytest.fixture
async def serving() -> AsyncIterator[int]:
    """The daemon's ops server on a free port; yields the port."""
    server = OpsServer("127.0.0.1", 0, Metrics().registry, lambda: [], lambda: False)
    await server.start()
    try:
        yield server.port
    finally:
        await server.stop()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def _healthcheck(*argv: str) -> int:
    return await anyio.to_thread.run_sync(cli.main, ["healthcheck", *argv])


async def test_it_checks_the_port_the_configuration_sets(
    serving: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "poller.yaml"
    config.write_text(CONFIG.format(port=serving))
    assert await _healthcheck("-c", str(config)) == 0
    assert capsys.readouterr().out == f"ok: http://127.0.0.1:{serving}/healthz\n"

    config.write_text(CONFIG.format(port=_free_port()))
    assert await _healthcheck("-c", str(config)) == 1
    assert "unhealthy" in capsys.readouterr().err


async def test_the_image_way_poller_config_and_a_variable_for_the_port(
    serving: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = tmp_path / "poller.yaml"
    config.write_text(CONFIG.format(port="${POLLER_PORT:-9102}"))
    monkeypatch.setenv("POLLER_CONFIG", str(config))
    monkeypatch.setenv("POLLER_PORT", str(serving))
    assert await _healthcheck() == 0


async def test_an_unreadable_configuration_is_unhealthy_not_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await _healthcheck("-c", str(tmp_path / "missing.yaml")) == 1
    assert "cannot read the file" in capsys.readouterr().err
    config = tmp_path / "poller.yaml"
    config.write_text(CONFIG.format(port=0))
    assert await _healthcheck("-c", str(config)) == 1
    assert "server.port is 0" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("0.0.0.0", "http://127.0.0.1:9111"),
        ("::", "http://[::1]:9111"),
        ("127.0.0.2", "http://127.0.0.2:9111"),
        ("fd00::5", "http://[fd00::5]:9111"),
        ("poller.internal", "http://poller.internal:9111"),
    ],
)
def test_a_wildcard_address_is_checked_on_loopback(host: str, url: str) -> None:
    assert ops_url(ServerSettings(host=host, port=9111)) == url
