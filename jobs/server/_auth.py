"""Bearer-token check for job servers (ASGI middleware): the user's token beyond loopback,
and the credential of each daemon-to-daemon hop, loopback included (jobs._credentials).

`/health` stays open so a supervisor can tell "up but locked" from "down"; it reveals only
the version. A program may open more paths that hold no secrets (`open_paths` exactly,
`open_prefixes` by prefix: the queen's dashboard page and its static files). Everything
else needs `Authorization: Bearer <token>` or gets 401 JSON.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Collection

from starlette.types import ASGIApp, Receive, Scope, Send

from jobs import AuthRequired

OPEN_PATHS = frozenset({"/health"})  # reachable without a token


class BearerAuth:
    """Rejects HTTP requests whose bearer token is none of `tokens` (constant-time compare)."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        tokens: Collection[str],
        open_paths: Collection[str] = (),
        open_prefixes: Collection[str] = (),
    ) -> None:
        if not tokens or not all(tokens):
            raise ValueError("BearerAuth needs non-empty tokens")
        self.app = app
        self._expected = [token.encode() for token in tokens]
        self._open_paths = OPEN_PATHS | frozenset(open_paths)
        self._open_prefixes = tuple(open_prefixes)

    def is_open(self, path: str) -> bool:
        """True for a path anyone may read without a token."""
        return path in self._open_paths or path.startswith(self._open_prefixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.is_open(scope["path"]):
            await self.app(scope, receive, send)
            return
        given = dict(scope["headers"]).get(b"authorization", b"")
        scheme, _, credentials = given.partition(b" ")
        # The scheme is case-insensitive (RFC 9110); the token is compared in constant time.
        given = credentials.strip()
        # Every token is compared (no early exit), so the time says nothing about which.
        matches = [hmac.compare_digest(given, token) for token in self._expected]
        if scheme.lower() == b"bearer" and any(matches):
            await self.app(scope, receive, send)
            return
        exc = AuthRequired()
        body = json.dumps({"error": str(exc), "detail": None}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"www-authenticate", b"Bearer"),
            (b"content-length", str(len(body)).encode()),
        ]
        await send({"type": "http.response.start", "status": 401, "headers": headers})
        await send({"type": "http.response.body", "body": body})
