"""`crawler dashboard` in a real headless Chromium (Debian's chromium + chromium-driver, driven by
selenium) against a real daemon over the fake market; one daemon, one dashboard process and one
browser for the module. Each page's screenshot is saved under the test's tmp dir (printed).

The locks are tested from outside the browser too, with plain HTTP: no token, a wrong token, a
foreign Host header, a frame, a POST without the CSRF token or from another origin.
"""

from __future__ import annotations

import base64
import csv
import http.client
import io
import json
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import pytest

from fakemarket import FakeMarket
from tests.faults.daemon_harness import DaemonHarness, clean_env, one_clean_line
from tests.redis_server import redis_server_binary

webdriver = pytest.importorskip("selenium.webdriver")
from selenium.webdriver.chrome.options import Options  # noqa: E402
from selenium.webdriver.chrome.service import Service  # noqa: E402
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.remote.webdriver import WebDriver  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
SYMBOLS = ("AAPL:US", "EURUSD:CUR", "VOD:LN")
MAX_CONNECTIONS = 32  # the dashboard's cap

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="Debian's chromium and chromium-driver are not installed (make test installs them)",
)


# -- fixtures: one daemon, one dashboard, one browser ---------------------------------------


class Dashboard:
    """`python -m crawler dashboard --port 0 --no-browser --json` as a child process."""

    def __init__(self, daemon: DaemonHarness) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "crawler", "dashboard", "--port", "0", "--no-browser",
             "--json"],
            env=daemon.env, cwd=daemon.base, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(10)
            raise AssertionError(f"the dashboard did not start: {self.proc.stderr.read()}")  # type: ignore[union-attr]
        self.url: str = json.loads(line)["url"]
        parts = urlsplit(self.url)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        self.host = str(parts.hostname)
        self.port = int(parts.port or 80)
        self.token = parts.query.split("=", 1)[1]

    def stop(self) -> None:
        """SIGTERM: the dashboard stops, exit 0."""
        self.proc.terminate()
        try:
            _, stderr = self.proc.communicate(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, stderr = self.proc.communicate(timeout=10)
        assert self.proc.returncode == 0, stderr
        assert "Traceback" not in stderr, stderr

    def request(
        self, method: str, path: str, *, headers: dict[str, str] | None = None,
        body: bytes | None = None, cookie: bool = True,
    ) -> tuple[int, dict[str, str], bytes]:  # fmt: skip
        """One plain HTTP request; `cookie` signs it in (the token exchanged once)."""
        sent = {"Host": f"127.0.0.1:{self.port}"}
        if cookie:
            sent["Cookie"] = self.cookie()
        sent.update(headers or {})
        conn = http.client.HTTPConnection(self.host, self.port, timeout=30)
        try:
            conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
            for name, value in sent.items():
                conn.putheader(name, value)
            conn.putheader("Content-Length", str(len(body or b"")))
            conn.endheaders(body)
            answer = conn.getresponse()
            return answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read()
        finally:
            conn.close()

    def cookie(self) -> str:
        status, headers, _ = self.request("GET", f"/?token={self.token}", cookie=False)
        assert status == 303, status
        return headers["set-cookie"].split(";", 1)[0]


def _chrome(download_dir: Path) -> WebDriver:
    options = Options()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
        "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--window-size=1400,1000",
        f"--user-data-dir={download_dir.parent / 'chrome-profile'}",
    ):  # fmt: skip
        options.add_argument(flag)
    options.add_experimental_option(
        "prefs", {"download.default_directory": str(download_dir),
                  "download.prompt_for_download": False},
    )  # fmt: skip
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(download_dir)}
    )
    return driver


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("dashboard")
    with FakeMarket() as market:
        daemon = DaemonHarness(market, base / "daemon")
        daemon.start()
        dashboard: Dashboard | None = None
        driver: WebDriver | None = None
        try:
            for symbol in SYMBOLS:
                assert daemon.cli("symbols", "add", symbol).returncode == 0
            assert daemon.cli("collect").returncode == 0
            dashboard = Dashboard(daemon)
            (base / "downloads").mkdir()
            driver = _chrome(base / "downloads")
            driver.get(dashboard.url)  # the token for a cookie, once
            wait_ready(driver)
            yield {
                "market": market, "daemon": daemon, "dashboard": dashboard, "driver": driver,
                "base": base, "shots": base / "screenshots",
            }  # fmt: skip
        finally:
            if driver is not None:
                driver.quit()
            if dashboard is not None:
                dashboard.stop()
            daemon.stop()


