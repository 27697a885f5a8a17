"""The dashboard in a real browser: headless Debian Chromium driven by Selenium (pointed at
/usr/bin/chromium and /usr/bin/chromedriver: nothing is downloaded) against a real gateway
(twistd) over three real SeaweedFS backends.

One walk through what an operator does: a bad password, a lockout, the good password; the
backend bars against /admin/api/status; browsing to a key and its copies; an upload
downloaded back byte-identical; a prefix deleted; a drain watched to its end; logs filtered by
request id; a POST without the CSRF token refused; log out.  A screenshot is saved as an
artefact (printed path; also test-artifacts/dashboard.png, git-ignored).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import WEED_ACCESS_KEY, WEED_SECRET_KEY, fresh_bucket
from tests.support.configs import BackendSpec, GatewayConfig
from tests.support.polling import wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
TOKEN = "browser-admin-token"
REPO = Path(__file__).resolve().parents[2]

if not (os.path.exists(CHROMIUM) and os.path.exists(CHROMEDRIVER)) and not os.environ.get("CI"):
    pytest.skip("Chromium (apt-get install chromium chromium-driver) is not installed", allow_module_level=True)

from selenium import webdriver  # noqa: E402  # the test extra: in CI a missing one fails
from selenium.common.exceptions import WebDriverException  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions  # noqa: E402
from selenium.webdriver.support.wait import WebDriverWait  # noqa: E402


@pytest.fixture
def browser(tmp_path: Path) -> Any:
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1800", f"--user-data-dir={tmp_path / 'chrome'}"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {
        "download.default_directory": str(tmp_path / "downloads"), "download.prompt_for_download": False,
    })
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    try:
        yield driver
    finally:
        driver.quit()


def admin_status(endpoint: str) -> dict[str, Any]:
    request = urllib.request.Request(f"{endpoint}/admin/api/status", headers={"X-Admin-Token": TOKEN})
    with urllib.request.urlopen(request, timeout=30) as answer:
        data: dict[str, Any] = json.loads(answer.read())
        return data


def login(driver: Any, key: str, secret: str) -> None:
    driver.find_element(By.ID, "access_key").clear()
    driver.find_element(By.ID, "access_key").send_keys(key)
    driver.find_element(By.ID, "secret_key").send_keys(secret)
    button = driver.find_element(By.ID, "login-submit")
    button.click()
    WebDriverWait(driver, 30).until(_replaced(button))  # the answer's page is in


def fetch_in_page(driver: Any, script: str) -> Any:
    """Run an async fetch in the page and return its JSON-able result."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        f"(async () => {{ {script} }})().then(done, (e) => done({{error: String(e)}}));"
    )


@pytest.mark.slow
def _replaced(element: Any) -> Any:
    """Wait condition: ``element`` left the page (a new page loaded).  Chromium may answer
    "Node with given id does not exist" instead of a stale reference while the old document
    goes away: both mean the same."""

    def check(driver: Any) -> bool:
        try:
            element.is_enabled()
        except WebDriverException:  # StaleElementReferenceException is one
            return True
        return False

    return check


