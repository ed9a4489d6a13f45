"""The dashboard's job page draws the request's timeline above the narration, the same
spans `keeper jobs trace` prints (headless chromium against a real queen and hive)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.support import Chain

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

from tests.support.browser import headless_chromium  # noqa: E402

pytestmark = pytest.mark.slow

WAIT_S = 30.0


def test_the_job_page_shows_the_timeline_above_the_narration(tmp_path: Path) -> None:
    chain = Chain(tmp_path / "home")
    try:
        run = chain.run("--json", "infer", "--model", "builtin:tiny", "--max-tokens", "8", "Hi")
        events = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
        job_id = next(e["job_id"] for e in events if e.get("action") == "job_start")
        trace = json.loads(chain.run("--json", "jobs", "trace", job_id).stdout)
        with headless_chromium(tmp_path / "profile") as driver:
            driver.get(f"{chain.queen_url}/#/jobs/{job_id}")
            WebDriverWait(driver, WAIT_S).until(
                lambda d: d.find_element(By.ID, "job-trace-card").is_displayed(),
                message="the timeline",
            )
            rows = driver.find_elements(By.CSS_SELECTOR, "#job-trace tr")
            names = [row.find_element(By.CLASS_NAME, "trace-name").text for row in rows]
            shown_trace = driver.find_element(By.ID, "job-trace-id").text
            bars = driver.find_elements(By.CSS_SELECTOR, "#job-trace .trace-bar")
            widths = [
                bar.size["width"] for bar in bars if "kind-phase" in bar.get_attribute("class")
            ]
            order = driver.execute_script(
                "const s = [...document.querySelectorAll('#job-view section')].map(e => e.id ||"
                " e.getAttribute('aria-labelledby')); return s;"
            )
            errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    finally:
        chain.stop()
    assert names == [span["name"] for span in trace["spans"]]
    assert "prompt evaluation" in names and "model download" in names
    assert shown_trace == trace["trace_id"]
    assert widths and all(width > 0 for width in widths)  # drawn to scale, CSP allowing
    assert order.index("job-trace-card") < order.index("log-h")  # above the narration
    assert errors == []
