"""`keeper ui`: open the queen's web dashboard in the user's browser.

The dashboard is the queen's own page (`/`), so the keeper only has to find the queen
and hand the URL to the standard `webbrowser` module: the one --queen-url or
RBEE_QUEEN_URL names, else this RBEE_HOME's queen, which `keeper queen start`'s own code
starts first when it is not running (or reports as already running). The token is never put into the
URL: the page asks for it once per tab.
"""

from __future__ import annotations

import os
import sys

from jobs import LOOPBACK, QUEEN_URL_ENV, TOKEN_ENV, RbeePaths
from keeper.errors import DaemonUnreachable
from keeper.output import make_renderer
from keeper.settings import KeeperSettings
from narration_core import Narrator

NARRATE = Narrator("keeper")
HEALTH_TIMEOUT_S = 2.0  # a queen on this network answers /health well within this
START_TIMEOUT_S = 30.0  # as `keeper queen start`: a cold queen on a busy machine
GRAPHICAL_ENV = ("DISPLAY", "WAYLAND_DISPLAY")  # a Linux session that can show a browser


def open_dashboard(
    settings: KeeperSettings, *, open_browser: bool, port: int | None, url_given: bool
) -> None:
    """Print the dashboard URL of the queen and open it in a browser.

    A queen named by --queen-url or RBEE_QUEEN_URL must answer (else DaemonUnreachable);
    otherwise this RBEE_HOME's queen is used, started first as `keeper queen start`
    does when it is not running (on `port`, default 7833).
    """
    url = settings.queen_url
    if url_given or os.environ.get(QUEEN_URL_ENV):
        if not _answers(url):
            raise DaemonUnreachable(
                f"queen is not reachable at {url}; start it there, or drop --queen-url "
                f"and {QUEEN_URL_ENV} to let `keeper ui` start a local queen"
            )
    else:
        from keeper import daemons
        from keeper.commands import queen

        queen.start(
            settings,
            port=port,
            bind=LOOPBACK,
            token=None,
            foreground=False,
            timeout=START_TIMEOUT_S,
        )
        url = daemons.recorded_url(RbeePaths.resolve().run, daemons.QUEEN) or url
    dashboard = f"{url.rstrip('/')}/"
    with make_renderer(settings):
        NARRATE.action("ui").target(dashboard).human(f"Dashboard: {dashboard}").emit()
        if settings.token():
            NARRATE.action("ui").human(
                f"The page asks once per tab for the queen's token ({TOKEN_ENV})"
            ).emit()
        if not open_browser:
            return
        if not _can_show_a_browser():
            NARRATE.action("ui").human(
                "No graphical session here; open the address above in a browser"
            ).emit()
            return
        import webbrowser

        if not webbrowser.open(dashboard):
            NARRATE.action("ui").level("warn").human(
                "Could not start a browser; open the address above yourself"
            ).emit()


def _answers(url: str) -> bool:
    """True when something answers the queen's /health at `url` (200 or 503)."""
    import httpx

    from jobs.client import tls_for

    try:
        response = httpx.get(
            f"{url}/health", timeout=HEALTH_TIMEOUT_S, trust_env=False, verify=tls_for(url)
        )
    except httpx.HTTPError:
        return False
    return response.status_code in (200, 503)


def _can_show_a_browser() -> bool:
    """False on a Linux box without a graphical session (an SSH login), where webbrowser
    would start a text browser in this terminal; BROWSER set by the user always wins."""
    if os.environ.get("BROWSER") or not sys.platform.startswith("linux"):
        return True
    return any(os.environ.get(name) for name in GRAPHICAL_ENV)
