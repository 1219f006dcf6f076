#!/usr/bin/env python3
"""Drives the gbgate console in Debian's headless Chromium through
chromedriver (selenium from PyPI), as a person would: sign in, open the
tree, search, play a camera, press a PTZ button, sign in as another
department, read the audit as an admin. Prints one JSON object with what
it saw; the Rust test (integration/tests/console.rs) decides pass or fail
and checks the device side (gbsim's log) and the screenshot (ffmpeg).

Usage: console_test.py CONFIG.json OUT_DIR
CONFIG: {"base", "police", "traffic", "admin", "search", "camera"}
"""

import json
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.select import Select
from selenium.webdriver.support.ui import WebDriverWait


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage",
              "--autoplay-policy=no-user-gesture-required", "--window-size=1400,900",
              "--disable-gpu"):
        o.add_argument(a)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)


def sign_in(d, base, token):
    d.get(base + "/console")
    d.execute_script("sessionStorage.clear()")
    d.get(base + "/console")
    box = d.find_element(By.ID, "token")
    box.send_keys(token)
    d.find_element(By.ID, "login-button").click()
    WebDriverWait(d, 10).until(lambda d: d.find_element(By.ID, "app").is_displayed())


def expand_all(d, timeout=20):
    """Opens every branch of the tree; returns the cameras' IDs."""
    end = time.time() + timeout
    while time.time() < end:
        closed = d.find_elements(By.CSS_SELECTOR, "#tree li.branch:not(.open) > span")
        if not closed:
            # Wait for the last level's answers to land.
            time.sleep(0.5)
            if not d.find_elements(By.CSS_SELECTOR, "#tree li.branch:not(.open) > span"):
                break
            continue
        for s in closed:
            s.click()
        time.sleep(0.3)
    return sorted({e.get_attribute("data-id") for e in d.find_elements(By.CSS_SELECTOR, "#tree li.camera")})


def clock(d, video, seconds):
    """The video element's currentTime once it plays, and again `seconds` later."""
    now = lambda: d.execute_script("return arguments[0].currentTime", video)
    WebDriverWait(d, 20).until(lambda d: now() > 0.5)
    t0 = now()
    time.sleep(seconds)
    return [t0, now()]


