"""The dashboard in a real browser: Debian's headless chromium driven by Selenium against
real daemons started by the keeper (queen, and a hive where the test needs one).

Screenshots go to $RBEE_SCREENSHOTS when set (CI artifacts), else the test's tmp folder.
"""

from __future__ import annotations

import functools
import json
import os
import signal
import threading
from collections.abc import Callable, Iterator
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.common.exceptions import NoAlertPresentException, TimeoutException  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.common.keys import Keys  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.support.browser import headless_chromium  # noqa: E402

pytestmark = pytest.mark.slow

WAIT_S = 30.0  # page conditions on a busy 2-core machine (daemons and a browser starting)
TOKEN = "dashboard-test-token"
XSS = "<img src=x onerror=alert(1)>"


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[WebDriver]:
    """A fresh headless chromium (own profile folder) that records the console."""
    with headless_chromium(tmp_path / "chromium-profile") as driver:
        yield driver


class Daemons:
    """The keeper CLI bound to the test's RBEE_HOME, a queen port and a hive port."""

    def __init__(self, keeper: Any, home: Path, queen_port: int, hive_port: int) -> None:
        self.keeper = keeper
        self.home = home
        self.queen_port = queen_port
        self.hive_port = hive_port
        self.url = f"http://127.0.0.1:{queen_port}"

    def run(self, *args: str, env: dict[str, str] | None = None) -> Any:
        result = self.keeper(*args, timeout=120.0) if env is None else self._run_env(args, env)
        assert result.returncode == 0, result.stdout + result.stderr
        return result

    def _run_env(self, args: tuple[str, ...], env: dict[str, str]) -> Any:
        import subprocess
        import sys

        return subprocess.run(
            [sys.executable, "-m", "keeper", *args],
            env={**self.keeper.env(), **env},
            capture_output=True,
            text=True,
            timeout=120.0,
            stdin=subprocess.DEVNULL,
        )

    def start_queen(self, *, token: str | None = None) -> None:
        env = {"RBEE_TOKEN": token} if token else None
        self.run("queen", "start", "--port", str(self.queen_port), env=env)

    def start_hive(self) -> None:
        self.run("hive", "start", "--port", str(self.hive_port))

    def queen_pid(self) -> int:
        return int(json.loads((self.home / "run" / "queen.pid").read_text())["pid"])


@pytest.fixture
def daemons(
    keeper: Any, rbee_home: Path, free_tcp_port_factory: Callable[[], int]
) -> Iterator[Daemons]:
    made = Daemons(keeper, rbee_home, free_tcp_port_factory(), free_tcp_port_factory())
    try:
        yield made
    finally:
        keeper("hive", "stop", timeout=60.0)
        keeper("queen", "stop", timeout=60.0)


def wait(driver: WebDriver, condition: Callable[[WebDriver], Any], what: str) -> Any:
    """`condition(driver)` once truthy, or fail naming `what` after WAIT_S."""
    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S} s for {what}")


def ends_completed(driver: WebDriver, what: str) -> None:
    """Wait until the job page shows how the job ended, then require "completed": a failed
    job fails the test at once, with its log, instead of running out the wait."""
    try:
        end = wait(driver, lambda d: text(d, "#job-end"), f"{what} to end")
    except TimeoutException:
        end = f"not ended after {WAIT_S} s"
    assert end == "Job completed.", f"{what}: {end}\n{text(driver, '#job-log')}"


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def log_seqs(driver: WebDriver) -> list[int]:
    """The event ids the job page shows, in page order."""
    return [
        int(s)
        for s in driver.execute_script(
            "return [...document.querySelectorAll('#job-log li')].map(li => li.dataset.seq)"
        )
    ]


def log_actions(driver: WebDriver) -> list[str]:
    return list(
        driver.execute_script(
            "return [...document.querySelectorAll('#job-log li .action')].map(e => e.textContent)"
        )
    )


def job_id_in_hash(driver: WebDriver) -> str | None:
    current = str(driver.execute_script("return location.hash"))
    return current.removeprefix("#/jobs/") if current.startswith("#/jobs/") else None


def record_alerts(driver: WebDriver) -> None:
    """Make alert() record its calls (a hash route keeps this page, so it stays in force)."""
    driver.execute_script("window.__alerts = []; window.alert = m => window.__alerts.push(m);")


