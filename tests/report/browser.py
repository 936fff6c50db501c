"""A small headless-Chromium driver for the report check, over the DevTools protocol.

Debian's ``/usr/bin/chromium`` (scripts/provision/chromium.sh) runs with a fresh profile, no
network services, ``--remote-debugging-port=0``; the port is read from the profile's
``DevToolsActivePort`` file and one page target is driven over a websocket with aiohttp (already a
dependency): console messages, exceptions, log entries (CSP violations, failed loads) and every
network request are collected while the page loads.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import signal
import subprocess
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-extensions",
    "--remote-debugging-port=0",
)


@dataclass
class PageLoad:
    console_errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict[str, Any]] = field(default_factory=list)
    scripts: int = 0
    text: str = ""
    screenshot: bytes = b""


class Page:
    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.ids = itertools.count(1)
        self.load = PageLoad()
        self.loaded = asyncio.Event()
        self.waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            data = json.loads(message.data)
            if "id" in data and data["id"] in self.waiting:
                self.waiting.pop(data["id"]).set_result(data)
            else:
                self._event(data.get("method", ""), data.get("params", {}))

    def _event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
            self.load.console_errors.append(json.dumps(params["args"])[:500])
        elif method == "Runtime.exceptionThrown":
            self.load.console_errors.append(json.dumps(params["exceptionDetails"])[:500])
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            self.load.console_errors.append(params["entry"].get("text", "")[:500])
        elif method == "Network.requestWillBeSent":
            self.load.requests.append(params["request"]["url"][:200])
        elif method == "Page.loadEventFired":
            self.loaded.set()

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        number = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.waiting[number] = future
        await self.ws.send_json({"id": number, "method": method, "params": params})
        reply = await asyncio.wait_for(future, 60)
        if "error" in reply:
            raise RuntimeError(f"{method}: {reply['error']}")
        result: dict[str, Any] = reply["result"]
        return result

    async def evaluate(self, expression: str) -> Any:
        reply = await self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        return reply["result"].get("value")


async def _port(profile: Path, process: subprocess.Popen[bytes]) -> int:
    marker = profile / "DevToolsActivePort"
    for _ in range(600):
        if marker.is_file() and (lines := marker.read_text().splitlines()):
            return int(lines[0])
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode}")
        await asyncio.sleep(0.05)
    raise TimeoutError("chromium did not open its DevTools port in 30 s")


@contextlib.asynccontextmanager
async def browser(profile: Path) -> AsyncIterator[tuple[aiohttp.ClientSession, int]]:
    if not CHROMIUM.is_file():
        raise RuntimeError(f"{CHROMIUM} is missing: run scripts/provision/chromium.sh")
    profile.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        port = await _port(profile, process)
        async with aiohttp.ClientSession() as session:
            yield session, port
    finally:  # the whole process group: the browser and its renderer and GPU helpers
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()


async def open_page(url: str, profile: Path, *, width: int = 1280) -> PageLoad:
    """Load ``url`` in a fresh headless Chromium; what it logged, requested and rendered, and a
    full-page screenshot."""
    async with browser(profile) as (session, port):
        async with session.put(f"http://127.0.0.1:{port}/json/new?about:blank") as response:
            target = await response.json(content_type=None)
        async with session.ws_connect(target["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            page = Page(ws)
            for domain in ("Page", "Runtime", "Log", "Network"):
                await page.call(f"{domain}.enable")
            await page.call(
                "Emulation.setDeviceMetricsOverride",
                width=width,
                height=900,
                deviceScaleFactor=1,
                mobile=False,
            )
            await page.call("Page.navigate", url=url)
            await asyncio.wait_for(page.loaded.wait(), 60)
            load = page.load
            load.images = await page.evaluate(
                "Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete,"
                " width: i.naturalWidth, height: i.naturalHeight}))"
            )
            load.scripts = await page.evaluate("document.scripts.length")
            load.text = await page.evaluate("document.body.innerText")
            size = (await page.call("Page.getLayoutMetrics"))["cssContentSize"]
            clip = {
                "x": 0,
                "y": 0,
                "width": width,
                "height": min(size["height"], 16000),
                "scale": 1,
            }
            shot = await page.call(
                "Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True
            )
            load.screenshot = base64.b64decode(shot["data"])
            page.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await page.reader
            return load