def test_an_operator_walks_through_the_dashboard(start_gateway, weed, browser, tmp_path) -> None:  # type: ignore[no-untyped-def]
    backends = [
        BackendSpec(f"weed-{i}", weed.endpoint, fresh_bucket(weed), WEED_ACCESS_KEY, WEED_SECRET_KEY,
                    quota_bytes=2_000_000)
        for i in (1, 2, 3)
    ]
    ui = {"enabled": True, "admin_key": "admin", "admin_secret": "correct horse", "session_secret": "s" * 32,
          "admin_token": TOKEN}
    gw = start_gateway(GatewayConfig(
        backends=backends, extra={"ui": ui, "rate_limit": {"trusted_proxies": ["127.0.0.1/32"]}},
    ))
    from tests.conftest import s3_client

    s3: Any = s3_client(gw.endpoint, "photoskey", "photossecret")
    for index in range(4):
        s3.put_object(Bucket="photos", Key=f"album/pic-{index}.jpg", Body=os.urandom(50_000 + index))
    s3.put_object(Bucket="photos", Key="trash/a.txt", Body=b"a")
    s3.put_object(Bucket="photos", Key="trash/b.txt", Body=b"b")
    base = f"{gw.endpoint}/ui"

    # -- login: a bad password, a lockout (from another client IP, as the rate limiter finds it), the good one.
    browser.get(base + "/")
    assert browser.current_url == base + "/login"
    login(browser, "admin", "wrong")
    assert "Wrong access key" in browser.find_element(By.ID, "login-error").text
    browser.execute_cdp_cmd("Network.enable", {})
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {"X-Forwarded-For": "203.0.113.7"}})
    for _ in range(5):
        login(browser, "admin", "wrong")
    login(browser, "admin", "correct horse")  # locked: even the right secret is refused
    assert "Too many attempts" in browser.find_element(By.ID, "login-error").text
    browser.execute_cdp_cmd("Network.setExtraHTTPHeaders", {"headers": {}})
    login(browser, "admin", "correct horse")
    assert browser.current_url == base + "/"

    # -- the overview's bars match the admin API.
    status = {b["name"]: b for b in admin_status(gw.endpoint)["backends"]}
    cards = browser.find_elements(By.CSS_SELECTOR, "article.backend")
    assert {card.get_attribute("data-backend") for card in cards} == set(status)
    for card in cards:
        row = status[card.get_attribute("data-backend")]
        assert int(card.get_attribute("data-bytes-used")) == row["bytes_used"]
        assert int(card.get_attribute("data-object-count")) == row["object_count"]
        bar = card.find_element(By.CSS_SELECTOR, "progress.quota")
        assert abs(float(bar.get_attribute("value")) - 100 * row["bytes_used"] / row["bytes_limit"]) < 0.1
    assert status["weed-1"]["object_count"] == 6  # pack: all on the first backend
    screenshot = tmp_path / "dashboard.png"
    browser.save_screenshot(str(screenshot))

    # -- browse (the lazy tree) to a key and see its copies.
    browser.get(base + "/objects")
    browser.find_element(By.CSS_SELECTOR, "a.dir[data-prefix='photos/']").click()
    browser.find_element(By.CSS_SELECTOR, "a.dir[data-prefix='photos/album/']").click()
    browser.find_element(By.LINK_TEXT, "pic-2.jpg").click()
    copies = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#copies td.copy-backend")]
    assert copies == ["weed-1"]
    assert browser.find_element(By.ID, "detail-size").text == "50002 bytes"

    # -- upload a file and download it back byte-identical.
    payload = os.urandom(300_000)
    upload = tmp_path / "upload.bin"
    upload.write_bytes(payload)
    browser.get(base + "/objects?prefix=photos/")
    key_field = browser.find_element(By.ID, "upload-key")
    key_field.clear()
    key_field.send_keys("photos/uploaded/upload.bin")
    browser.find_element(By.ID, "upload-file").send_keys(str(upload))
    browser.find_element(By.ID, "upload-submit").click()
    assert wait_for(lambda: "key=photos%2Fuploaded%2Fupload.bin" in browser.current_url, timeout=60)
    assert browser.find_element(By.ID, "detail-size").text == f"{len(payload)} bytes"
    browser.find_element(By.ID, "download").click()
    downloaded = tmp_path / "downloads" / "upload.bin"
    assert wait_for(lambda: downloaded.exists() and downloaded.stat().st_size == len(payload), timeout=60)
    assert hashlib.sha256(downloaded.read_bytes()).digest() == hashlib.sha256(payload).digest()

    # -- delete a prefix: the count is shown and confirmed first.
    browser.get(base + "/objects?prefix=photos/trash/")
    browser.find_element(By.ID, "delete-prefix").click()
    alert = WebDriverWait(browser, 30).until(expected_conditions.alert_is_present())
    assert "Delete 2 objects under photos/trash/" in alert.text
    alert.accept()
    assert wait_for(lambda: "Deleted 2 objects" in browser.find_element(By.ID, "status").text, timeout=30)
    assert s3.list_objects_v2(Bucket="photos", Prefix="trash/")["KeyCount"] == 0

    # -- a POST without the CSRF token is refused.
    refused = fetch_in_page(browser, (
        f"const r = await fetch('{base}/api/delete', {{method: 'POST', body: JSON.stringify({{key: 'photos/album/pic-0.jpg'}})}});"
        "return {status: r.status, body: await r.json()};"
    ))
    assert refused["status"] == 403
    s3.head_object(Bucket="photos", Key="album/pic-0.jpg")  # still there

    # -- drain weed-1 and watch the progress reach the end.
    browser.get(base + "/operations")
    browser.find_element(By.ID, "drain-start").click()
    WebDriverWait(browser, 30).until(expected_conditions.alert_is_present()).accept()
    assert wait_for(lambda: browser.find_element(By.ID, "drain-state").get_attribute("data-state") == "completed",
               timeout=120)
    assert browser.find_element(By.ID, "drain-progress").get_attribute("value") == "100"
    assert admin_status(gw.endpoint)["backends"][0]["object_count"] == 0

    # -- logs filtered by a request id.
    request_id = s3.put_object(Bucket="photos", Key="logged.txt", Body=b"x")["ResponseMetadata"]["RequestId"]
    browser.get(base + "/logs")
    browser.find_element(By.ID, "request_id").send_keys(request_id)
    button = browser.find_element(By.ID, "filter")
    button.click()
    WebDriverWait(browser, 30).until(_replaced(button))
    ids = [td.text for td in browser.find_elements(By.CSS_SELECTOR, "#log-lines td.rid")]
    assert ids and set(ids) == {request_id}

    # -- readable at 360 px (no horizontal scroll of the page itself).
    browser.set_window_size(360, 800)
    browser.get(base + "/")
    width = browser.execute_script("return document.documentElement.scrollWidth")
    assert width <= 380, width
    browser.set_window_size(1280, 1800)

    # -- log out: the pages send us to the login again.
    browser.get(base + "/")
    logout = browser.find_element(By.ID, "logout")
    logout.click()
    WebDriverWait(browser, 30).until(_replaced(logout))
    assert browser.current_url == base + "/login"
    browser.get(base + "/config")
    assert browser.current_url == base + "/login"

    print(f"dashboard screenshot: {screenshot}")
    artifacts = REPO / "test-artifacts"
    try:
        artifacts.mkdir(exist_ok=True)
        shutil.copyfile(screenshot, artifacts / "dashboard.png")
    except OSError as exc:
        print(f"test-artifacts/dashboard.png not written: {exc}")