def main():
    cfg = json.load(open(sys.argv[1]))
    out_dir = sys.argv[2]
    base = cfg["base"]
    seen = {}
    d = browser()
    try:
        # 1. Police signs in; the page paints; the tree lists the cameras.
        started = time.time()
        sign_in(d, base, cfg["police"])
        seen["whoami"] = d.find_element(By.ID, "whoami").text
        paint = d.execute_script(
            "const p = performance.getEntriesByName('first-contentful-paint')[0];"
            "return p ? p.startTime : null;")
        seen["first_contentful_paint_ms"] = paint
        WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tree li"))
        seen["tree_police"] = expand_all(d)
        seen["tree_ms"] = (time.time() - started) * 1000

        # The alarms panel lists the NVR's alarms as they come up the tree.
        WebDriverWait(d, 15).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#alarms li.alarm"))
        seen["alarms"] = [e.get_attribute("data-id") for e in d.find_elements(By.CSS_SELECTOR, "#alarms li.alarm")]

        # 2. Search by name finds the camera.
        d.find_element(By.ID, "search").send_keys(cfg["search"])
        hit = WebDriverWait(d, 10).until(lambda d: [
            e for e in d.find_elements(By.CSS_SELECTOR, "#search-results li.camera")
            if e.get_attribute("data-id") == cfg["camera"]])
        seen["search_hits"] = [e.get_attribute("data-id") for e in
                               d.find_elements(By.CSS_SELECTOR, "#search-results li.camera")]

        # 3. Click it: the first cell plays; its clock advances.
        d.find_element(By.ID, "layout-4").click()
        hit[0].find_element(By.CSS_SELECTOR, "span").click()
        video = d.find_elements(By.CSS_SELECTOR, "#grid video")[0]
        seen["video_time"] = clock(d, video, 2)
        seen["first_frame_ms"] = d.execute_script("return window.gbgateTimes.firstFrameMs")
        video.screenshot(f"{out_dir}/video.png")
        d.save_screenshot(f"{out_dir}/console.png")

        # 4. PTZ: press and release "right".
        right = d.find_element(By.ID, "ptz-right")
        webdriver.ActionChains(d).click_and_hold(right).pause(0.3).release(right).perform()
        WebDriverWait(d, 10).until(lambda d: "OK" in d.find_element(By.ID, "ptz-status").text)
        seen["ptz_status"] = d.find_element(By.ID, "ptz-status").text

        # 5. Recordings: the timeline lists the device's RecordInfo answer
        #    (through four tiers); one plays in the next cell; pause and
        #    speed go down as MANSRTSP.
        d.find_element(By.ID, "rec-search").click()
        WebDriverWait(d, 20).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#timeline .segment"))
        seen["recordings"] = len(d.find_elements(By.CSS_SELECTOR, "#timeline .segment"))
        d.find_elements(By.CSS_SELECTOR, "#rec-list li.record")[0].click()
        pvideo = d.find_elements(By.CSS_SELECTOR, "#grid video")[1]
        seen["playback_time"] = clock(d, pvideo, 1.5)
        seen["playback_session"] = d.find_element(By.ID, "pb-status").text
        d.find_element(By.ID, "pb-pause").click()
        WebDriverWait(d, 10).until(lambda d: d.find_element(By.ID, "pb-status").text == "paused")
        time.sleep(0.3)  # the node takes one command per 200 ms per session
        Select(d.find_element(By.ID, "pb-speed")).select_by_value("2")
        WebDriverWait(d, 10).until(lambda d: "2" in d.find_element(By.ID, "pb-status").text)
        seen["playback_control"] = d.find_element(By.ID, "pb-status").text
        d.save_screenshot(f"{out_dir}/playback.png")

        # 5b. The same camera as MPEG-TS in the next cell: its clock advances.
        Select(d.find_element(By.ID, "format")).select_by_value("ts")
        again = [e for e in d.find_elements(By.CSS_SELECTOR, "#search-results li.camera")
                 if e.get_attribute("data-id") == cfg["camera"]]
        again[0].find_element(By.CSS_SELECTOR, "span").click()
        tvideo = d.find_elements(By.CSS_SELECTOR, "#grid video")[2]
        seen["ts_video_time"] = clock(d, tvideo, 1.5)
        Select(d.find_element(By.ID, "format")).select_by_value("flv")

        # 6. Traffic signs in: it sees only its own camera.
        sign_in(d, base, cfg["traffic"])
        WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#tree li"))
        seen["tree_traffic"] = expand_all(d)
        seen["admin_links_for_traffic"] = d.find_element(By.ID, "nav-audit").is_displayed()

        # 7. The admin reads the audit: the session police just watched.
        sign_in(d, base, cfg["admin"])
        d.find_element(By.ID, "nav-audit").click()
        d.find_element(By.ID, "audit-channel").send_keys(cfg["camera"])
        d.find_element(By.CSS_SELECTOR, "#audit-filter button").click()
        WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#audit-table tr.audit-row"))
        time.sleep(0.5)
        seen["audit_rows"] = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#audit-table tr.audit-row")]
        d.save_screenshot(f"{out_dir}/audit.png")
        # The topology page: this node, its children and their state.
        d.find_element(By.ID, "nav-topology").click()
        WebDriverWait(d, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#topo-down tbody tr"))
        seen["topology_children"] = [r.text for r in d.find_elements(By.CSS_SELECTOR, "#topo-down tbody tr")]
    finally:
        try:
            seen["console_errors"] = [e["message"] for e in d.get_log("browser")
                                      if e["level"] == "SEVERE"]
        except Exception as e:  # the log is a nicety; the checks are above
            seen["console_errors"] = [f"could not read the browser log: {e}"]
        d.quit()
    print(json.dumps(seen))


if __name__ == "__main__":
    main()
