"""The operations endpoints: /metrics /healthz /readyz /status (docs/endpoints.md)."""

from __future__ import annotations

import errno
import json
import socket
from collections.abc import Callable, Sequence

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from poller.ops.status import MappingStatus, State


class ServerStartError(OSError):
    """The ops server cannot listen where `server` says; the message names the key and the fix."""


def _bind_problem(host: str, port: int, exc: OSError) -> str:
    reason = exc.strerror or str(exc)
    if exc.errno == errno.EADDRINUSE:
        return (
            f"server.port {port} is already in use on {host} (another poller or another "
            "program listens there); stop it, or set server.port to a free port (0 picks one)"
        )
    if exc.errno == errno.EACCES:
        return (
            f"server.port {port} on {host}: permission denied (ports below 1024 need "
            "privileges); set server.port to 1024 or above"
        )
    if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror):
        return (
            f"server.host {host} is not an address of this machine ({reason}); set server.host "
            "to 0.0.0.0 (every interface), 127.0.0.1 or one of the machine's addresses"
        )
    return f"cannot listen on server.host {host}, server.port {port} ({reason}); check both keys"


class OpsServer:
    """A small aiohttp server; bound before the mappings start so a probe never races it.
    `statuses` gives the mappings configured now."""

    def __init__(
        self,
        host: str,
        port: int,
        registry: CollectorRegistry,
        statuses: Callable[[], Sequence[MappingStatus]],
        is_stopping: Callable[[], bool],
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._statuses = statuses  # asked on each request: a reload changes the mappings
        self._is_stopping = is_stopping
        self._runner: web.AppRunner | None = None
        self.port = port

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", self._metrics)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/status", self._status)
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self._host, self._port))
        except OSError as exc:
            sock.close()
            raise ServerStartError(_bind_problem(self._host, self._port, exc)) from None
        self.port = sock.getsockname()[1]
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self._registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _healthz(self, request: web.Request) -> web.Response:
        # Answering at all proves the event loop is turning.
        return web.json_response({"status": "ok"})

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._is_stopping():
            return web.json_response({"ready": False, "reason": "shutting down"}, status=503)
        waiting = [
            s.name
            for s in self._statuses()
            if s.state is not State.DISABLED and not s.reached_source
        ]
        if waiting:
            reason = "mappings not started yet: " + ", ".join(waiting)
            return web.json_response({"ready": False, "reason": reason}, status=503)
        return web.json_response({"ready": True})

    async def _status(self, request: web.Request) -> web.Response:
        body = {"mappings": [s.as_json() for s in self._statuses()]}
        return web.Response(text=json.dumps(body, indent=2), content_type="application/json")
