"""A tiny headless-Chromium driver over the DevTools protocol (Debian's ``chromium``, no download).

``chromium --screenshot --virtual-time-budget`` stops the clock when the network is idle,
which is before a Streamlit page has drawn anything (it renders from websocket messages),
so the test drives the browser instead: navigate, wait until a JavaScript condition holds
in real time, then capture a PNG and the page's text. The websocket client is tornado's
(a Streamlit dependency), so nothing is installed for this.
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from tornado.websocket import websocket_connect

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
    "--remote-allow-origins=*",
]


def find_chromium() -> str | None:
    """Path of Debian's chromium (or a chromium/chrome on PATH), None when absent."""
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


async def _connect(url: str):
    return await websocket_connect(url, max_message_size=1 << 28)


class Browser:
    """One headless Chromium process with one page.

    Args:
        binary: the chromium executable.
        width, height: the viewport (CSS px).
    """

    def __init__(self, binary: str, *, width: int = 1400, height: int = 1000) -> None:
        self._dir = tempfile.mkdtemp(prefix="sl-chromium-")
        self._proc = subprocess.Popen(
            [binary, *CHROMIUM_FLAGS, f"--user-data-dir={self._dir}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "DBUS_SESSION_BUS_ADDRESS": "disabled:"},
        )
        self.width, self.height = width, height
        self._ids = itertools.count(1)
        self._loop = asyncio.new_event_loop()
        self._ws = None
        try:
            port = self._port(timeout_s=30)
            targets = json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10))
            page = next(t for t in targets if t.get("type") == "page")
            self._ws = self._loop.run_until_complete(_connect(page["webSocketDebuggerUrl"]))
        except BaseException:
            self.close()
            raise
        self.call("Page.enable")
        self.call("Runtime.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def _port(self, timeout_s: float) -> int:
        marker = Path(self._dir) / "DevToolsActivePort"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if marker.exists() and marker.read_text().strip():
                return int(marker.read_text().split()[0])
            if self._proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self._proc.returncode}")
            time.sleep(0.1)
        raise RuntimeError("chromium did not open its DevTools port")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send one DevTools command and return its result (events in between are dropped)."""
        return self._loop.run_until_complete(self._call(method, params))

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        msg_id = next(self._ids)
        await self._ws.write_message(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            raw = await asyncio.wait_for(self._ws.read_message(), timeout=60)
            if raw is None:
                raise RuntimeError("DevTools connection closed")
            msg = json.loads(raw)
            if msg.get("id") == msg_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression in the page."""
        res = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return res.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_for(self, expression: str, *, timeout_s: float = 60, settle_s: float = 1.0) -> None:
        """Wait until ``expression`` is truthy, then ``settle_s`` more (charts finish drawing).

        Raises:
            TimeoutError: with the page's text, when it never holds.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(f"Boolean({expression})"):
                time.sleep(settle_s)
                return
            time.sleep(0.25)
        raise TimeoutError(f"page never satisfied {expression!r}; text: {self.text()[:2000]!r}")

    def text(self) -> str:
        """The page's visible text (``document.body.innerText``)."""
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path, *, full_page: bool = True) -> None:
        """Save a PNG of the viewport, or of the whole scrolled content of Streamlit's main area."""
        height = self.height
        if full_page:
            content = self.evaluate(
                "Math.max(...Array.from(document.querySelectorAll('section.stMain, [data-testid=stMain], "
                "[data-testid=stAppViewContainer]')).map(e => e.scrollHeight), document.body.scrollHeight)"
            )
            height = max(self.height, int(content or self.height))
            self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=height, deviceScaleFactor=1,
                      mobile=False)  # fmt: skip
            time.sleep(0.8)
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        if full_page:
            self.call("Emulation.setDeviceMetricsOverride", width=self.width, height=self.height,
                      deviceScaleFactor=1, mobile=False)  # fmt: skip

    def close(self) -> None:
        """Close the browser (Browser.close, then wait; kill after 10 s) and remove its profile."""
        if self._ws is not None:
            try:
                self._loop.run_until_complete(self._call("Browser.close", {}))
            except Exception:  # noqa: BLE001 - the process goes away under us
                pass
            self._ws.close()
        self._loop.close()
        try:
            self._proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait(timeout=10)
        shutil.rmtree(self._dir, ignore_errors=True)