def script_errors(driver: WebDriver) -> list[str]:
    """Console errors other than the HTTP 401s the token prompt answers."""
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "401" not in entry["message"]
    ]


def api_events(url: str, job_id: str, token: str | None = None) -> list[int]:
    """The event ids of a finished job's stream, read over the API."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    body = httpx.get(f"{url}/v1/jobs/{job_id}/stream", headers=headers, timeout=10).text
    return [int(line[4:]) for line in body.splitlines() if line.startswith("id: ")]


def set_viewport(driver: WebDriver, width: int, height: int) -> None:
    """Make the page's viewport exactly width x height CSS pixels (a phone below 500)."""
    metrics = {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)


def screenshot(driver: WebDriver, tmp_path: Path, name: str) -> Path:
    folder = Path(os.environ.get("RBEE_SCREENSHOTS") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path))
    return path


def test_watch_job_streams_live_and_cancels_from_the_page(
    browser: WebDriver, daemons: Daemons
) -> None:
    """A queen_status watch job started from the page (by keyboard) streams its narration live
    while it runs, and the Cancel button ends it in `cancelled`."""
    daemons.start_queen()
    browser.get(daemons.url + "/")
    wait(browser, lambda d: text(d, "#st-version") not in ("", "—"), "the queen's version")
    # Reach the button with Tab alone, then press Enter: the page works from the keyboard.
    button = browser.find_element(By.CSS_SELECTOR, "button[value=queen_status]")
    for _ in range(40):
        if browser.switch_to.active_element == button:
            break
        browser.switch_to.active_element.send_keys(Keys.TAB)
    assert browser.switch_to.active_element == button, "Tab never reached the watch button"
    button.send_keys(Keys.ENTER)
    job_id = wait(browser, job_id_in_hash, "the job page")
    wait(browser, lambda d: log_actions(d).count("status") >= 2, "two live status lines")
    assert text(browser, "#job-state") == "running"  # lines arrived while it still ran
    assert text(browser, "#job-op") == "queen_status"
    browser.find_element(By.ID, "job-cancel").click()
    wait(browser, lambda d: text(d, "#job-end") == "Job cancelled.", "the cancelled end")
    assert text(browser, "#job-state") == "cancelled"
    assert not browser.find_element(By.ID, "job-cancel").is_enabled()
    seqs = log_seqs(browser)
    assert seqs == sorted(set(seqs)), "lines repeated or out of order"
    assert seqs == api_events(daemons.url, job_id)
    assert script_errors(browser) == []


def test_finished_job_shows_its_whole_log_after_a_reload(
    browser: WebDriver, daemons: Daemons
) -> None:
    """Opening or reloading a finished job's page shows every event of its log, once."""
    daemons.start_queen()
    created = httpx.post(f"{daemons.url}/v1/jobs", json={"operation": "queen_status"}).json()
    job_id = created["job_id"]
    expected = api_events(daemons.url, job_id)  # reads to the end: the job is finished
    browser.get(f"{daemons.url}/#/jobs/{job_id}")
    for _ in range(2):
        wait(browser, lambda d: text(d, "#job-end") == "Job completed.", "the completed end")
        assert log_seqs(browser) == expected
        assert "status" in log_actions(browser)
        assert text(browser, "#job-state") == "completed"
        browser.refresh()
    # From the dashboard, the job list links to the same page.
    browser.get(daemons.url + "/")
    link = wait(browser, lambda d: d.find_elements(By.LINK_TEXT, job_id), "the job in the list")
    link[0].click()
    wait(browser, lambda d: log_seqs(d) == expected, "the log from the list's link")


def job_ids(url: str) -> list[str]:
    return [job["job_id"] for job in httpx.get(f"{url}/v1/jobs", timeout=10).json()["jobs"]]


def test_looking_at_the_queen_adds_no_job(browser: WebDriver, daemons: Daemons) -> None:
    """The status cards refresh live from GET /v1/status, and neither a dashboard tab (its
    first paint, its refreshes, a reload) nor `keeper status` adds a job: jobs are what a
    user asked for. The first paint already lists the hives the queen knows."""
    daemons.start_queen()
    browser.get(daemons.url + "/")
    wait(browser, lambda d: text(d, "#st-version") not in ("", "—"), "the queen's version")
    assert "localhost" in text(browser, "#hives")  # known from the start, before any beat
    first = text(browser, "#st-updated")
    wait(browser, lambda d: text(d, "#st-updated") != first, "a fresh status")
    browser.refresh()
    wait(browser, lambda d: text(d, "#st-version") not in ("", "—"), "the version again")
    daemons.run("status")
    daemons.run("--json", "status")
    assert job_ids(daemons.url) == []
    assert text(browser, "#jobs-empty") == "No jobs yet."


