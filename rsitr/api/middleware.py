"""The ASGI middlewares every request passes, outermost first: the ``Host`` check (DNS rebinding), the request guard
(a body to a route that takes none, cross-site unsafe methods, the Content-Security-Policy on every answer) and
the body limit (uploads counted while they stream). They answer before a route runs, in the routes' Problem shape.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Iterable, Sequence

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.routing import APIRoute
from starlette.datastructures import Headers, MutableHeaders
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

_MULTIPART_OVERHEAD = 64 * 2**10
"""Slack over ``max_upload_bytes`` for multipart headers before a request body is refused."""

_CLOSE = {"Connection": "close"}
"""Ends the connection after the answer: the server would otherwise read (and discard) the rest of a refused body
to keep the connection for another request."""


def problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    """An answer in the routes' :class:`rsitr.api.schemas.Problem` shape, for a middleware (which has no route)."""
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


def host_name(header: str) -> str:
    """The host of a ``Host`` header without its port: ``[::1]:8000`` -> ``::1``, ``Example.org.:80`` ->
    ``example.org``."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:header.find("]")] if "]" in header else ""
    return header.rsplit(":", 1)[0].rstrip(".") if header.count(":") == 1 else header.rstrip(".")


class HostCheck:
    """ASGI middleware answering 400 to a ``Host`` that is not allowed, before the request is read: a web page
    that rebinds its own DNS name to this machine's address (DNS rebinding) names itself, not this server."""

    def __init__(self, app: ASGIApp, allowed: Iterable[str]) -> None:
        self.app = app
        self.allowed = {host_name(host) for host in allowed}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket") and "*" not in self.allowed:
            host = host_name(Headers(scope=scope).get("host", ""))
            if host not in self.allowed:
                detail = (f"this server does not answer to host {host[:100]!r}; start it with "
                          f"`rsitr serve --allowed-host NAME` to allow a name")
                return await problem(400, detail)(scope, receive, send)
        await self.app(scope, receive, send)


class BodyLimit:
    """ASGI middleware refusing request bodies over ``max_upload_bytes`` (plus multipart slack) with 413: on a
    declared Content-Length before reading, else counted while the body streams (chunked uploads), so at most the
    limit plus one received chunk is read (and spooled) before the answer."""

    def __init__(self, app: ASGIApp, max_upload_bytes: int) -> None:
        self.app = app
        self.limit = max_upload_bytes + _MULTIPART_OVERHEAD
        self.too_large = f"upload larger than {max_upload_bytes} bytes"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > self.limit:
            return await problem(413, self.too_large, _CLOSE)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # raised inside the route's body parsing; FastAPI answers it
                raise HTTPException(413, self.too_large, _CLOSE)
            return message

        await self.app(scope, counted, send)


CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: "
                           "https: http:; connect-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
"""No inline or foreign script, no plugin, no framing: a file name that slipped into the page as HTML still runs
nothing. Images may come from anywhere: the basemap's tile server is the user's choice."""
_SAFE_METHODS = ("GET", "HEAD", "OPTIONS")


class RequestGuard:
    """ASGI middleware for what a browser may be led to send: a request with a body to a route that takes none is
    answered at once (the server would otherwise read all of it to keep the connection), an unsafe method from
    another page's origin (cross-site request forgery) 403; and every answer carries the Content-Security-Policy
    (unless the route set its own) and ``nosniff``. ``routes`` are the app's routes, those of its routers one by
    one (FastAPI 0.16x keeps an included router as one route, which does not say whether the matching one reads a
    body)."""

    def __init__(self, app: ASGIApp, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["method"] not in _SAFE_METHODS and origin is not None and not _same_origin(origin, headers):
            detail = f"cross-origin {scope['method']} from {origin[:100]!r} refused; use this server's own page"
            return await problem(403, detail, _CLOSE)(scope, receive, send)
        has_body = headers.get("content-length", "0") != "0" or "transfer-encoding" in headers
        refusal = _refuse_body(scope, self.routes) if has_body else None
        if refusal is not None:
            return await refusal(scope, receive, send)

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer = MutableHeaders(scope=message)
                answer.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
                answer.setdefault("X-Content-Type-Options", "nosniff")
            await send(message)

        await self.app(scope, receive, secured)


def _same_origin(origin: str, headers: Headers) -> bool:
    """Whether an ``Origin`` header (``scheme://host[:port]``, or ``null``) names the host the request was sent to."""
    _, _, netloc = origin.partition("://")
    return bool(netloc) and netloc.lower().rstrip("/") == headers.get("host", "").lower()


def _refuse_body(scope: Scope, routes: Sequence[BaseRoute]) -> JSONResponse | None:
    """The answer, closing the connection, to a request with a body for a route that reads none (FastAPI routes
    say whether they do): 413, or 405 / 404 when no route takes the method / path; None when the route reads it."""
    matches = [(route, route.matches(scope)[0]) for route in routes]
    if any(match == Match.FULL and isinstance(route, APIRoute) and route.body_field is not None
           for route, match in matches):
        return None
    what = f"{scope['method']} {scope['path'][:200]}"
    if any(match == Match.FULL for _, match in matches):
        return problem(413, f"{what} takes no request body", _CLOSE)
    allowed = sorted({method for route, match in matches if match == Match.PARTIAL
                      for method in getattr(route, "methods", None) or ()})
    if allowed:
        return problem(405, f"{what}: method not allowed", {**_CLOSE, "Allow": ", ".join(allowed)})
    return problem(404, "Not Found", _CLOSE)


def inline_script_policy(page: HTMLResponse) -> str:
    """:data:`CONTENT_SECURITY_POLICY` for a page that needs its own inline scripts (Swagger UI's start): each is
    allowed by its SHA-256, and styles inline (Swagger UI sets them), nothing else."""
    hashes = [base64.b64encode(hashlib.sha256(script.encode()).digest()).decode()
              for script in re.findall(r"<script>(.*?)</script>", page.body.decode(), re.DOTALL)]
    allowed = " ".join(f"'sha256-{digest}'" for digest in hashes)
    return CONTENT_SECURITY_POLICY.replace("script-src 'self'", f"script-src 'self' {allowed}").replace(
        "style-src 'self'", "style-src 'self' 'unsafe-inline'")


def add_middlewares(app: FastAPI, routes: Sequence[BaseRoute], max_upload_bytes: int,
                    allowed_hosts: Iterable[str]) -> None:
    """The three middlewares, in their order: added last runs first, so the ``Host`` is checked before anything of
    the request is read. ``routes`` as for :class:`RequestGuard`."""
    app.add_middleware(BodyLimit, max_upload_bytes=max_upload_bytes)
    app.add_middleware(RequestGuard, routes=routes)
    app.add_middleware(HostCheck, allowed=allowed_hosts)
