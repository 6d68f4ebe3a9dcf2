"""How ``rsitr serve`` runs the app: uvicorn's h11 protocol with a deadline for each request's line and headers.

uvicorn closes an idle keep-alive connection after a few seconds, but not one that has begun a request and sends
its headers a byte at a time (slowloris: 300 such connections were all still open after 60 s). Here a connection
gets :data:`HEADER_TIMEOUT` seconds, from when it opens or its last response ends, to complete a request's line
and headers; then it is closed. A request whose headers came in time is not limited by it (bodies are bounded by
size in :mod:`rsitr.api.middleware`).
"""

from __future__ import annotations

import asyncio

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

HEADER_TIMEOUT = 10.0
"""Seconds a connection has to send a request's line and headers."""


class HeaderTimeoutProtocol(H11Protocol):
    """uvicorn's h11 protocol, closing a connection whose request headers are not complete in ``header_timeout``."""

    header_timeout: float = HEADER_TIMEOUT
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        """Start the deadline for the next request: it holds unless a request (a new cycle) begins by then."""
        self._disarm()
        waiting = self.cycle
        self._deadline = self.loop.call_later(self.header_timeout, self._expire, waiting)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, waiting) -> None:
        self._deadline = None
        if self.cycle is waiting and not self.transport.is_closing():
            try:
                self.conn.send(h11.ConnectionClosed())
            except h11.LocalProtocolError:  # mid-message: close all the same
                pass
            self.transport.close()
