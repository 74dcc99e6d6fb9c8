"""Headless Chromium for tests: open a page, report its images' widths, console errors and requests
to other hosts. Driven over the DevTools protocol on a pipe; no extra packages."""

import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path


class Chromium:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe:
    JSON messages separated by NUL on file descriptors 3 and 4), no extra packages."""

    def __init__(self, profile):
        exe = shutil.which("chromium") or shutil.which("chromium-browser")
        assert exe, "Chromium is not installed: apt-get update && apt-get install -y chromium"
        to_child, self.out = os.pipe()
        self.inp, from_child = os.pipe()
        # the child's ends above 3 and 4, so that moving them to 3 and 4 cannot clobber one another
        to_child, from_child = [self._high(fd) for fd in (to_child, from_child)]
        flags = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--remote-debugging-pipe",
        ]
        launcher = (
            f"import os, sys; os.dup2({to_child}, 3); os.dup2({from_child}, 4); os.execv(sys.argv[1], sys.argv[1:])"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", launcher, exe, *flags, "about:blank"],
            pass_fds=(to_child, from_child),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        os.close(to_child)
        os.close(from_child)
        self.buffer, self.next_id, self.events = b"", 0, []

    @staticmethod
    def _high(fd):
        high = fcntl.fcntl(fd, fcntl.F_DUPFD, 20)
        os.close(fd)
        return high

    def send(self, method, params=None, session=None, timeout=60):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.out, json.dumps(message).encode() + b"\0")
        reply = self.wait(lambda m: m.get("id") == self.next_id, timeout)
        assert "error" not in reply, reply
        return reply.get("result", {})

    def wait(self, match, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            for i, message in enumerate(self.events):
                if match(message):
                    return self.events.pop(i)
            remaining = deadline - time.monotonic()
            assert remaining > 0, "Chromium did not answer in time"
            if select.select([self.inp], [], [], remaining)[0]:
                chunk = os.read(self.inp, 1 << 20)
                assert chunk, "Chromium closed the DevTools pipe"
                self.buffer += chunk
                *messages, self.buffer = self.buffer.split(b"\0")
                self.events += [json.loads(m) for m in messages if m]

    def _load(self, path, width=None):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.send(f"{domain}.enable", session=session)
        if width:
            metrics = {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}
            self.send("Emulation.setDeviceMetricsOverride", metrics, session=session)
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session=session)
        self.wait(lambda m: m.get("method") == "Page.loadEventFired" and m.get("sessionId") == session)
        return target, session

    def _evaluate(self, session, expression):
        reply = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True}, session=session)
        return reply["result"]["value"]

    def cut_tables(self, path, width):
        """The first header cell of every table whose columns run out of view at `width` pixels."""
        target, session = self._load(path, width)
        cut = self._evaluate(
            session,
            "Array.from(document.querySelectorAll('table')).filter(t => t.getBoundingClientRect().right > "
            "document.documentElement.clientWidth + 1 || (t.parentElement.scrollWidth > t.parentElement.clientWidth + 1))"
            ".map(t => t.querySelector('th') ? t.querySelector('th').textContent : '?')",
        )
        self.send("Target.closeTarget", {"targetId": target})
        return cut

    def open(self, path):
        """Load a page; return (naturalWidth of each <img>, console errors, requests to other hosts)."""
        target, session = self._load(path)
        widths = self._evaluate(session, "Array.from(document.images).map(i => i.complete ? i.naturalWidth : -1)")
        errors, requests = [], []
        for m in [m for m in self.events if m.get("sessionId") == session]:
            method, params = m.get("method"), m.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append(params["args"])
            elif method == "Runtime.exceptionThrown" or (
                method == "Log.entryAdded" and params["entry"]["level"] == "error"
            ):
                errors.append(params)
            elif method == "Network.requestWillBeSent" and not params["request"]["url"].startswith(("data:", "file:")):
                requests.append(params["request"]["url"])
        self.send("Target.closeTarget", {"targetId": target})
        return widths, errors, requests

    def close(self):
        try:
            self.send("Browser.close", timeout=10)
        except (AssertionError, OSError):  # already gone: the test's own failure says why
            pass
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.out)
        os.close(self.inp)
