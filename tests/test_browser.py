"""The widgets render in a real JupyterLab, driven by Playwright in Debian's headless Chromium.

Skipped where Chromium or Playwright is missing, except in CI (CI=true), where a missing browser is a failure:
.ci/run installs both. Screenshots go to a temporary folder; NBKIT_REFRESH_DOCS=1 writes docs/img/ instead.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DOCS_IMG = ROOT / "docs" / "img"
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None and not IN_CI, reason="needs Chromium (apt-get install chromium)"),
]


@pytest.fixture
def shots(tmp_path):
    """Where screenshots go: docs/img/ only when asked to refresh it, so a test run never rewrites tracked files."""
    if CHROMIUM is None:
        pytest.fail("CI must run the browser test, but Chromium is missing: .ci/run installs it with apt-get")
    return DOCS_IMG if os.environ.get("NBKIT_REFRESH_DOCS") == "1" else tmp_path

CELL = """import nbkit
from nbkit import RunConfig
from nbkit.hardware import GpuInfo
from nbkit.ui.launch import launch
t4 = GpuInfo(True, "Tesla T4 (simulated)", (7, 5), 15.0, 14.5, False, False, 1)
ui = launch(RunConfig(model="unsloth/Meta-Llama-3.1-8B-Instruct"), gpu=t4)"""


@pytest.fixture
def lab(tmp_path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(CELL)])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "ui.ipynb")
    from nbkit.distributed import free_port

    port = free_port()
    env = {**os.environ, "NBKIT_DISPLAY": "widgets", "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={tmp_path}", "--allow-root", "--LabApp.news_url=None",
         "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/api/status", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        proc.kill()
        pytest.fail("JupyterLab did not start within 90 s")
    yield url
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def test_launcher_renders_in_jupyterlab(lab, tmp_path, shots):
    sync_api = pytest.importorskip("playwright.sync_api")
    shot = shots / "launcher.png"
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        page = browser.new_page(viewport={"width": 1280, "height": 1000})
        page.goto(f"{lab}/lab/tree/ui.ipynb")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        page.wait_for_selector(".jp-StatusBar-Item:has-text('Idle')", timeout=90_000)  # kernel ready
        gauge = None
        for _attempt in range(3):  # a menu click racing Lab's start-up can be lost: run again
            page.get_by_role("menuitem", name="Run", exact=True).click()
            page.get_by_text("Run All Cells", exact=True).click()
            try:
                gauge = page.wait_for_selector(".nbkit-gauge", timeout=40_000)
                break
            except sync_api.TimeoutError:
                page.keyboard.press("Escape")
        if gauge is None:
            page.screenshot(path=str(tmp_path / "failed.png"))
            pytest.fail(f"the widgets never rendered; page text: {page.inner_text('body')[-1500:]}")
        assert gauge.get_attribute("data-level") == "ok"
        assert "/ 15.0 GiB" in gauge.inner_text()
        assert page.locator("text=Loading widget").count() == 0
        # the form is live in the browser: typing a batch that cannot fit turns the gauge red
        batch = page.locator(".widget-text:has(label:text-is('Batch size')) input")
        recommended = batch.input_value()
        batch.fill("64")
        batch.press("Enter")
        page.wait_for_selector(".nbkit-gauge[data-level='over']", timeout=30_000)
        assert page.locator("button:has-text('Train')").is_disabled()
        batch.fill(recommended)
        batch.press("Enter")
        page.wait_for_selector(".nbkit-gauge[data-level='ok']", timeout=30_000)
        assert page.locator("button:has-text('FP8')").is_disabled()
        shot.parent.mkdir(parents=True, exist_ok=True)
        page.locator(".jp-OutputArea-output").first.screenshot(path=str(shot))
        browser.close()
    assert shot.stat().st_size > 10_000
