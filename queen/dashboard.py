"""The queen's web dashboard: `/` (the page) and `/ui/<file>` (its static files).

The files live in the package (`queen/static/`, shipped in the wheel) and are served with
no build step, CDN or network at run time. The page talks only to the public job API,
like the keeper. It holds no secrets, so it is served without a token (OPEN_PATHS,
OPEN_PREFIXES); the API calls it makes carry the token the user types into the page.

Narration shown by the page is untrusted (child output, remote hosts): the script renders
it as text, and every response here carries a Content-Security-Policy that forbids inline
script, so even markup that slipped into the DOM could not run.
"""

from __future__ import annotations

from pathlib import PurePosixPath

from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_PACKAGE = ("queen", "static")  # the folder inside the queen package
ASSET_PREFIX = "/ui"
OPEN_PATHS = ("/",)  # the page itself, without a token
OPEN_PREFIXES = (f"{ASSET_PREFIX}/",)  # its script, style sheet and images
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
    "img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
# Revalidate on every load (the ETag makes that a 304): file names carry no version, and a
# queen upgraded under an open tab must not keep serving the old script.
CACHE_CONTROL = "no-cache"
# Set here rather than guessed from the platform's mimetypes table, which maps .js to
# text/plain on some systems; with nosniff a module script of the wrong type does not run.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
}
SECURITY_HEADERS = [
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),  # frame-ancestors for browsers without CSP 2
    (b"cache-control", CACHE_CONTROL.encode()),
]


def dashboard_routes() -> list[BaseRoute]:
    """`/` and `/ui/<file>`, each answer carrying the dashboard's security headers."""
    files = StaticFiles(packages=[STATIC_PACKAGE])
    return [
        Route("/", _Secured(files, path="/index.html"), methods=["GET", "HEAD"]),
        Mount(ASSET_PREFIX, app=_Secured(files)),
    ]


class _Secured:
    """Serves from `files` (at `path` when given, else the request's own path) and adds
    SECURITY_HEADERS and the content type fixed by the file's suffix."""

    def __init__(self, files: ASGIApp, *, path: str | None = None) -> None:
        self.files = files
        self.path = path

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.path is not None:
            scope = {**scope, "path": self.path, "root_path": ""}
        content_type = CONTENT_TYPES.get(PurePosixPath(scope["path"]).suffix)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in (b"cache-control", b"content-type")
                    or (name.lower() == b"content-type" and content_type is None)
                ]
                if content_type is not None and message["status"] in (200, 206):
                    kept.append((b"content-type", content_type.encode()))
                message = {**message, "headers": [*kept, *SECURITY_HEADERS]}
            await send(message)

        await self.files(scope, receive, send_secured)
