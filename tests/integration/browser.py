"""A real headless browser for page tests: Debian's `chromium`, driven over the Chrome
DevTools protocol (its websocket, through aiohttp's client).

`Browser` starts chromium with a throwaway profile, attaches to its page and offers what the
tests need: `navigate`, `evaluate` (a JavaScript expression's JSON value, promises awaited),
`wait_for` (until an expression is truthy) and `problems` (uncaught exceptions and console or
security errors the page produced, CSP violations included). Chromium missing is a failure
that says how to install it, never a skip.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import aiohttp

__all__ = ["Browser", "BrowserError"]

_LISTENING = re.compile(r"DevTools listening on (ws://\S+)")


class BrowserError(AssertionError):
    """The browser could not be started or driven, or a script raised in the page."""


class Browser:
    """One headless chromium with one page (use as a context manager)."""

    def __init__(self, profile: Path, timeout_s: float = 30.0) -> None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            raise BrowserError("chromium is not installed (Debian: apt-get install chromium; "
                               "`make test` installs it through deploy/system-deps.sh)")
        self.timeout_s = timeout_s
        self.process = subprocess.Popen(
            [binary, "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run",
             "--disable-dev-shm-usage", "--remote-debugging-port=0",
             f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self._ids = itertools.count(1)
        self.events: list[dict[str, Any]] = []
        self.loop = asyncio.new_event_loop()
        try:
            browser_url = self._devtools_url()
            self.loop.run_until_complete(self._attach(browser_url))
            for domain in ("Page", "Runtime", "Log"):
                self.call(f"{domain}.enable")
        except BaseException:
            self.close()
            raise

    def _devtools_url(self) -> str:
        assert self.process.stderr is not None
        deadline = time.monotonic() + self.timeout_s
        seen: list[str] = []
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            if not line and self.process.poll() is not None:
                break
            seen.append(line)
            found = _LISTENING.search(line)
            if found:
                return found.group(1)
        raise BrowserError("chromium did not open its DevTools port:\n" + "".join(seen[-20:]))

    async def _attach(self, browser_url: str) -> None:
        port = browser_url.split("://", 1)[1].split("/", 1)[0]
        self.session = aiohttp.ClientSession()
        async with self.session.get(f"http://{port}/json/list") as reply:
            targets = await reply.json(content_type=None)
        pages = [t for t in targets if t.get("type") == "page"]
        if not pages:
            raise BrowserError(f"chromium shows no page target: {targets}")
        self.ws = await self.session.ws_connect(pages[0]["webSocketDebuggerUrl"],
                                                max_msg_size=0)

    async def _call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        call_id = next(self._ids)
        await self.ws.send_json({"id": call_id, "method": method, "params": params})
        while True:
            message = await asyncio.wait_for(self.ws.receive(), self.timeout_s)
            if message.type != aiohttp.WSMsgType.TEXT:
                raise BrowserError(f"DevTools connection ended: {message.type}")
            body = message.json()
            if body.get("id") == call_id:
                if "error" in body:
                    raise BrowserError(f"{method}: {body['error']}")
                result: dict[str, Any] = body.get("result", {})
                return result
            if "method" in body:
                self.events.append(body)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        """One DevTools protocol command; its result."""
        return self.loop.run_until_complete(self._call(method, params))

    def navigate(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in result:
            raise BrowserError(f"{expression!r} raised: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout_s: float = 30.0, what: str = "",
                 show: str = "") -> Any:
        """Poll until the expression is truthy; its value. On a timeout the error shows the
        page's problems and the value of `show`, an expression (what the page shows instead)."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                value = self.evaluate(expression)
            except BrowserError:  # the page is (re)loading
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                shown = self.evaluate(show) if show else None
                raise BrowserError(f"timed out waiting for {what or expression}; page "
                                   f"problems: {self.problems()}; shown: {shown!r}")
            time.sleep(0.1)

    def problems(self, ignore: tuple[str, ...] = ("favicon.ico",)) -> list[str]:
        """Uncaught exceptions, and console or browser log entries at error level (a
        Content-Security-Policy violation is one), except those mentioning `ignore`."""
        self.evaluate("0")  # reads the events sent since the last command
        found = []
        for event in self.events:
            method, params = event["method"], event.get("params", {})
            if method == "Runtime.exceptionThrown":
                found.append(str(params.get("exceptionDetails", {}).get("exception", params)))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                found.append(f"{params['entry'].get('source')}: {params['entry'].get('text')} "
                             f"{params['entry'].get('url', '')}")
            elif (method == "Runtime.consoleAPICalled"
                  and params.get("type") in ("error", "assert")):
                found.append(str([a.get("value") for a in params.get("args", [])]))
        return [p for p in found if not any(i in p for i in ignore)]

    def close(self) -> None:
        try:
            if getattr(self, "ws", None) is not None:
                self.loop.run_until_complete(self.ws.close())
            if getattr(self, "session", None) is not None:
                self.loop.run_until_complete(self.session.close())
        finally:
            self.loop.close()
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
