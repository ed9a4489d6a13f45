"""Host, Origin and Content-Type checks for job servers (ASGI middleware), like Ollama's.

A web page must not drive a daemon through the user's browser:

- a `Host` the daemon does not serve is refused 403 (DNS rebinding: a page whose name
  resolves to 127.0.0.1 sends its own name). Served: 127.0.0.1, localhost, [::1], the
  address the request arrived on, the bind address, and the names in `RBEE_HOSTS`; any
  host when bound to a wildcard (0.0.0.0, ::), where the token protects the daemon;
- a browser `Origin` other than the daemon's own (scheme://host:port of the request) is
  refused 403 unless listed in `RBEE_ORIGINS`. Requests without an Origin (curl, httpx,
  the openai client, the keeper) are unaffected;
- a POST, PUT or PATCH body that is not `application/json` is refused 415, so a
  "simple" cross-site request (text/plain, form data: no preflight) cannot start a job.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

HOSTS_ENV = "RBEE_HOSTS"  # extra Host names a daemon serves (comma-separated)
ORIGINS_ENV = "RBEE_ORIGINS"  # extra browser origins a daemon admits (comma-separated)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]"})
WILDCARDS = frozenset({"0.0.0.0", "::", "[::]", ""})
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
DEFAULT_PORTS = {"http": "80", "https": "443"}


def env_list(env: Mapping[str, str], name: str) -> frozenset[str]:
    """The comma-separated entries of `env[name]`, lowercased, blanks dropped."""
    return frozenset(
        item.strip().lower().rstrip("/") for item in env.get(name, "").split(",") if item.strip()
    )


def host_name(host: str) -> str:
    """`host` (a Host header) without its port: `[::1]:80` -> `[::1]`, `a:80` -> `a`."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    name, colon, _ = host.rpartition(":")
    return name if colon and ":" not in name else host


def bracketed(address: str) -> str:
    """An address as it appears in a Host header (IPv6 in brackets)."""
    address = address.lower()
    return f"[{address}]" if ":" in address and not address.startswith("[") else address


def _origin(scheme: str, host: str) -> str:
    """scheme://host with the scheme's default port dropped, lowercased."""
    scheme, host = scheme.lower(), host.strip().lower().rstrip("/")
    default = DEFAULT_PORTS.get(scheme)
    if default and host.endswith(f":{default}") and not host.endswith("]"):
        host = host[: -len(default) - 1]
    return f"{scheme}://{host}"


class HostOriginGuard:
    """Refuses foreign Hosts and Origins (403) and non-JSON bodies (415) with JSON errors."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        bind: str | None = None,
        hosts: Collection[str] | None = None,
        origins: Collection[str] | None = None,
    ) -> None:
        self.app = app
        env = os.environ
        self._any_host = bind is not None and bind.strip().lower() in WILDCARDS
        extra = env_list(env, HOSTS_ENV) if hosts is None else frozenset(hosts)
        served = {bracketed(bind)} if bind else set()
        self._hosts = LOOPBACK_HOSTS | served | {h.lower() for h in extra}
        listed = env_list(env, ORIGINS_ENV) if origins is None else frozenset(origins)
        self._origins = frozenset(_origin(*o.split("://", 1)) for o in listed if "://" in o)

    def host_allowed(self, host: str, scope: Scope) -> bool:
        """True when the daemon serves `host` (a Host header value)."""
        if self._any_host:
            return True
        name = host_name(host)
        if name in self._hosts or host.strip().lower() in self._hosts:
            return True
        server = scope.get("server")
        return server is not None and name == bracketed(str(server[0]))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v.decode("latin-1") for k, v in scope["headers"]}
        host = headers.get(b"host", "")
        if host and not self.host_allowed(host, scope):
            await _refuse(
                send,
                403,
                f"this daemon does not serve host {host!r}; reach it by 127.0.0.1 or "
                f"localhost, or list the name in {HOSTS_ENV}",
                {"host": host, "allowed_env": HOSTS_ENV},
            )
            return
        origin = headers.get(b"origin")
        if origin is not None:
            own = _origin(scope.get("scheme", "http"), host) if host else None
            given = origin.strip().lower().rstrip("/")
            if given != own and (
                "://" not in given or _origin(*given.split("://", 1)) not in self._origins
            ):
                await _refuse(
                    send,
                    403,
                    f"requests from origin {origin!r} are not allowed; list it in "
                    f"{ORIGINS_ENV} to admit it",
                    {"origin": origin, "allowed_env": ORIGINS_ENV},
                )
                return
        if scope["method"] in BODY_METHODS and not _json_body(headers):
            kind = headers.get(b"content-type", "none")
            await _refuse(
                send,
                415,
                f"request bodies must be application/json, not {kind}",
                {"content_type": kind, "expected": "application/json"},
            )
            return
        await self.app(scope, receive, send)


def _json_body(headers: Mapping[bytes, str]) -> bool:
    """True for a JSON Content-Type, or for no body at all (no type, no length, not chunked)."""
    kind = headers.get(b"content-type")
    if kind is None:
        length = headers.get(b"content-length", "").strip()
        return length in ("", "0") and b"transfer-encoding" not in headers
    return kind.split(";", 1)[0].strip().lower() == "application/json"


async def _refuse(send: Send, status: int, message: str, detail: dict[str, Any]) -> None:
    body = json.dumps({"error": message, "detail": detail}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
