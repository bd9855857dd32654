"""Fixtures of the UI tests: the real app on a real port, a real headless chromium driven by
Playwright, tiny models. A missing browser FAILS the tests with the reason (never a skip):
`make test` installs Debian's chromium (scripts/install_browser.sh)."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("RAGTUNE_UI_CHROMIUM", "/usr/bin/chromium")
# Without the background-networking flags chromium's own connections are refused many at a time
# on a closed network, which slows every page; a fresh profile comes with each launch.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="session")
def browser():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        pytest.fail(f"the UI tests need Playwright's Python package ({exc}); `make test` installs it "
                    "(pip install -e '.[test]')", pytrace=False)
    if not Path(CHROMIUM).exists() and not shutil.which(CHROMIUM):
        pytest.fail(f"no browser at {CHROMIUM}: install Debian's chromium (`apt-get install -y chromium`, "
                    "which `make test` runs) or set RAGTUNE_UI_CHROMIUM", pytrace=False)
    pw = sync_playwright().start()
    try:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
    except Exception as exc:  # any launch failure is the reason the tests fail with
        pw.stop()
        pytest.fail(f"chromium at {CHROMIUM} did not start under Playwright: {exc}", pytrace=False)
    yield b
    b.close()
    pw.stop()


@pytest.fixture()
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    pg = context.new_page()
    pg.set_default_timeout(30_000)
    errors: list[str] = []
    pg.on("pageerror", lambda exc: errors.append(str(exc)))
    pg.js_errors = errors
    yield pg
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


class UI:
    """The real app on 127.0.0.1:<free port> in a thread (uvicorn), over a runs directory."""

    def __init__(self, root: Path, api_key: str | None = None):
        from ragtune.serve.server import ServerThread
        from ragtune.ui import create_app

        self.root = root
        self.app = create_app(root, api_key=api_key)
        self.server = ServerThread(self.app, port=0).start()
        self.url = self.server.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture()
def make_ui():
    started: list[UI] = []

    def make(root: Path, api_key: str | None = None) -> UI:
        ui = UI(root, api_key)
        started.append(ui)
        return ui

    yield make
    for ui in started:
        ui.stop()
        _kill_runs(ui.root)


def _kill_runs(root: Path) -> None:
    """A test that fails half-way must not leave its `ragtune run` processes behind."""
    import signal

    from ragtune.ui.procs import process_info

    for info_file in root.glob("*/process.json"):
        info = process_info(info_file.parent)
        if info and info["alive"]:
            try:
                os.killpg(info["pgid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def screenshots_dir(tmp_path: Path) -> Path:
    """Where pages are photographed: RAGTUNE_UI_SCREENSHOTS (docs/img for the docs) or the test's tmp."""
    d = Path(os.environ.get("RAGTUNE_UI_SCREENSHOTS") or tmp_path / "screenshots")
    d.mkdir(parents=True, exist_ok=True)
    return d


def screenshot(page, tmp_path: Path, name: str) -> Path:
    path = screenshots_dir(tmp_path) / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    assert path.stat().st_size > 10_000, f"{path} is suspiciously small (a blank page?)"
    return path


@pytest.fixture(scope="session")
def readable_llm(tiny_llm_dir, tmp_path_factory) -> Path:
    """The tiny LLM restricted to lower-case words, so greedy answers are visible text."""
    from ..serve.serve_fixtures import make_readable_llm

    return make_readable_llm(tiny_llm_dir, tmp_path_factory.mktemp("models") / "readable-llm")


@pytest.fixture(scope="session")
def squad_files(tmp_path_factory) -> Path:
    from ragtune.data.manuals import generate_manuals, split_by_passage

    d = tmp_path_factory.mktemp("squad")
    train, test = split_by_passage(generate_manuals(10, 3, seed=1), 0.3, seed=1)
    (d / "train.json").write_text(json.dumps(train))
    (d / "test.json").write_text(json.dumps(test[:4]))
    return d
