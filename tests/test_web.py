"""The dashboard (bot/web) in a real headless Chromium (Debian's chromium and chromedriver, driven by Selenium):
log in by the one-time link /web sends in chat, see a signal, open its chart, change a preference, and a
screenshot saved. And through httpx: no session, a used or forged link or cookie, a command the web does not run."""
from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest

from bot.api.public import PublicRecord
from bot.api.routes import Api
from bot.app import build_services
from bot.commands.caller import Caller
from bot.commands.registry import dispatch
from bot.http_server import start_http
from bot.settings import Settings
from bot.views.text import render_text
from bot.web.app import COOKIE, Web
from core.clock import FixedClock
from core.domain import Tier
from core.market_data.simulated import SimulatedMarket
from tests.test_delivery import NOW, signal

PRO = Caller("telegram", "101", "101", "Pro")
LINK = re.compile(r"/web/login\?token=([A-Za-z0-9_-]+)")


class Site:
    def __init__(self, services: Any, base: str) -> None:
        self.services, self.base = services, base

    async def say(self, text: str) -> str:
        return render_text(await dispatch(self.services.registry, self.services, PRO, text))

    async def link(self) -> str:
        found = LINK.search(await self.say("/web"))
        assert found
        return f"{self.base}/web/login?token={found.group(1)}"


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    settings = Settings(_env_file=None, database_url=f"sqlite+aiosqlite:///{tmp_path / 'web.db'}", http_port=0,
                        **{"SIGNALBOT_WEB_SECRET": "test-web-secret-of-at-least-32-bytes"})
    clock = FixedClock(NOW)
    services = await build_services(settings, SimulatedMarket(seed=7, start=NOW, history_days=200, clock=clock), clock)
    server = await start_http(settings, services, routers=[Api(services).router, PublicRecord(services).router,
                                                           Web(services).router])
    assert server is not None
    site = Site(services, server.url)
    await site.say("/start")
    user = await services.store.users.find_user("telegram", "101")
    await services.store.users.set_tier(user.id, Tier.PROFESSIONAL)
    await services.store.signals.add_signal(replace(signal("AAPL-1d-20240305-L"), issued_at=NOW,
                                                    expires_at=NOW.replace(year=NOW.year + 1)))
    try:
        yield site
    finally:
        await server.stop()
        await services.signal_service.close()
        await services.store.close()