def test_token_protected_queen_asks_once_and_keeps_it_for_the_tab(
    browser: WebDriver, daemons: Daemons
) -> None:
    """A queen with a token: the page shows the token form, then the status; the token
    stays in sessionStorage and never appears in a URL the page requested."""
    daemons.start_queen(token=TOKEN)
    browser.get(daemons.url + "/")
    dialog = wait(
        browser,
        lambda d: (
            d.find_element(By.ID, "token-dialog").is_displayed()
            and d.find_element(By.ID, "token-dialog")
        ),
        "the token form",
    )
    assert browser.find_elements(By.CSS_SELECTOR, "#jobs tr") == []
    field = browser.find_element(By.ID, "token-input")
    field.send_keys("wrong-token", Keys.ENTER)
    wait(browser, lambda d: "refused" in text(d, "#token-why"), "the refused-token sentence")
    field.send_keys(TOKEN, Keys.ENTER)
    wait(browser, lambda d: not dialog.is_displayed(), "the form to close")
    wait(browser, lambda d: text(d, "#st-version") not in ("", "—"), "the queen's version")
    stored = browser.execute_script("return sessionStorage.getItem('rbee.queen.token')")
    assert stored == TOKEN
    browser.refresh()  # same tab: no second prompt
    wait(browser, lambda d: text(d, "#st-version") not in ("", "—"), "the status again")
    assert not browser.find_element(By.ID, "token-dialog").is_displayed()
    urls = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).concat([location.href])"
    )
    assert urls and not [u for u in urls if TOKEN in u]


def test_untrusted_narration_shows_as_text_and_runs_nothing(
    browser: WebDriver, daemons: Daemons, tmp_path: Path
) -> None:
    """A model download whose reference is `<img src=x onerror=alert(1)>` fails on a real hive;
    the narration and error that carry the markup show it as text: no img element, no alert.
    Also saves the dashboard and job-page screenshots at 1280x800 and 375 px."""
    daemons.start_queen()
    daemons.start_hive()
    browser.get(daemons.url + "/")
    set_viewport(browser, 1280, 800)
    record_alerts(browser)
    wait(browser, lambda d: "localhost" in text(d, "#hives"), "the hive from its heartbeats")
    assert "live" in text(browser, "#hives")
    screenshot(browser, tmp_path, "dashboard-1280")
    form = browser.find_element(By.CSS_SELECTOR, "form:has(button[value=model_download])")
    model = form.find_element(By.NAME, "model")
    model.clear()
    model.send_keys(XSS)
    form.find_element(By.CSS_SELECTOR, "button[value=model_download]").click()
    wait(browser, lambda d: text(d, "#job-end") == "Job failed.", "the failed end")
    humans = browser.execute_script(
        "return [...document.querySelectorAll('#job-log .human')].map(e => e.textContent)"
    )
    assert [h for h in humans if XSS in h], humans
    assert XSS in text(browser, "#job-error")
    assert browser.find_elements(By.CSS_SELECTOR, "img") == []
    assert browser.execute_script("return window.__alerts") == []
    with pytest.raises(NoAlertPresentException):
        browser.switch_to.alert  # noqa: B018 - raises when no native dialog is open
    screenshot(browser, tmp_path, "job-1280")
    set_viewport(browser, 375, 812)
    screenshot(browser, tmp_path, "job-375")
    browser.get(daemons.url + "/")
    wait(browser, lambda d: "localhost" in text(d, "#hives"), "the hive at phone width")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways at 375 px ({width} px wide)"
    screenshot(browser, tmp_path, "dashboard-375")


