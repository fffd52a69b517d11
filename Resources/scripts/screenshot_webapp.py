"""Regenerate Resources/webapp.png: the browser app (liverseg-web) after "Load sample" and "Segment liver", as
headless chromium shows it. Needs the web extra, selenium and chromium/chromedriver (``make browser``).
    python Resources/scripts/screenshot_webapp.py [OUTPUT.png]"""
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

REPO = Path(__file__).resolve().parents[2]


def main(out: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": str(REPO / "LiverSegmentation")}
    server = subprocess.Popen([sys.executable, "-m", "liverseg_web", "--single", "--port", str(port),
                               "--idle-timeout", "30"], env=env, start_new_session=True)
    options = webdriver.ChromeOptions()
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,800"):
        options.add_argument(arg)
    options.binary_location = "/usr/bin/chromium"
    driver = webdriver.Chrome(options=options, service=Service("/usr/bin/chromedriver"))
    try:
        for _ in range(120):
            try:
                driver.get(f"http://127.0.0.1:{port}/")
                break
            except Exception:
                time.sleep(0.5)
        time.sleep(5)
        driver.find_element(By.CSS_SELECTOR, ".liver-sample").click()
        time.sleep(8)
        driver.find_element(By.CSS_SELECTOR, ".liver-segment").click()
        for _ in range(240):
            status = driver.find_element(By.CSS_SELECTOR, ".liver-status").text
            if status.startswith(("Done", "Failed")):
                break
            time.sleep(0.5)
        time.sleep(3)
        driver.save_screenshot(str(out))
        print(status, "->", out)
    finally:
        driver.quit()
        os.killpg(server.pid, signal.SIGTERM)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else REPO / "Resources" / "webapp.png")
