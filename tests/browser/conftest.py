"""The browser tier: Debian's headless Chromium driven by pip ``playwright``, requests recorded.

The browser is the system ``chromium`` (``make test`` installs it via scripts/system_tools.sh);
``playwright install`` is never used. Pages are only observed: no request is blocked, routed or
rewritten by the tests. A failing test leaves a screenshot of its page in ``reports/browser/``
(or ``$FMOPS_TEST_BROWSER_ARTIFACTS``); ``FMOPS_TEST_BROWSER_SCREENSHOTS=always`` keeps one for every test.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.helpers import REPO_ROOT

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
LOCAL_SCHEMES = {"data", "blob", "about"}


def artifacts_dir() -> Path:
    return Path(os.environ.get("FMOPS_TEST_BROWSER_ARTIFACTS", REPO_ROOT / "reports" / "browser"))


# --- the browser ---------------------------------------------------------------------------


def chromium_path() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "Debian's chromium is not installed: apt-get install chromium (make test does)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """One headless Chromium with a fresh profile (``--user-data-dir``) per test module.

    Module scope: the browser and Playwright's event loop are gone before other tiers run.
    """
    executable = chromium_path()
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),
            executable_path=executable,
            headless=True,
            chromium_sandbox=False,
            args=CHROMIUM_FLAGS,
            viewport={"width": 1280, "height": 900},
        )
        context.set_default_timeout(120_000)  # a loaded 2-core machine
        try:
            yield context
        finally:
            context.close()


@dataclass
class Recorded:
    url: str
    failure: str | None = None

    @property
    def scheme(self) -> str:
        return urlsplit(self.url).scheme

    def origin(self) -> str:
        """``scheme://host:port``; a blob: URL belongs to the origin that made it."""
        url = self.url[len("blob:") :] if self.scheme == "blob" else self.url
        parts = urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}"


@dataclass
class RequestLog:
    """Every request the page (and its workers) made, with how it ended; nothing is altered."""

    requests: list[Recorded] = field(default_factory=list)

    def on_request(self, request: Any) -> None:
        self.requests.append(Recorded(request.url))

    def on_failed(self, request: Any) -> None:
        for entry in reversed(self.requests):
            if entry.url == request.url and entry.failure is None:
                entry.failure = request.failure or "failed"
                return

    def outside(self, origin: str) -> list[Recorded]:
        """Requests to anything but ``origin`` (data: URLs and blobs of ``origin`` are local)."""
        return [
            r
            for r in self.requests
            if not (r.scheme in LOCAL_SCHEMES - {"blob"} or r.origin() == origin)
        ]

    def summary(self) -> str:
        return "\n".join(
            f"  {r.url[:120]}{f'  [{r.failure}]' if r.failure else ''}" for r in self.requests
        )


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


@pytest.fixture()
def page(browser_context: Any, request: pytest.FixtureRequest) -> Iterator[tuple[Any, RequestLog]]:
    """A new tab with its request log; screenshot kept on failure (or always, on demand)."""
    log = RequestLog()
    browser_context.on("request", log.on_request)
    browser_context.on("requestfailed", log.on_failed)
    tab = browser_context.new_page()
    try:
        yield tab, log
    finally:
        report = getattr(request.node, "report_call", None)
        failed = report is None or report.failed
        if failed or os.environ.get("FMOPS_TEST_BROWSER_SCREENSHOTS") == "always":
            target = artifacts_dir() / f"{request.node.name}.png"
            target.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(Exception):
                tab.screenshot(path=str(target), full_page=False, timeout=15_000)
                print(f"screenshot: {target}")
            (target.with_suffix(".requests.txt")).write_text(log.summary() + "\n")
        tab.close()
        browser_context.remove_listener("request", log.on_request)
        browser_context.remove_listener("requestfailed", log.on_failed)