def browser() -> Any:
    driver_path, chrome = shutil.which("chromedriver"), shutil.which("chromium") or shutil.which("chromium-browser")
    if driver_path is None or chrome is None:
        if os.environ.get("SIGNALBOT_REQUIRE_BROWSER") == "1":
            pytest.fail("no Chromium/chromedriver (scripts/test installs Debian's chromium and chromium-driver)")
        pytest.skip("no Chromium/chromedriver: install Debian's chromium and chromium-driver (scripts/test does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service as DriverService

    options = webdriver.ChromeOptions()
    options.binary_location = chrome
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=420,900"):
        options.add_argument(arg)  # a phone's width: the layout is mobile-first
    return webdriver.Chrome(options=options, service=DriverService(driver_path))


async def test_log_in_by_link_see_a_signal_open_its_chart_change_a_preference(site: Site, tmp_path: Path) -> None:
    link, shot = await site.link(), tmp_path / "dashboard-prefs.png"

    def browse() -> dict[str, Any]:
        """The whole browser session in a thread: a WebDriver call may wait for a page that this event loop
        serves, so none may run on the loop itself."""
        from selenium.common.exceptions import StaleElementReferenceException
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support.wait import WebDriverWait

        driver = browser()
        try:
            seen: dict[str, Any] = {}
            driver.get(link)
            seen["after_login"] = driver.current_url
            seen["signals"] = driver.find_element(By.TAG_NAME, "main").text
            driver.get(f"{site.base}/web/run?text=%2Fsignal%20AAPL")
            chart = driver.find_element(By.CSS_SELECTOR, "img.chart")
            seen["chart_src"] = chart.get_attribute("src")[:30]
            seen["chart_width"] = driver.execute_script("return arguments[0].naturalWidth", chart)
            driver.find_element(By.XPATH, "//button[text()='I took it']").click()  # a POST form, not a link
            WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,)).until(  # the old page's
                lambda d: "Recorded" in d.find_element(By.TAG_NAME, "main").text)  # element while the new one loads
            seen["took"] = driver.find_element(By.TAG_NAME, "main").text
            driver.get(f"{site.base}/web/run?text=%2Fportfolio")
            seen["portfolio"] = driver.find_element(By.TAG_NAME, "main").text
            driver.get(f"{site.base}/web/prefs")
            driver.find_element(By.CSS_SELECTOR, "#pref-key option[value='confidence']").click()
            driver.find_element(By.ID, "pref-value").send_keys("60")
            driver.find_element(By.ID, "pref-save").click()
            WebDriverWait(driver, 20, ignored_exceptions=(StaleElementReferenceException,)).until(
                lambda d: "Preferences saved" in d.find_element(By.TAG_NAME, "main").text)
            seen["saved"] = driver.find_element(By.TAG_NAME, "main").text
            seen["shot"] = driver.save_screenshot(str(shot))
            return seen
        finally:
            driver.quit()

    seen = await asyncio.to_thread(browse)
    assert seen["after_login"].endswith("/web")  # logged in, redirected to the signals
    body = seen["signals"]
    assert "1 active signal" in body and "now P&L" in body  # with the latest price and the open P&L
    assert re.search(r"AAPL 1d BUY 100\.00 [0-9.]+ [+-][0-9.]+% 104\.00 98\.00", body), body
    assert seen["chart_src"].startswith("data:image/png;base64,") and seen["chart_width"] > 300  # it loaded
    assert "Your fill" in seen["took"] and "AAPL 1d BUY" in seen["portfolio"], seen["portfolio"]
    assert "Preferences saved" in seen["saved"] and "60" in seen["saved"]
    user = await site.services.store.users.find_user("telegram", "101")
    assert user.preferences.min_confidence == 60  # stored through the same /prefs command as chat
    assert seen["shot"] and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 5_000
    print(f"\nscreenshot: {shot}")


async def test_no_session_a_used_link_a_forged_cookie_and_a_command_the_web_does_not_run(site: Site) -> None:
    async with httpx.AsyncClient(base_url=site.base) as http:
        r = await http.get("/web")
        assert r.status_code == 401 and "/web" in r.text
        link = await site.link()
        first = await http.get(link, follow_redirects=False)
        assert first.status_code == 303 and COOKIE in first.cookies
        again = await http.get(link)
        assert again.status_code == 401 and "expired or was used" in again.text
        assert (await http.get("/web")).status_code == 200  # the cookie from the first use
    forged = jwt.encode({"sub": "1", "exp": 4102444800}, "not-the-secret-but-as-long-as-one-is", algorithm="HS256")
    async with httpx.AsyncClient(base_url=site.base, cookies={COOKIE: forged}) as other:
        assert (await other.get("/web")).status_code == 401
    async with httpx.AsyncClient(base_url=site.base) as http:
        await http.get(await site.link())
        r = await http.get("/web/run", params={"text": "/stop"})
        assert r.status_code == 400 and "not available on the web" in r.text
        for write in ("/prefs confidence 99", "/apikey create by-link", "/watchlist add NVDA"):  # a link changes nothing
            assert (await http.get("/web/run", params={"text": write})).status_code == 400
        assert (await http.get("/web/run", params={"text": "/prefs"})).status_code == 200  # reading is fine
        r = await http.post("/web/prefs", data={"key": "bogus", "value": "1"})
        assert r.status_code == 400
        assert (await http.post("/web/run", data={"text": "/stop"})).status_code == 400  # forms: buttons' writes only
        assert (await http.post("/web/run", data={"text": "/watchlist add NVDA"})).status_code == 200
        user = await site.services.store.users.find_user("telegram", "101")
        assert user.active and user.preferences.min_confidence != 99  # nothing the web refused was done
        assert await site.services.store.api_keys.keys_of(user.id) == []
        assert await site.services.store.watchlist.symbols_of(user.id) == ["NVDA"]  # by the form