def test_dropped_connection_resumes_without_gaps_or_repeats(
    browser: WebDriver, daemons: Daemons
) -> None:
    """The queen is killed (-9) under a streaming job page and started again: the page
    reconnects with Last-Event-ID and ends on the job's final state, no line shown twice."""
    daemons.start_queen()
    created = httpx.post(
        f"{daemons.url}/v1/jobs",
        json={"operation": "queen_status", "watch": True, "interval_s": 0.2},
    ).json()
    browser.get(f"{daemons.url}/#/jobs/{created['job_id']}")
    wait(browser, lambda d: log_actions(d).count("status") >= 3, "live status lines")
    before = log_seqs(browser)
    os.kill(daemons.queen_pid(), signal.SIGKILL)
    wait(browser, lambda d: "resuming" in text(d, "#job-note"), "the page to notice the drop")
    daemons.start_queen()  # the same port: the page reconnects by itself
    wait(browser, lambda d: text(d, "#job-end") == "Job failed.", "the failed end")
    seqs = log_seqs(browser)
    assert seqs[: len(before)] == before
    assert seqs == sorted(set(seqs)), f"lines repeated or out of order: {seqs}"
    assert text(browser, "#job-state") == "failed"


class QuietFiles(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Requests are not the test's output."""


@pytest.fixture
def model_url(tmp_path: Path) -> Iterator[str]:
    """The URL of a tiny GGUF file on a plain HTTP server (stdlib, one thread, stopped after)."""
    from hive.tiny_model import write_tiny_model

    folder = tmp_path / "served"
    folder.mkdir()
    write_tiny_model(folder / "small.gguf")
    server = ThreadingHTTPServer(
        ("127.0.0.1", 0), functools.partial(QuietFiles, directory=str(folder))
    )
    thread = threading.Thread(target=server.serve_forever)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/small.gguf"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


# Notes whether token text reached the page while the job still ran (a hash route keeps
# the document, so the observer outlives the navigation to the job page).
WATCH_TOKENS = """
window.__tokensWhileRunning = false;
new MutationObserver(() => {
  const state = document.getElementById('job-state').textContent;
  if (document.getElementById('job-tokens').textContent && state === 'running') {
    window.__tokensWhileRunning = true;
  }
}).observe(document.getElementById('job-tokens'), {childList: true, characterData: true});
"""


def act(driver: WebDriver, operation: str, **fields: str) -> str:
    """On the dashboard, fill the form of `operation`'s button, press it, and return the
    job id of the page it opens."""
    driver.execute_script("location.hash = '#/'")
    form = driver.find_element(By.CSS_SELECTOR, f"form:has(button[value={operation}])")
    for name, value in fields.items():
        field = form.find_element(By.NAME, name)
        field.clear()
        field.send_keys(value)
    form.find_element(By.CSS_SELECTOR, f"button[value={operation}]").click()
    return str(wait(driver, job_id_in_hash, f"the page of the {operation} job"))


def test_model_and_worker_actions_run_from_the_page(
    browser: WebDriver, daemons: Daemons, model_url: str
) -> None:
    """Download (progress bar at 100%), spawn a worker, run a prompt (its tokens in the
    output box), see the worker in the table, stop it with its row's button, delete the
    model: each action's job page ends completed."""
    daemons.start_queen()
    daemons.start_hive()
    browser.get(daemons.url + "/")
    act(browser, "model_download", model=model_url)
    ends_completed(browser, "the download")
    assert browser.execute_script(
        "const bar = document.getElementById('job-progress-bar'); return bar.value === bar.max"
    )
    assert text(browser, "#job-progress-text").startswith("100%")
    act(browser, "worker_spawn", model="small")
    ends_completed(browser, "the spawn")
    browser.find_element(By.LINK_TEXT, "← Dashboard").click()
    wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#workers tr"), "the worker row")
    assert "small" in text(browser, "#workers")
    browser.execute_script(WATCH_TOKENS)
    job_id = act(browser, "infer", model="small", prompt="Once upon a time", max_tokens="40")
    ends_completed(browser, "the inference")
    assert browser.execute_script("return window.__tokensWhileRunning") is True
    tokens = [
        json.loads(line[6:])["t"]
        for line in httpx.get(f"{daemons.url}/v1/jobs/{job_id}/stream", timeout=10).text.split("\n")
        if line.startswith("data: {") and '"t":' in line
    ]
    shown = browser.execute_script("return document.getElementById('job-tokens').textContent")
    assert tokens and shown == "".join(tokens)  # every token once, in order, as text
    # The prompt went as a chat (as `keeper infer` sends it), through the model's template.
    params = httpx.get(f"{daemons.url}/v1/jobs/{job_id}", timeout=10).json()["params"]
    assert params["messages"][-1] == {"role": "user", "content": "Once upon a time"}
    assert not params.get("prompt")
    browser.find_element(By.LINK_TEXT, "← Dashboard").click()
    stop = wait(browser, lambda d: d.find_elements(By.CSS_SELECTOR, "#workers button"), "Stop")
    worker_id = stop[0].find_element(By.XPATH, "../../td[1]").text
    stop[0].click()
    wait(browser, job_id_in_hash, "the worker_stop job page")
    ends_completed(browser, "the stop")
    assert text(browser, "#job-op") == "worker_stop"
    assert f"Worker {worker_id} stopped" in text(browser, "#job-log")
    browser.find_element(By.LINK_TEXT, "← Dashboard").click()
    wait(browser, lambda d: worker_id not in text(d, "#workers"), "the worker to leave the table")
    act(browser, "model_delete", model="small")
    ends_completed(browser, "the delete")
    assert script_errors(browser) == []


# Notes whether a line of the hive's own (actor rbee-hive) reached the job page while the
# job still ran: its startup narration streams in live.
WATCH_HIVE_LINES = """
window.__hiveLineWhileRunning = false;
new MutationObserver(() => {
  const state = document.getElementById('job-state').textContent;
  const actors = [...document.querySelectorAll('#job-log li .actor')].map(e => e.textContent);
  if (state === 'running' && actors.includes('rbee-hive')) window.__hiveLineWhileRunning = true;
}).observe(document.getElementById('job-log'), {childList: true, subtree: true});
"""


def hive_button(driver: WebDriver, verb: str, hive: str) -> Any:
    """The hive row's visible Start or Stop button, else None."""
    found = driver.find_elements(By.CSS_SELECTOR, f"button[data-hive-{verb}='{hive}']")
    return found[0] if found and found[0].is_displayed() else None


def hive_state(driver: WebDriver, hive: str) -> str:
    rows = driver.find_elements(By.CSS_SELECTOR, f"#hives tr[data-hive='{hive}'] td:nth-child(2)")
    return str(rows[0].text) if rows else ""


def test_start_and_stop_a_local_hive_from_the_page(browser: WebDriver, daemons: Daemons) -> None:
    """The configured local hive is down: its row offers Start (not Stop). Start opens the
    job page, where the hive's startup narration streams in while the job runs and the
    job ends completed; the hive turns live on the overview, offering Stop; Stop ends it
    and the row goes back to down, offering Start."""
    config = daemons.home / "config" / "hives.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(f'[hives.localhost]\nurl = "http://127.0.0.1:{daemons.hive_port}"\n')
    daemons.start_queen()
    browser.get(daemons.url + "/")
    start = wait(browser, lambda d: hive_button(d, "start", "localhost"), "Start for the hive")
    assert hive_button(browser, "stop", "localhost") is None
    browser.execute_script(WATCH_HIVE_LINES)
    start.click()
    wait(browser, job_id_in_hash, "the hive_start job page")
    assert text(browser, "#job-op") == "hive_start"
    ends_completed(browser, "the hive start")
    assert browser.execute_script("return window.__hiveLineWhileRunning") is True
    actions = log_actions(browser)
    assert {"spawn", "ready", "live"} <= set(actions), actions
    assert f"127.0.0.1:{daemons.hive_port}" in text(browser, "#job-log")
    assert httpx.get(f"http://127.0.0.1:{daemons.hive_port}/health", timeout=10).status_code == 200

    browser.find_element(By.LINK_TEXT, "← Dashboard").click()
    wait(browser, lambda d: hive_state(d, "localhost") == "live", "the hive live")
    stop = wait(browser, lambda d: hive_button(d, "stop", "localhost"), "Stop for the live hive")
    assert hive_button(browser, "start", "localhost") is None
    stop.click()
    wait(browser, job_id_in_hash, "the hive_stop job page")
    ends_completed(browser, "the hive stop")
    assert text(browser, "#job-op") == "hive_stop"
    assert "stopped" in log_actions(browser)
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{daemons.hive_port}/health", timeout=10)
    browser.find_element(By.LINK_TEXT, "← Dashboard").click()
    wait(browser, lambda d: hive_state(d, "localhost") == "down", "the hive down again")
    wait(browser, lambda d: hive_button(d, "start", "localhost"), "Start offered again")
    assert script_errors(browser) == []
