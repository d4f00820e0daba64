"""``jaxnst serve``: a small local web application to drop images, run, watch and download.

Starlette with uvicorn (the ``web`` extra, imported only when called, with a one-line message
naming the extra when missing). The page (``serve_page.html``) uploads each image as it is
dropped, builds its options form from ``webform.form_fields()`` and starts runs, which
``jobs.JobQueue`` works one at a time in this process (a second run of a size compiles nothing);
each run's page is the report page fed live by server-sent events (``live.js``), and becomes the
run's report when it ends. The routes are ``jaxnst.routes``; this module guards and serves them.

Safe by default: it listens on 127.0.0.1 and then answers only requests whose Host header names
it (no DNS rebinding); any other address needs the token printed at start-up (query, cookie or
``Authorization: Bearer``). POSTs need an ``X-Jaxnst`` header and a same-origin ``Origin``, which
no cross-site page can send. Uploads are limited in size and read by ``jaxnst.image`` (the CLI's
checks: not an image, truncated, decompression bombs); every error is one line, never a
traceback. Files live in a temporary directory removed at exit.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import secrets
import shutil
import socket
import sys
import tempfile
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

from jaxnst import routes
from jaxnst.errors import ConfigError

DEFAULT_PORT = 8765
MAX_UPLOAD_MB = 32.0


def require_web() -> None:
    """ConfigError naming the extra when Starlette or uvicorn is missing."""
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as err:
        raise ConfigError(
            f"jaxnst serve needs the web extra ({err.name} is missing): pip install 'jaxnst[web]'"
        ) from None


# ---------------------------------------------------------------------- the guard
@dataclass
class Guard:
    """ASGI middleware: Host check (loopback), token, same-origin POSTs, security headers."""

    app: Any
    token: str | None = None
    hosts: frozenset[str] | None = None  # Host headers accepted (None: any; the token guards)

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.datastructures import Headers
        from starlette.responses import PlainTextResponse, RedirectResponse

        headers = Headers(scope=scope)
        host, refusal, redirect = headers.get("host", ""), None, None
        if self.hosts is not None and host.lower() not in self.hosts:
            refusal = (421, f"jaxnst serve answers to {sorted(self.hosts)[0]}, not {host!r}")
        elif self.token is not None:
            query = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("token", [""])
            given = [headers.get("authorization", "").removeprefix("Bearer ").strip(),
                     _cookie(headers.get("cookie", "")), query[0]]  # fmt: skip
            if not any(g and hmac.compare_digest(g.encode(), self.token.encode()) for g in given):
                refusal = (403, "jaxnst serve: open the address with the ?token=... it printed")
            elif query[0] and scope["method"] == "GET" and scope["path"] == "/":
                redirect = True  # keep the token in a cookie, not in the address bar
        if refusal is None and scope["method"] not in ("GET", "HEAD"):
            origin = headers.get("origin")
            if headers.get("x-jaxnst") != "1":
                refusal = (403, "POST requests come from the page (X-Jaxnst header missing)")
            elif origin is not None and origin != f"http://{host}":
                refusal = (403, f"cross-origin request from {origin} refused")
        if refusal is not None:
            response = PlainTextResponse(refusal[1], status_code=refusal[0])
            return await response(scope, receive, self._secured(send))
        if redirect:
            response = RedirectResponse("/", status_code=303)
            response.set_cookie("jaxnst_token", self.token, httponly=True, samesite="strict")
            return await response(scope, receive, self._secured(send))
        await self.app(scope, receive, self._secured(send))

    def _secured(self, send: Any) -> Any:
        async def secured(message: dict) -> None:
            if message["type"] == "http.response.start":
                have = {k.lower() for k, _ in message.get("headers", [])}
                extra = {
                    b"x-content-type-options": b"nosniff",
                    b"referrer-policy": b"no-referrer",
                    b"cache-control": b"no-store",
                    b"content-security-policy": b"default-src 'none'; frame-ancestors 'none'",
                }
                added = [(k, v) for k, v in extra.items() if k not in have]
                message = {**message, "headers": [*message.get("headers", []), *added]}
            await send(message)

        return secured


def _cookie(header: str) -> str:
    for part in header.split(";"):
        key, _, value = part.strip().partition("=")
        if key == "jaxnst_token":
            return value
    return ""


# ---------------------------------------------------------------------- the app and server
def make_app(
    root: Path, *, token: str | None = None, hosts: frozenset[str] | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
) -> Any:  # fmt: skip
    """The Starlette application over the folder ``root`` (which it fills, never leaves)."""
    require_web()
    import jax
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.middleware import Middleware
    from starlette.routing import Route

    state = routes.Web(Path(root), int(max_upload_mb * 1e6))

    @contextlib.asynccontextmanager
    async def lifespan(app: Any):
        yield
        state.close_streams()
        state.queue.close()

    async def http_error(request: Any, exc: Any) -> Any:
        return routes.error(exc.status_code, exc.detail or "error")

    async def crash(request: Any, exc: Exception) -> Any:  # a bug: the page gets one line
        traceback.print_exception(exc, file=sys.stderr)
        return routes.error(
            500, f"internal error ({type(exc).__name__}: {exc}); see the server's log"
        )

    table = [
        Route("/", routes.page),
        Route("/uploads", routes.upload, methods=["POST"]),
        Route("/runs", routes.submit, methods=["POST"]),
        Route("/events", routes.jobs_events),
        Route("/runs/{id}/stop", routes.stop, methods=["POST"]),
        Route("/runs/{id}/view", routes.view),
        Route("/runs/{id}/events", routes.run_events),
        Route("/runs/{id}/frames/{k:int}/{it:int}", routes.frame),
        Route("/runs/{id}/files/{name}", routes.download),
    ]
    app = Starlette(
        routes=table,
        middleware=[Middleware(Guard, token=token, hosts=hosts)],
        exception_handlers={HTTPException: http_error, Exception: crash},
        lifespan=lifespan,
    )
    app.state.web = state
    device = jax.devices()[0]
    app.state.device = f"{jax.default_backend()} · {device.device_kind} × {jax.device_count()}"
    return app


def listen(host: str, port: int) -> socket.socket:
    """A listening socket on host:port (0: any free port); ConfigError in one line."""
    if not 0 <= port <= 65535:  # getaddrinfo would take 70000 as 70000 - 65536
        raise ConfigError(f"cannot listen on {host}:{port} (a port is 0 to 65535)")
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(64)
    except OSError as err:
        raise ConfigError(f"cannot listen on {host}:{port} ({err.strerror or err})") from None
    return sock


def loopback_hosts(sock: socket.socket) -> frozenset[str] | None:
    """The Host headers that reach a loopback socket; None if it listens on another address."""
    address, port = sock.getsockname()[:2]
    if not ipaddress.ip_address(address).is_loopback:
        return None
    return frozenset(f"{h}:{port}" for h in ("127.0.0.1", "localhost", "[::1]", address))


def make_server(app: Any) -> Any:
    """A uvicorn server for ``app`` whose Ctrl-C also ends the event streams at once."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            app.state.web.close_streams()
            super().handle_exit(sig, frame)

    config = uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=3
    )
    return Server(config)