def wait_ready(driver: WebDriver, timeout_s: float = 20.0) -> None:
    until(driver, lambda d: d.execute_script("return document.body.dataset.ready === '1'"),
          timeout_s)  # fmt: skip


def until(driver: WebDriver, condition: Callable[[WebDriver], Any], timeout_s: float = 20.0) -> Any:
    """Poll `condition` (every 50 ms) until it is truthy; its value."""
    return WebDriverWait(driver, timeout_s, poll_frequency=0.05).until(condition)


def screenshot(env: dict[str, Any], name: str) -> Path:
    shots: Path = env["shots"]
    shots.mkdir(exist_ok=True)
    path = shots / f"{name}.png"
    driver: WebDriver = env["driver"]
    size = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot",
        {"format": "png", "captureBeyondViewport": True,
         "clip": {"x": 0, "y": 0, "width": size["width"], "height": min(size["height"], 4000),
                  "scale": 1}},
    )  # fmt: skip
    path.write_bytes(base64.b64decode(shot["data"]))
    print(f"screenshot: {path}")
    return path


def text_of(driver: WebDriver, element_id: str) -> str:
    """An element's text, read in one script (the cards are redrawn as news arrives)."""
    return str(
        driver.execute_script(
            "const e = document.getElementById(arguments[0]); return e ? e.textContent : ''",
            element_id,
        )
    )


def row_prices(driver: WebDriver) -> dict[str, str]:
    return dict(
        driver.execute_script(
            "return [...document.querySelectorAll('#rows tr')]"
            ".map(tr => [tr.dataset.symbol, tr.dataset.price])"
        )
    )


# -- the pages -------------------------------------------------------------------------------


def test_the_table_shows_the_fakes_prices(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    daemon: DaemonHarness = env["daemon"]
    driver.get(env["dashboard"].origin + "/")
    wait_ready(driver)
    _, status = daemon.client().get("/status")
    expected = {s["symbol"]: s["last_quote"]["price"] for s in status["symbols"]}
    assert set(expected) == set(SYMBOLS)
    until(driver, lambda d: row_prices(d) == expected)
    sources = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#rows tr')]"
        ".map(tr => [tr.dataset.symbol, tr.dataset.source]))"
    )
    assert sources == {s["symbol"]: s["last_quote"]["source"] for s in status["symbols"]}
    assert "3 symbols" in driver.find_element(By.ID, "count").text
    screenshot(env, "dashboard")


