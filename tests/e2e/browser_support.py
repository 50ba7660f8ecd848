"""Headless Chromium for the browser tests and docs/make_screenshot.py: start it, log in, screenshot."""

from __future__ import annotations

import base64
import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def require_browser() -> None:
    """Skip (with the reason) when Chromium, chromedriver or selenium is missing; on CI (CI set) fail."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if not Path(path).exists()]
    try:
        import selenium  # noqa: F401
    except ImportError:
        missing.append("the selenium package (pip install -e '.[dev]')")
    if not missing:
        return
    message = f"browser test needs {', '.join(missing)} (apt-get install chromium chromium-driver)"
    if os.environ.get("CI"):
        pytest.fail(f"{message}, and CI is set")
    pytest.skip(message)


# The network cut: every request that is not to the loopback server goes to a proxy that is not there (port 9,
# discard, nothing listens), and no host name resolves. Chromium never proxies loopback addresses.
OFFLINE_ARGS = (
    "--proxy-server=http://127.0.0.1:9",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)


def chrome(width: int = 1280, height: int = 2000, *, offline: bool = False):
    """Headless Chromium; ``offline``: only the loopback address is reachable (OFFLINE_ARGS)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    args = (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--window-size={width},{height}",
        "--hide-scrollbars",
    ) + (OFFLINE_ARGS if offline else ())
    for arg in args:
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)


def log_in(driver, base_url: str, key: str, path: str = "/ui") -> None:
    """Open ``path`` logged out (the UI sends us to the login form), type the key, and wait to be back on
    ``path``."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    if driver.current_url.startswith(base_url):
        driver.delete_all_cookies()
    driver.get(base_url + path)
    WebDriverWait(driver, 20).until(lambda d: "/ui/login" in d.current_url)
    driver.find_element(By.NAME, "key").send_keys(key)
    driver.find_element(By.CSS_SELECTOR, "form.login button[type=submit]").click()
    WebDriverWait(driver, 20).until(lambda d: d.current_url == base_url + path)


def full_page_png(driver, path: Path) -> Path:
    """The whole page (not just the window), at the window's width, as a PNG file."""
    metrics = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})
    size = metrics.get("cssContentSize") or metrics["contentSize"]
    clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True, "clip": clip}
    )
    path.write_bytes(base64.b64decode(shot["data"]))
    return path
