"""Every page of the app in a real headless Chromium, with the NGSIM Peachtree demo data.

The whole pipeline runs first (Kafka -> consumer -> PostgreSQL and the lake, a few bad
records -> DLQ, then every transform job), then ``streamlit run`` serves the app against
those services and the browser opens each page, waits until it has drawn, saves a
screenshot to ``test-artifacts/screenshots/`` and checks the page's text: its heading,
numbers computed from the data, and no Streamlit exception.

``SENSORLAKE_UPDATE_SCREENSHOTS=1`` also writes smaller copies to ``docs/screenshots/`` (the
README's pictures). Skipped when Chromium or the shared data is absent.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from sensorlake.events import Event, encode_event
from tests.conftest import REPO
from tests.e2e.browser import Browser, find_chromium
from tests.lakes import PEACHTREE, backfill_all

pytestmark = pytest.mark.services

ARTIFACTS = Path(os.environ.get("SENSORLAKE_ARTIFACTS", REPO / "test-artifacts")) / "screenshots"
DOCS = REPO / "docs" / "screenshots"
NO_ERROR = "!document.querySelector('[data-testid=stException]')"
DRAWN = (
    "document.querySelector('h1') && !document.querySelector('[data-testid=stSkeleton]') "
    "&& !document.querySelector('[data-testid=stStatusWidget] [data-testid=stStatusWidgetRunningIcon]')"
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        pytest.skip("chromium is not installed (apt-get install -y chromium)")
    return path


@pytest.fixture
def demo_services(isolated, data_dir):
    """The isolated services filled with NGSIM Peachtree through Kafka, plus 2 DLQ records and
    3 records produced after the consumer stopped (a consumer lag of 3)."""
    from ingest.consumer import MovementConsumer
    from ingest.producer import produce, produce_raw
    from ingest.readers import open_source

    s = isolated
    events = list(open_source(data_dir / PEACHTREE))
    produce(s, events, speedup=None, max_rate=True)
    bad = json.dumps({"traveler_id": "m1", "traveler_type": "car", "sensor_id": 1001,
                      "timestamp": "2006-11-08T21:00:00Z"}).encode()  # fmt: skip
    produce_raw(s, [(b"1001:x", b'{"traveler_id": "x", "position": [1, 2'), (b"1001:m1", bad)])
    stats = MovementConsumer(s).run(until_idle_s=5)
    assert stats.valid == len(events) and sum(stats.dlq.values()) == 2
    backfill_all(s)
    late = [Event(1001, "late-1", "car", events[-1].ts_us + k * 100_000, 0.0, float(k)) for k in range(3)]
    produce_raw(s, [(e.key.encode(), encode_event(e)) for e in late])
    return s


@pytest.fixture
def app_url(demo_services):
    port = free_port()
    env = {**os.environ, **demo_services.to_env()}
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    log = open(ARTIFACTS.parent / "streamlit.log", "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "streamlit_app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"streamlit did not start: {(ARTIFACTS.parent / 'streamlit.log').read_text()[-2000:]}")
            time.sleep(0.3)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)
        log.close()


# page -> (path, a JavaScript condition for "drawn", texts the page must show)
PAGES = {
    "live": ("/?now=latest", "document.body.innerText.includes('Active travelers')",
             ["Live", "Active travelers", "Mean speed (mph)", "1001"]),
    "history": ("/history", "document.querySelectorAll('.vega-embed').length >= 4",
                ["History", "Volume per period", "85th-percentile speed", "Speed bins (5 mph)", "Mode split",
                 "Peak hour factor per sensor and day", "165"]),
    "heatmap": ("/heatmap", "document.querySelectorAll('.vega-embed').length >= 1",
                ["Heatmap", "Sensor 1001", "Occupied cells"]),
    "sql": ("/sql", "document.querySelector('[data-testid=stDataFrame]')",
            ["SQL", "external file access disabled", "2 rows"]),
    "health": ("/health", "document.body.innerText.includes('Data files per partition')",
               ["Data health", "Consumer lag", "Dead-letter queue", "malformed_json", "missing_field",
                "Last snapshot"]),
}  # fmt: skip


def test_every_page_renders_in_chromium_with_the_ngsim_demo(chromium, app_url, demo_services) -> None:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    browser = Browser(chromium, width=1400, height=1000)
    texts: dict[str, str] = {}
    try:
        for name, (path, ready, expected) in PAGES.items():
            browser.goto(app_url + path)
            browser.wait_for(f"{DRAWN} && ({ready})", timeout_s=90, settle_s=2.0)
            shot = ARTIFACTS / f"{name}.png"
            browser.screenshot(shot)
            assert shot.stat().st_size > 20_000, f"{name}: screenshot looks empty"
            text = browser.text()
            texts[name] = text
            assert browser.evaluate(NO_ERROR), f"{name}: Streamlit exception: {text[:3000]}"
            assert "Traceback" not in text and "not readable" not in text, text[:3000]
            for want in expected:
                assert want in text, f"{name}: {want!r} not on the page: {text[:3000]}"
    finally:
        browser.close()
    # numbers that come from the data, not from the page's code
    assert "Lag (records not in the lake)\n\n3" in texts["health"] or "\n3\n" in texts["health"]
    assert "read the newest 2 of 2 records" in texts["health"]
    if os.environ.get("SENSORLAKE_UPDATE_SCREENSHOTS") == "1":
        _update_docs()


def _update_docs() -> None:
    """Smaller palette copies of the screenshots for the README."""
    from PIL import Image

    DOCS.mkdir(parents=True, exist_ok=True)
    for png in sorted(ARTIFACTS.glob("*.png")):
        img = Image.open(png).convert("RGB")
        width = 1000
        img = img.resize((width, round(img.height * width / img.width)), Image.LANCZOS)
        img.quantize(colors=128, method=Image.Quantize.MEDIANCUT).save(DOCS / png.name, optimize=True)


def test_a_missing_lake_shows_messages_not_tracebacks(chromium, tmp_path) -> None:
    """No servers and no lake: every page still renders, with a warning, in the browser."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SENSORLAKE_")}
    env.update(SENSORLAKE_CATALOG=str(tmp_path / "none.ducklake"), SENSORLAKE_DATA_PATH=str(tmp_path / "d"),
               SENSORLAKE_STATE_DIR=str(tmp_path), SENSORLAKE_PG_PORT=str(free_port()),
               SENSORLAKE_KAFKA_PORT=str(free_port()))  # fmt: skip
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", str(REPO / "app" / "streamlit_app.py"),
         "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
         "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none"],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    browser = None
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "streamlit did not start"
            time.sleep(0.3)
        browser = Browser(chromium)
        for _name, (path, _, expected) in PAGES.items():
            browser.goto(url + path)
            browser.wait_for(f"{DRAWN} && document.querySelector('[data-testid=stAlert]')", timeout_s=60,
                             settle_s=0.5)  # fmt: skip
            assert browser.evaluate(NO_ERROR), browser.text()[:2000]
            assert expected[0] in browser.text()
    finally:
        if browser is not None:
            browser.close()
        proc.terminate()
        proc.wait(timeout=15)

