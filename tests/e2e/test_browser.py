"""The web UI in a real browser: headless Chromium (selenium) against a real `sbaudit serve`.

A dataset, a model and an audit with the randomization, feature-dependence, PGD and UAP checks are created
over HTTP; then the browser logs in through the form, finds the audit on /ui, loads its report (every image
decoded, a full-page screenshot saved) and watches job pages: a finished one, and a live training job that
must reach its terminal state on the page without a reload (event stream, or polling as a fallback).
/docs and /redoc render with the network cut (only the server reachable): their assets are served by the app.
Without Chromium/chromedriver the tests skip with the reason, unless CI is set.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from browser_support import chrome, full_page_png, log_in, require_browser
from e2e_flows import TINY_LMS5, TRAINING, create, ready

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
REPORT_CHECKS = ["randomization", "feature_dependence", "pgd", "uap"]
TERMINAL = ("succeeded", "failed", "canceled")


@pytest.fixture(scope="module")
def browser() -> Iterator:
    require_browser()
    driver = chrome()
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def finished(embedded) -> dict:
    """A ready dataset, model and audit (tiny sizes: seconds on one CPU thread)."""
    with embedded.client() as client:
        dataset = ready(
            client, "datasets", create(client, "/v1/datasets", {**TINY_LMS5, "name": "browser <b>"})
        )
        model = ready(client, "models", create(client, "/v1/models", {
            "dataset_id": dataset["id"], "architecture": {"name": "fcn", "width": 20, "depth": 1},
            "training": {**TRAINING, "stop": {"max_updates": 200}}}))  # fmt: skip
        audit = ready(client, "audits", create(client, "/v1/audits", {
            "model_id": model["id"], "checks": REPORT_CHECKS, "repeats": 2, "name": "browser audit",
            "options": {"pgd": {"steps": 5}, "uap": {"steps": 5, "epochs": 1},
                        "feature_dependence": {"methods": ["random", "swap"],
                                               "sample_fraction": 0.5}}}))  # fmt: skip
    return {"dataset": dataset, "model": model, "audit": audit}


def test_login_index_and_the_report(browser, embedded, finished, tmp_path):
    from selenium.webdriver.common.by import By

    audit = finished["audit"]
    log_in(browser, embedded.base_url, embedded.key)
    rows = browser.find_element(By.ID, "audits").text
    assert audit["id"] in rows and "browser audit" in rows

    browser.find_element(By.CSS_SELECTOR, f'a[href="/v1/audits/{audit["id"]}/report"]').click()
    assert browser.current_url.endswith(f"/v1/audits/{audit['id']}/report")
    verdict = browser.find_element(By.ID, "verdict")
    assert verdict.is_displayed() and audit["verdict"] in verdict.text
    images = browser.execute_script(
        "return Array.from(document.images).map(i => [i.complete, i.naturalWidth, i.alt]);"
    )
    figures = [a for a in audit["artifacts"] if a["content_type"] == "image/png"]
    assert len(images) == len(figures) + 1  # and the model's training curves
    assert all(complete and width > 0 for complete, width, _ in images), images
    assert "Under simplicity bias the S-randomized histogram collapses" in browser.page_source

    shot = full_page_png(browser, tmp_path / "report.png")
    data = shot.read_bytes()
    assert data.startswith(PNG_SIGNATURE) and len(data) > 100_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert 1200 <= width <= 1280 and height > 3000, (width, height)


def watch_a_live_training_job(browser, embedded, dataset_id: str) -> set[tuple[str, str, str]]:
    """Start a training job, open its page, and wait for the page to show it finished, without a reload.
    Returns every (state, percent, live-mode) the page showed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    with embedded.client() as client:
        live = create(client, "/v1/models", {
            "dataset_id": dataset_id, "architecture": {"name": "fcn", "width": 20, "depth": 1},
            "training": {**TRAINING, "eval_every": 100, "stop": {"max_updates": 1500}}})  # fmt: skip
    browser.get(f"{embedded.base_url}/ui/jobs/{live['job_id']}")
    first = browser.find_element(By.ID, "state").text
    assert first in ("queued", "running"), first
    browser.execute_script("window.notReloaded = true;")
    seen: set[tuple[str, str, str]] = set()

    def finished_on_the_page(driver) -> bool:
        state = driver.find_element(By.ID, "state").text
        seen.add((state, driver.find_element(By.ID, "percent").text, driver.find_element(By.ID, "live").text))
        return state in TERMINAL

    WebDriverWait(browser, 120, poll_frequency=0.2).until(finished_on_the_page)
    assert browser.find_element(By.ID, "state").text == "succeeded", seen
    assert browser.execute_script("return window.notReloaded === true;")  # updated in place
    assert browser.find_element(By.ID, "percent").text == "100%"
    assert browser.find_element(By.ID, "live").text == "finished"
    assert not browser.find_element(By.ID, "report").is_displayed()  # a model, not an audit
    assert len({(state, percent) for state, percent, _ in seen}) >= 2, seen
    return seen