def main(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, token: str | None = None,
    max_upload_mb: float = MAX_UPLOAD_MB,
) -> int:  # fmt: skip
    """Serve until Ctrl-C; the temporary directory goes with it. Returns the exit status."""
    require_web()
    sock = listen(host, port)
    hosts = loopback_hosts(sock)
    if hosts is None and not token:
        token = secrets.token_urlsafe(18)  # another address: never without a token
    root = Path(tempfile.mkdtemp(prefix="jaxnst-serve-"))
    try:
        app = make_app(root, token=token, hosts=hosts, max_upload_mb=max_upload_mb)
        bound, actual = sock.getsockname()[:2]
        shown = f"[{bound}]" if ":" in bound else bound
        url = f"http://{shown}:{actual}/" + (f"?token={token}" if token else "")
        print(f"jaxnst serve: open {url}", flush=True)
        print(f"jaxnst serve: uploads and results in {root} (removed at exit); Ctrl-C stops",
              flush=True)  # fmt: skip
        with contextlib.suppress(KeyboardInterrupt):  # uvicorn re-raises the Ctrl-C it handled
            make_server(app).run(sockets=[sock])
        print("jaxnst serve: stopped", flush=True)
    finally:
        sock.close()
        shutil.rmtree(root, ignore_errors=True)
    return 0