def test_a_stream_tick_shows_in_the_page_within_2_s(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    market: FakeMarket = env["market"]
    driver.get(env["dashboard"].origin + "/")
    wait_ready(driver)
    until(driver, lambda d: d.find_element(By.ID, "conn").text == "live")
    before = row_prices(driver)["AAPL:US"]
    market.stream.tick_rate = 5.0
    try:
        until(
            driver,
            lambda d: d.execute_script(
                "const tr = document.querySelector('#rows tr[data-symbol=\"AAPL:US\"]');"
                "return tr.dataset.source === 'yahoo_stream' && tr.dataset.price !== arguments[0]",
                before,
            ),
            timeout_s=2.0,
        )
    finally:
        market.stream.tick_rate = 0.0


def test_the_budget_gauge_matches_crawler_budget_json(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    result = env["daemon"].cli("budget", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    driver.get(env["dashboard"].origin + "/")
    wait_ready(driver)
    spent = driver.find_element(By.ID, "budget-spent")
    assert spent.get_attribute("data-spent") == report["spent_usd"]
    assert (
        driver.find_element(By.ID, "budget-left").get_attribute("data-left")
        == (report["remaining_usd"])
    )
    requests_text = driver.find_element(By.ID, "budget-requests").text
    assert f"{report['requests_used']} of {report['requests_allowed']}" in requests_text
    targets = driver.find_elements(By.CSS_SELECTOR, "#targets tr")
    assert [t.get_attribute("data-target") for t in targets] == list(report["targets"])
    assert driver.find_element(By.ID, "budget-runout").text == (
        "lasts the day"
        if report["lasts_the_day"]
        else driver.find_element(By.ID, "budget-runout").text
    )
    bars = driver.find_elements(By.CSS_SELECTOR, "#pace-chart rect.bar")
    assert len(bars) == len(report["paid_by_hour"])
    by_reason = driver.execute_script(
        "return Object.fromEntries([...document.querySelectorAll('#by-reason tr[data-reason]')]"
        ".map(tr => [tr.dataset.reason, Number(tr.dataset.requests)]))"
    )
    if "paid_by_reason" in report:  # the daemon reports it (a newer budget report)
        assert by_reason == report["paid_by_reason"]
    else:
        assert "not reported" in text_of(driver, "by-reason")


def test_the_sources_and_collections_show(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    driver.get(env["dashboard"].origin + "/")
    wait_ready(driver)
    breakers = {
        tr.get_attribute("data-breaker")
        for tr in driver.find_elements(By.CSS_SELECTOR, "#breakers tr[data-breaker]")
    }
    assert {"bright_data", "yfinance"} <= breakers
    assert "key set" in text_of(driver, "bright-data")
    assert text_of(driver, "stream-state")
    rows = driver.execute_script(
        "return [...document.querySelectorAll('#collections-table tr')].map(tr => tr.textContent)"
    )
    assert len(rows) >= 2  # the header and the fixture's collection
    assert "3" in rows[1]


def test_collect_now_shows_its_progress_then_the_new_collection(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    daemon: DaemonHarness = env["daemon"]
    market: FakeMarket = env["market"]
    assert daemon.cli("symbols", "add", "IBM:US").returncode == 0  # never fetched: pending
    driver.get(env["dashboard"].origin + "/")
    wait_ready(driver)
    _, before = daemon.client().get("/status")
    total = before["scheduler"]["collection_metrics"]["total_collections"]
    shown = len(driver.find_elements(By.CSS_SELECTOR, "#collections-table tr"))
    driver.execute_script(  # remember what the progress line said while the collection ran
        "window.sawProgress = '';"
        "const box = document.getElementById('progress');"
        "new MutationObserver(() => { if (!box.hidden) window.sawProgress = box.textContent; })"
        ".observe(box, {attributes: true, childList: true, subtree: true});"
    )
    for service in (market.bright_data, market.yahoo):  # the collection lasts a second
        service.faults.set("*", latency_s=1.0)
    try:
        driver.find_element(By.ID, "collect").click()
        until(driver, lambda d: len(d.find_elements(By.CSS_SELECTOR, "#collections-table tr"))
              > shown)  # fmt: skip
    finally:
        market.bright_data.faults.clear()
        market.yahoo.faults.clear()
        assert daemon.cli("symbols", "remove", "IBM:US").returncode == 0
    assert driver.execute_script("return window.sawProgress").startswith("collecting")
    until(driver, lambda d: d.execute_script("return document.getElementById('progress').hidden"))
    _, after = daemon.client().get("/status")
    assert after["scheduler"]["collection_metrics"]["total_collections"] == total + 1


def test_the_symbol_page_charts_the_history_and_downloads_its_csv(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    daemon: DaemonHarness = env["daemon"]
    _, history = daemon.client().get("/history", {"symbol": "VOD:LN", "limit": "10000"})
    driver.get(env["dashboard"].origin + "/symbol?s=" + quote("VOD:LN"))
    wait_ready(driver)
    until(driver, lambda d: d.find_element(By.ID, "price-chart").get_attribute("data-points")
          == str(history["total"]))  # fmt: skip
    assert driver.find_elements(By.CSS_SELECTOR, "#price-chart polyline.price-line")
    driver.find_element(By.CSS_SELECTOR, "#ranges button[data-range='all']").click()
    until(
        driver,
        lambda d: (
            "on"
            in d.find_element(By.CSS_SELECTOR, "#ranges button[data-range='all']").get_attribute(
                "class"
            )
        ),
    )
    screenshot(env, "symbol")
    downloads: Path = env["base"] / "downloads"
    driver.find_element(By.ID, "csv").click()
    path = until(driver, lambda d: next(iter(downloads.glob("VOD_LN-all.csv")), None))
    until(driver, lambda d: not list(downloads.glob("*.crdownload")))
    got = list(csv.reader(io.StringIO(path.read_text())))
    _, expected_text = daemon.client().get(
        "/history", {"symbol": "VOD:LN", "format": "csv", "limit": "0", "order": "oldest"}
    )
    assert got == list(csv.reader(io.StringIO(expected_text)))
    assert len(got) == history["total"] + 1  # the header


def test_add_and_remove_a_symbol_from_the_page(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    daemon: DaemonHarness = env["daemon"]
    driver.get(env["dashboard"].origin + "/")
    wait_ready(driver)
    box = driver.find_element(By.ID, "add-symbol")
    box.send_keys("MSFT:US")
    driver.find_element(By.CSS_SELECTOR, "#add-form button").click()
    until(driver, lambda d: d.find_elements(By.CSS_SELECTOR, "#rows tr[data-symbol='MSFT:US']"))
    watched = {s["symbol"] for s in daemon.client().call("GET", "/symbols")["symbols"]}
    assert "MSFT:US" in watched
    driver.find_element(By.CSS_SELECTOR, "#rows tr[data-symbol='MSFT:US'] button.remove").click()
    until(driver, lambda d: not d.find_elements(
        By.CSS_SELECTOR, "#rows tr[data-symbol='MSFT:US']"))  # fmt: skip
    watched = {s["symbol"] for s in daemon.client().call("GET", "/symbols")["symbols"]}
    assert "MSFT:US" not in watched


def test_filter_and_sort(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    driver.get(env["dashboard"].origin + "/")
    wait_ready(driver)
    driver.find_element(By.ID, "filter").send_keys("eur")
    visible = driver.execute_script(
        "return [...document.querySelectorAll('#rows tr')].filter(tr => !tr.hidden)"
        ".map(tr => tr.dataset.symbol)"
    )
    assert visible == ["EURUSD:CUR"]
    driver.find_element(By.ID, "filter").clear()
    driver.execute_script("document.getElementById('filter').dispatchEvent(new Event('input'))")
    driver.find_element(By.CSS_SELECTOR, "th[data-key='symbol']").click()  # descending now
    order = driver.execute_script(
        "return [...document.querySelectorAll('#rows tr')].map(tr => tr.dataset.symbol)"
    )
    assert order == sorted(SYMBOLS, reverse=True)


def test_crawler_dashboard_prints_its_address_and_keeps_the_token_0600(
    env: dict[str, Any],
) -> None:
    daemon: DaemonHarness = env["daemon"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawler", "dashboard", "--port", "0", "--no-browser"],
        env=daemon.env, cwd=daemon.base, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
    finally:
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr
    assert line.startswith("dashboard: http://127.0.0.1:"), line
    token_file = daemon.data_dir / "dashboard.token"
    assert token_file.stat().st_mode & 0o777 == 0o600
    token = token_file.read_text().strip()
    assert line.endswith(f"/?token={token}")
    assert env["dashboard"].token == token  # the same token for every dashboard of this daemon


def test_every_address_at_once_is_refused_exit_2(env: dict[str, Any]) -> None:
    result = env["daemon"].cli("dashboard", "--host", "0.0.0.0", "--no-browser")
    assert result.returncode == 2
    assert "--host 0.0.0.0" in one_clean_line(result.stderr)


def test_without_a_daemon_exit_3_one_line(tmp_path: Path) -> None:
    env = clean_env(
        tmp_path, DATA_DIR=str(tmp_path / "data"), CRAWLER_SOCKET=str(tmp_path / "no.sock")
    )
    result = subprocess.run(
        [sys.executable, "-m", "crawler", "dashboard", "--no-browser"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 3
    assert "not running" in one_clean_line(result.stderr)
    assert result.stdout == ""


# -- the locks -------------------------------------------------------------------------------------


def test_connections_are_capped_and_idle_ones_closed(env: dict[str, Any]) -> None:
    daemon: DaemonHarness = env["daemon"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "crawler", "dashboard", "--port", "0", "--no-browser", "--json",
         "--idle-timeout", "1"],
        env=daemon.env, cwd=daemon.base, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    held: list[socket.socket] = []
    try:
        assert proc.stdout is not None
        url = urlsplit(json.loads(proc.stdout.readline())["url"])
        address = (str(url.hostname), int(url.port or 80))
        held = [socket.create_connection(address, timeout=30) for _ in range(MAX_CONNECTIONS + 8)]
        answers = [conn.recv(64) for conn in held]  # each: a 503 now, or closed when idle
        refused = [a for a in answers if a.startswith(b"HTTP/1.1 503")]
        assert len(refused) == 8, answers
        assert answers.count(b"") == MAX_CONNECTIONS
        with socket.create_connection(address, timeout=30) as conn:  # usable again
            conn.sendall(b"GET / HTTP/1.1\r\nHost: " + url.netloc.encode() + b"\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.1 401")
    finally:
        for conn in held:
            conn.close()
        proc.terminate()
        _, stderr = proc.communicate(timeout=10)
    assert proc.returncode == 0, stderr


def test_without_the_token_nothing_is_served(env: dict[str, Any]) -> None:
    dashboard: Dashboard = env["dashboard"]
    for path in ("/", "/symbol?s=AAPL:US", "/api/snapshot", "/api/events", "/static/app.js"):
        status, _, _ = dashboard.request("GET", path, cookie=False)
        assert status == 401, path
    status, headers, _ = dashboard.request("GET", "/?token=not-the-token", cookie=False)
    assert status == 403 and "set-cookie" not in headers
    status, _, _ = dashboard.request(
        "GET", "/api/snapshot", cookie=False,
        headers={"Cookie": f"crawler_dashboard_{dashboard.port}=forged"},
    )  # fmt: skip
    assert status == 401
    assert dashboard.cookie().startswith(f"crawler_dashboard_{dashboard.port}=")


def test_a_foreign_host_header_is_refused(env: dict[str, Any]) -> None:
    dashboard: Dashboard = env["dashboard"]
    for host in (f"evil.example:{dashboard.port}", "127.0.0.1:1", "attacker.localhost"):
        status, _, _ = dashboard.request("GET", "/api/snapshot", headers={"Host": host})
        assert status == 421, host
    status, _, body = dashboard.request("GET", "/api/snapshot")
    assert status == 200 and json.loads(body)["rows"]


def test_frames_cors_and_headers(env: dict[str, Any]) -> None:
    dashboard: Dashboard = env["dashboard"]
    status, _, _ = dashboard.request("GET", "/", headers={"Sec-Fetch-Dest": "iframe"})
    assert status == 403
    status, headers, _ = dashboard.request(
        "GET", "/api/snapshot", headers={"Origin": "http://evil.example"}
    )
    assert status == 200
    assert not any(name.startswith("access-control-") for name in headers)
    assert headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert "default-src 'none'" in headers["content-security-policy"]
    status, headers, _ = dashboard.request(
        "OPTIONS", "/api/symbols", headers={"Origin": "http://evil.example",
                                            "Access-Control-Request-Method": "POST"},
    )  # fmt: skip
    assert status == 405 and not any(name.startswith("access-control-") for name in headers)


def test_a_page_of_another_origin_cannot_frame_the_dashboard(env: dict[str, Any]) -> None:
    driver: WebDriver = env["driver"]
    dashboard: Dashboard = env["dashboard"]
    page = f'<!doctype html><title>evil</title><iframe id="f" src="{dashboard.origin}/"></iframe>'

    class Evil(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = page.encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    evil = ThreadingHTTPServer(("127.0.0.1", 0), Evil)
    thread = threading.Thread(target=evil.serve_forever, daemon=True)
    thread.start()
    try:
        driver.get(f"http://localhost:{evil.server_address[1]}/")
        until(driver, lambda d: d.execute_script("return document.readyState") == "complete")
        driver.switch_to.frame(driver.find_element(By.ID, "f"))
        try:
            assert not driver.find_elements(By.ID, "rows")  # the dashboard never rendered
        finally:
            driver.switch_to.default_content()
    finally:
        evil.shutdown()
        evil.server_close()


def test_actions_need_the_csrf_token(env: dict[str, Any]) -> None:
    dashboard: Dashboard = env["dashboard"]
    daemon: DaemonHarness = env["daemon"]
    body = json.dumps({"symbol": "NFLX:US"}).encode()
    json_type = {"Content-Type": "application/json"}
    csrf = _csrf(dashboard)
    cases = [
        {**json_type},  # no CSRF token
        {**json_type, "X-CSRF-Token": "0" * 64},  # a wrong one
        {**json_type, "X-CSRF-Token": csrf, "Origin": "http://evil.example"},
        {**json_type, "X-CSRF-Token": csrf, "Sec-Fetch-Site": "cross-site"},
        {"Content-Type": "text/plain", "X-CSRF-Token": csrf},  # a form post
    ]
    for headers in cases:
        status, _, _ = dashboard.request("POST", "/api/symbols", headers=headers, body=body)
        assert status in (403, 415), headers
        status, _, _ = dashboard.request("POST", "/api/collect", headers=headers, body=b"{}")
        assert status in (403, 415), headers
    watched = {s["symbol"] for s in daemon.client().call("GET", "/symbols")["symbols"]}
    assert "NFLX:US" not in watched
    status, _, _ = dashboard.request(
        "POST", "/api/symbols", headers={**json_type, "X-CSRF-Token": csrf}, body=body,
        cookie=False,
    )  # fmt: skip
    assert status == 401  # the CSRF token alone is not enough either


def test_the_bright_data_key_never_reaches_the_page(env: dict[str, Any]) -> None:
    dashboard: Dashboard = env["dashboard"]
    key = env["market"].api_key
    assert key
    for path in (
        "/",
        "/symbol?s=AAPL:US",
        "/api/snapshot",
        "/static/app.js",
        "/api/history?symbol=AAPL:US&range=all",
        "/api/sparks?symbols=AAPL:US",
    ):
        status, _, body = dashboard.request("GET", path)
        assert status == 200, path
        assert key.encode() not in body, path
    assert key not in env["driver"].page_source


def _csrf(dashboard: Dashboard) -> str:
    _, _, page = dashboard.request("GET", "/")
    marker = b'name="csrf" content="'
    start = page.index(marker) + len(marker)
    return page[start : page.index(b'"', start)].decode()


# -- the daemon going away ------------------------------------------------------------------


def test_the_page_says_when_the_daemon_stops_and_recovers_when_it_is_back(
    env: dict[str, Any], tmp_path: Path
) -> None:
    driver: WebDriver = env["driver"]
    daemon = DaemonHarness(env["market"], tmp_path)
    daemon.start()
    dashboard: Dashboard | None = None
    try:
        assert daemon.cli("symbols", "add", "AAPL:US").returncode == 0
        dashboard = Dashboard(daemon)
        driver.get(dashboard.url)
        wait_ready(driver)
        banner = "return document.getElementById('banner').hidden ? '' : " \
                 "document.getElementById('banner').textContent"  # fmt: skip
        assert driver.execute_script(banner) == ""
        assert daemon.stop() == 0
        until(driver, lambda d: "not answering" in d.execute_script(banner))
        daemon.start()
        until(driver, lambda d: d.execute_script(banner) == "")
        assert daemon.cli("symbols", "add", "VOD:LN").returncode == 0  # by the CLI, not the page
        until(driver, lambda d: "VOD:LN" in row_prices(d))
    finally:
        if dashboard is not None:
            dashboard.stop()
        daemon.stop()
        env["driver"].get(env["dashboard"].url)


# -- a Redis cluster node with no Bright Data key --------------------------------------------


@pytest.mark.skipif(redis_server_binary() is None, reason="redis-server is not installed")
def test_a_cluster_node_without_a_key_shows_its_nodes(
    env: dict[str, Any], redis_url: str, tmp_path: Path
) -> None:
    market: FakeMarket = env["market"]
    nodes = [
        DaemonHarness(market, tmp_path / f"node-{i}", REDIS_URL=redis_url, NODE_NAME=f"node-{i}")
        for i in range(2)
    ]
    dashboard: Dashboard | None = None
    try:
        for node in nodes:
            node.env = {k: v for k, v in node.env.items() if not k.startswith("BRIGHT_DATA_")}
        starting = [threading.Thread(target=node.start) for node in nodes]  # both at once
        for thread in starting:
            thread.start()
        for thread in starting:
            thread.join()
        assert all(node.alive() for node in nodes)
        assert nodes[0].cli("symbols", "add", "AAPL:US").returncode == 0
        assert nodes[0].cli("collect").returncode == 0
        dashboard = Dashboard(nodes[0])
        driver: WebDriver = env["driver"]
        driver.get(dashboard.url)
        wait_ready(driver)
        until(driver, lambda d: "node-0" in text_of(d, "nodes") and "node-1" in text_of(d, "nodes"))
        assert "no key" in text_of(driver, "bright-data")
        until(driver, lambda d: row_prices(d).get("AAPL:US"))
        source = driver.execute_script(
            "return document.querySelector('#rows tr[data-symbol=\"AAPL:US\"]').dataset.source"
        )
        assert source == "yfinance"
        screenshot(env, "cluster-no-key")
    finally:
        if dashboard is not None:
            dashboard.stop()
        for node in nodes:
            node.stop()
        # back to the module's dashboard for any test after this one
        env["driver"].get(env["dashboard"].url)