def test_job_pages_finished_and_live(browser, embedded, finished):
    from selenium.webdriver.common.by import By

    log_in(browser, embedded.base_url, embedded.key, path=f"/ui/jobs/{finished['audit']['job_id']}")
    assert browser.find_element(By.ID, "state").text == "succeeded"
    assert browser.find_element(By.ID, "report").is_displayed()
    assert browser.find_element(By.ID, "percent").text == "100%"

    seen = watch_a_live_training_job(browser, embedded, finished["dataset"]["id"])
    assert "live (event stream)" in {mode for _, _, mode in seen}, seen  # the cookie opens the event stream


def test_a_job_page_without_event_stream_polls(browser, embedded, finished):
    log_in(browser, embedded.base_url, embedded.key)
    script = browser.execute_cdp_cmd(
        "Page.addScriptToEvaluateOnNewDocument", {"source": "delete window.EventSource;"}
    )
    try:
        seen = watch_a_live_training_job(browser, embedded, finished["dataset"]["id"])
    finally:
        browser.execute_cdp_cmd(
            "Page.removeScriptToEvaluateOnNewDocument", {"identifier": script["identifier"]}
        )
    modes = {mode for _, _, mode in seen}
    assert "live (polling every 2 s)" in modes and "live (event stream)" not in modes, seen


# A CDN copy of the Swagger UI script: reachable online, and what /docs would load without fastapi-offline.
CDN_SCRIPT = "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"


@pytest.fixture(scope="module")
def offline_browser() -> Iterator:
    require_browser()
    driver = chrome(offline=True)
    yield driver
    driver.quit()


def test_api_docs_render_with_the_network_cut(offline_browser, embedded):
    """/docs (Swagger UI) and /redoc render their operations with nothing but the server reachable."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver = offline_browser
    driver.get(embedded.base_url + "/docs")
    # The cut holds: the page cannot fetch the CDN copy of its own script.
    outcome = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0], {mode: 'no-cors'}).then(() => done('loaded'), e => done('failed: ' + e));",
        CDN_SCRIPT,
    )
    assert outcome.startswith("failed"), outcome

    WebDriverWait(driver, 30).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".swagger-ui .opblock"))
    assert "sbaudit" in driver.find_element(By.CSS_SELECTOR, ".swagger-ui .info .title").text
    paths = {e.text for e in driver.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert "/v1/audits" in paths and "/v1/datasets" in paths, sorted(paths)
    sources = driver.execute_script("return Array.from(document.scripts).map(s => s.src).filter(Boolean);")
    assert sources and all(s.startswith(embedded.base_url) for s in sources), sources

    driver.get(embedded.base_url + "/redoc")
    WebDriverWait(driver, 30).until(
        lambda d: (
            "/v1/audits" in d.find_element(By.TAG_NAME, "body").text
            and d.find_elements(By.CSS_SELECTOR, "[role=menuitem], .menu-content li")
        )
    )
    assert "sbaudit" in driver.find_element(By.CSS_SELECTOR, "h1").text
