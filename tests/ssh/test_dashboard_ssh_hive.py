"""The dashboard starts and stops a hive on a machine reached over real SSH: the queen runs
hive_start and hive_stop through the lifecycle library, as `keeper hive start ALIAS` does,
and the page shows the remote hive's startup narration as it streams back."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.ssh import ALIAS, Remote

pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait

from tests.support.browser import headless_chromium

pytestmark = pytest.mark.slow

WAIT_S = 60.0  # a remote start over SSH on a busy 2-core machine, a browser beside it


def wait(driver: WebDriver, condition: Any, what: str) -> Any:
    return WebDriverWait(driver, WAIT_S).until(condition, message=f"waited {WAIT_S} s for {what}")


def shown(driver: WebDriver, css: str) -> Any:
    """The element `css` names if it is displayed, else None."""
    found = driver.find_elements(By.CSS_SELECTOR, css)
    return found[0] if found and found[0].is_displayed() else None


def text(driver: WebDriver, css: str) -> str:
    return str(driver.find_element(By.CSS_SELECTOR, css).text)


def job_end(driver: WebDriver, what: str) -> None:
    """Wait for the job page's end line and require `Job completed.` (else show the log)."""
    end = wait(driver, lambda d: text(d, "#job-end"), f"{what} to end")
    assert end == "Job completed.", f"{what}: {end}\n{text(driver, '#job-log')}"


def hive_state(driver: WebDriver) -> str:
    cells = driver.find_elements(By.CSS_SELECTOR, f"#hives tr[data-hive='{ALIAS}'] td")
    return str(cells[1].text) if len(cells) > 1 else ""


def test_start_and_stop_an_ssh_hive_from_the_page(
    keeper: Any, remote: Remote, tmp_path: Path
) -> None:
    """The configured SSH hive is down: Start runs hive_start on the queen, whose job page
    shows the remote hive's own lines (origin ssh:<alias>); the hive turns live on the
    overview; Stop ends it over SSH and the row offers Start again."""
    url = f"http://127.0.0.1:{remote.queen_port}"
    assert keeper("queen", "start", "--port", str(remote.queen_port)).returncode == 0
    try:
        with headless_chromium(tmp_path / "chromium-profile") as browser:
            browser.get(url + "/")
            start = wait(browser, lambda d: shown(d, f"button[data-hive-start='{ALIAS}']"), "Start")
            assert shown(browser, f"button[data-hive-stop='{ALIAS}']") is None
            assert "ssh" in text(browser, f"#hives tr[data-hive='{ALIAS}']")  # where it runs
            start.click()
            wait(browser, lambda d: "#/jobs/" in d.current_url, "the hive_start job page")
            job_end(browser, "the remote hive start")
            origins = browser.execute_script(
                "const of = (li, css) => li.querySelector(css)?.textContent;"
                "return [...document.querySelectorAll('#job-log li')]"
                ".map(li => [of(li, '.actor'), of(li, '.origin')])"
            )
            assert ["rbee-hive", f"ssh:{ALIAS}"] in origins, origins
            health = f"http://127.0.0.1:{remote.hive_port}/health"
            assert httpx.get(health, timeout=10).status_code == 200
            assert remote.pidfile.exists()  # recorded on the remote, as the keeper does

            browser.find_element(By.LINK_TEXT, "← Dashboard").click()
            wait(browser, lambda d: hive_state(d) == "live", "the remote hive live")
            stop = wait(browser, lambda d: shown(d, f"button[data-hive-stop='{ALIAS}']"), "Stop")
            stop.click()
            wait(browser, lambda d: text(d, "#job-op") == "hive_stop", "the hive_stop job page")
            job_end(browser, "the remote hive stop")
            with pytest.raises(httpx.TransportError):
                httpx.get(health, timeout=10)
            assert not remote.pidfile.exists()
            browser.find_element(By.LINK_TEXT, "← Dashboard").click()
            wait(browser, lambda d: hive_state(d) == "down", "the remote hive down")
            wait(browser, lambda d: shown(d, f"button[data-hive-start='{ALIAS}']"), "Start again")
    finally:
        keeper("queen", "stop")
