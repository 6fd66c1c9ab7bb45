"""The widgets render in a real JupyterLab, driven by Playwright in Debian's headless Chromium.

Skipped where Chromium or Playwright is missing, except in CI (CI=true), where a missing browser is a failure:
.ci/run installs both. Screenshots go to a temporary folder; NBKIT_REFRESH_DOCS=1 writes docs/img/ instead.
"""
from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import pytest
from helpers.readme import readme_answers

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
from nbkit.planning.hardware import GpuInfo
from nbkit.ui import launch
t4 = GpuInfo(True, "Tesla T4 (simulated)", (7, 5), 15.0, 14.5, False, False, 1)
ui = launch(RunConfig(model="unsloth/Meta-Llama-3.1-8B-Instruct"), gpu=t4)"""


FLOW = ["""import nbkit
from nbkit import RunConfig
from nbkit.ui import launch
ui = launch(RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=240, lora_r=4,
                      save_steps=0, max_samples=120, learning_rate=3e-3, output_dir="run"))""",
        """from nbkit.ui import chat
c = chat(ui, max_new_tokens=24)"""]


@contextlib.contextmanager
def serve(tmp_path, cells, app="jupyterlab"):
    """A Jupyter server (JupyterLab, or Notebook 7 with app="notebook") on localhost over a notebook of `cells`;
    yields the base URL."""
    if cells is not None:  # None: serve the notebook already there (reopened after the last server stopped)
        nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "ui.ipynb")
    from nbkit.gpus.distributed import free_port

    port = free_port()
    env = {**os.environ, "NBKIT_DISPLAY": "widgets", "JUPYTER_CONFIG_DIR": str(tmp_path / "cfg"),
           "JUPYTER_RUNTIME_DIR": str(tmp_path / "rt")}
    app_args = (["--LabApp.news_url=None", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
                if app == "jupyterlab" else [])
    proc = subprocess.Popen(
        [sys.executable, "-m", app, "--no-browser", f"--port={port}", "--ip=127.0.0.1",
         "--IdentityProvider.token=", "--ServerApp.password=", "--ServerApp.disable_check_xsrf=True",
         f"--ServerApp.root_dir={tmp_path}", "--allow-root", *app_args],
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
        pytest.fail(f"{app} did not start within 90 s")
    try:
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture
def lab(tmp_path):
    with serve(tmp_path, [CELL]) as url:
        yield url


def playwright():
    """Playwright's sync API: skipped where it is not installed, a failure in CI (like a missing Chromium)."""
    if IN_CI:
        import playwright.sync_api

        return playwright.sync_api
    return pytest.importorskip("playwright.sync_api")


@contextlib.contextmanager
def browser_page(height: int = 1400, width: int = 1280):
    sync_api = playwright()
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=args)
        try:
            yield browser.new_page(viewport={"width": width, "height": height}), sync_api
        finally:
            browser.close()


def dark_theme(tmp_path) -> None:
    """JupyterLab's dark theme for the server that serve(tmp_path, ...) starts."""
    themes = tmp_path / "cfg" / "lab" / "user-settings" / "@jupyterlab" / "apputils-extension"
    themes.mkdir(parents=True, exist_ok=True)
    (themes / "themes.jupyterlab-settings").write_text('{"theme": "JupyterLab Dark"}')


def open_file_browser(page) -> None:
    if not page.locator(".jp-FileBrowser").is_visible():
        page.locator(".jp-SideBar [data-id='filebrowser']").first.click()
    assert page.locator(".jp-FileBrowser").is_visible()


# every element of nbkit's outputs that scrolls sideways, and every visible one that ends past the window
OVERFLOW = """() => {
  const out = [], ours = ".jp-OutputArea-output:has([class*='nbkit'])";
  for (const el of document.querySelectorAll(`${ours}, ${ours} *`)) {
    const style = getComputedStyle(el), box = el.getBoundingClientRect();
    if (['auto', 'scroll'].includes(style.overflowX) && el.scrollWidth > el.clientWidth + 1)
      out.push('scrolls: ' + (el.className.baseVal ?? el.className) + ' ' + el.textContent.slice(0, 40));
    if (box.width > 0 && box.right > window.innerWidth + 1)
      out.push('past the window: ' + (el.className.baseVal ?? el.className) + ' ' + el.textContent.slice(0, 40));
  }
  return out;
}"""
# widgets that still show ipywidgets' red "disconnected" icon (its ::before), visibly
CONFETTI = """() => [...document.querySelectorAll('.jupyter-widgets-disconnected')].filter(el => {
  const before = getComputedStyle(el, '::before');
  return el.getClientRects().length > 0 && before.display !== 'none' && !['none', 'normal', ''].includes(before.content);
}).length"""


def visible(page, selector: str) -> int:
    return sum(1 for i in range(page.locator(selector).count()) if page.locator(selector).nth(i).is_visible())


def luminance_of(shot: Path) -> float:
    """The mean luminance (0 black, 1 white) of a screenshot, as the user sees it."""
    from PIL import Image, ImageStat

    return ImageStat.Stat(Image.open(shot).convert("L")).mean[0] / 255


def dismiss_news(page) -> None:
    """JupyterLab asks once whether to fetch its news: answer No, so that no toast covers a screenshot."""
    toast = page.locator(".Toastify__toast:has-text('notified about official Jupyter news')")
    if toast.count():
        toast.locator("button:has-text('No')").first.click()
        page.wait_for_timeout(300)


def run_cell(page, index: int) -> None:
    """Run one cell as a person would: click into it, Shift+Enter."""
    cell = page.locator(".jp-Cell .jp-InputArea-editor").nth(index)
    cell.click()
    page.keyboard.press("Shift+Enter")


def test_launcher_renders_in_jupyterlab(lab, tmp_path, shots):
    shot = shots / "launcher.png"
    with browser_page(height=1000) as (page, sync_api):
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
        page.locator(".jp-OutputArea-output:has(.nbkit-gauge)").first.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000


def test_whole_flow_in_jupyterlab(tmp_path, shots):
    """Pick the data and see the masked preview, press Train and watch the step counter and the loss curve,
    read the summary, export the adapters, then chat with the result: all in the browser, on the tiny model."""
    with serve(tmp_path, FLOW) as url, browser_page(height=2000) as (page, sync_api):
        page.goto(f"{url}/lab/tree/ui.ipynb")
        page.wait_for_selector(".jp-StatusBar-Item:has-text('Idle')", timeout=90_000)
        run_cell(page, 0)
        page.wait_for_selector("button:has-text('Preview')", timeout=90_000)
        assert page.locator("text=120 rows, alpaca format").count() == 1  # the embedded set, checked
        page.locator("button:has-text('Preview')").click()
        page.wait_for_selector(".nbkit-tok.trained", timeout=60_000)
        assert page.locator(".nbkit-tok.masked").count() > 0 and page.locator(".nbkit-tok.trained").count() > 0
        launcher = page.locator(".jp-OutputArea-output:has(button:has-text('Resume'))")
        page.locator("button.jupyter-button:has-text('Train')").first.click()

        def step() -> int:
            found = re.search(r"step (\d+)/240", launcher.inner_text())
            return int(found.group(1)) if found else 0

        seen = []
        deadline = time.time() + 900  # minutes on a busy machine; seconds on an idle one
        while time.time() < deadline and (not seen or seen[-1] < 240):
            seen.append(step())
            time.sleep(0.2)
        counting = sorted(set(seen))
        if not (len(counting) >= 3 and counting[-1] == 240):
            page.screenshot(path=str(tmp_path / "failed.png"))
            pytest.fail(f"the step counter did not advance: {counting}; "
                        f"{launcher.inner_text()[-1500:]}")
        page.wait_for_selector("text=Training finished: 240 steps", timeout=60_000)
        page.wait_for_selector("text=nbkit run finished", timeout=60_000)
        curve = page.locator(".nbkit-result img[alt='loss curve']").first
        assert curve.evaluate("img => img.naturalWidth") > 100  # the loss curve was drawn
        dismiss_news(page)
        page.locator(".jp-Cell").nth(0).locator(".jp-OutputArea").screenshot(path=str(shots / "progress.png"))
        page.locator("button:has-text('LoRA adapters')").click()
        page.wait_for_selector("text=LoRA adapters saved:", timeout=60_000)
        assert (tmp_path / "run" / "lora_adapters" / "adapter_model.safetensors").exists()
        run_cell(page, 1)
        box = page.wait_for_selector("textarea[placeholder^='Ask the model']", timeout=60_000)
        box.fill("What is the capital of France?")
        page.locator("button:has-text('Send')").click()
        page.wait_for_function("() => [...document.querySelectorAll('.nbkit-chat-answer')]"
                               ".some(e => e.textContent.trim().length > 0)", timeout=60_000)
        page.wait_for_selector("button:has-text('Send'):not([disabled])", timeout=60_000)  # the answer is whole
        page.wait_for_timeout(500)
        page.locator(".jp-Cell").nth(1).locator(".jp-OutputArea").screenshot(path=str(shots / "chat.png"))
    assert (shots / "progress.png").stat().st_size > 10_000 and (shots / "chat.png").stat().st_size > 3_000


def test_widgets_render_in_notebook7(tmp_path, shots):
    """The classic-style UI (Notebook 7) renders the same widgets: no "Loading widget" left."""
    with serve(tmp_path, [CELL], app="notebook") as url, browser_page() as (page, sync_api):
        page.goto(f"{url}/notebooks/ui.ipynb")
        page.wait_for_selector(".jp-Cell .jp-InputArea-editor", timeout=90_000)
        page.wait_for_timeout(3000)  # the kernel connects
        gauge = None
        for _attempt in range(3):
            run_cell(page, 0)
            try:
                gauge = page.wait_for_selector(".nbkit-gauge", timeout=40_000)
                break
            except sync_api.TimeoutError:
                continue
        assert gauge is not None, page.inner_text("body")[-1500:]
        assert "/ 15.0 GiB" in gauge.inner_text() and page.locator("text=Loading widget").count() == 0
        assert page.locator("button:has-text('Train')").count() >= 1


REOPEN = ["""from nbkit import RunConfig
from nbkit.ui import launch
ui = launch(RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=20, lora_r=4,
                      save_steps=0, max_samples=16, output_dir="run"))
ui.train(wait=True)""", """from nbkit.ui import chat
c = chat(ui, max_new_tokens=12)
c.ask("What is the capital of France?", wait=True)"""]
PAGES = {"jupyterlab": "lab/tree/ui.ipynb", "notebook": "notebooks/ui.ipynb"}


@pytest.mark.parametrize("app", ["jupyterlab", "notebook"])
def test_a_saved_notebook_reopened_after_its_kernel_stopped_shows_the_run(tmp_path, shots, app):
    """Run the launcher and a chat, save, stop the server and its kernel, open the notebook again: the run's
    plain-HTML result and the chat's transcript stand; the restored controls are hidden, one line each says how to
    bring them back, and no red "disconnected" icon is left over them. While the kernel lived, each thing showed
    once."""
    with serve(tmp_path, REOPEN, app=app) as url, browser_page() as (page, sync_api):
        page.goto(f"{url}/{PAGES[app]}")
        page.wait_for_selector(".jp-Cell .jp-InputArea-editor", timeout=90_000)
        page.wait_for_timeout(3000)  # the kernel connects
        for _attempt in range(3):
            run_cell(page, 0)
            try:
                page.wait_for_selector("text=nbkit run finished", timeout=120_000)
                break
            except sync_api.TimeoutError:
                continue
        run_cell(page, 1)
        page.wait_for_selector(".nbkit-chat-turn .nbkit-chat-answer", timeout=120_000)
        page.wait_for_timeout(1000)
        live = page.inner_text("body")
        # each thing once while the kernel lives: the report, the answers, the curve, the chat's turn
        assert live.count("answer after:") == 1 and live.count("After:") == 1, live[-3000:]
        assert visible(page, "img[alt='loss curve']") == 1 and visible(page, ".nbkit-chat-turn") == 1
        assert page.locator("button:has-text('Train')").first.is_visible()
        page.keyboard.press("Control+s")
        deadline = time.time() + 30
        while time.time() < deadline and "nbkit-chat-answer" not in (tmp_path / "ui.ipynb").read_text():
            time.sleep(0.5)
    saved = nbformat.read(tmp_path / "ui.ipynb", as_version=4)
    assert saved.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"], "no widget state saved"
    with serve(tmp_path, None, app=app) as url, browser_page() as (page, sync_api):
        page.goto(f"{url}/{PAGES[app]}")
        page.wait_for_selector("text=nbkit run finished", timeout=90_000)
        page.wait_for_selector("text=Run this cell again to bring them back", timeout=60_000)
        page.wait_for_timeout(2000)
        body = page.inner_text("body")
        assert "Error displaying widget" not in body and "Loading widget" not in body
        assert "20 steps in" in body and visible(page, ".nbkit-chat-turn") == 1  # the result and the transcript
        assert body.count("Run this cell again to bring them back") == 2  # the launcher's line and the chat's
        for label in ("Train", "Resume", "Stop", "Send", "LoRA adapters"):  # the dead controls are not offered
            assert visible(page, f"button:has-text('{label}')") == 0, label
        assert page.evaluate(CONFETTI) == 0
        page.screenshot(path=str(shots / f"reopened-{app}.png") if shots != DOCS_IMG else str(tmp_path / "r.png"))


NARROW = [CELL.replace('RunConfig(model="unsloth/Meta-Llama-3.1-8B-Instruct")', "RunConfig()"),
          """from nbkit import RunConfig, workflow
from nbkit.ui import chat
report = workflow.run(RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2,
                                lora_r=4, save_steps=0, max_samples=8, output_dir="run"))
c = chat(report.loaded, max_new_tokens=8)"""]
CONTRAST = """(el) => {
  const rgb = (s) => (s.match(/[0-9.]+/g) || []).slice(0, 3).map(Number);
  const lum = ([r, g, b]) => { const f = (c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; };
                               return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
  const bgOf = (node) => { for (let n = node; n; n = n.parentElement) { const c = getComputedStyle(n).backgroundColor;
                           if (c && !c.endsWith(', 0)') && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
  const fg = el.__fg === 'border' ? getComputedStyle(el).borderLeftColor : getComputedStyle(el).color;
  const bg = bgOf(el.__fg === 'border' ? el.parentElement : el);
  const [a, b] = [lum(rgb(fg)), lum(rgb(bg))].sort((x, y) => y - x);
  return (a + 0.05) / (b + 0.05);
}"""


def test_narrow_window_and_dark_theme(tmp_path, shots):
    """800 px wide with the file browser open, in JupyterLab's dark theme: no row of the launcher or the chat scrolls
    sideways or ends past the window (the Quantization label whole, FP8, Upload and Preview in view); the preview's
    tokens and the limit line stand out from their background (WCAG contrast)."""
    dark_theme(tmp_path)
    with serve(tmp_path, NARROW) as url, browser_page(height=1600, width=800) as (page, sync_api):
        page.goto(f"{url}/lab/tree/ui.ipynb")
        page.wait_for_selector(".jp-StatusBar-Item:has-text('Idle')", timeout=90_000)
        open_file_browser(page)
        assert page.locator("body[data-jp-theme-light='false']").count() == 1  # the dark theme is on
        run_cell(page, 0)
        page.wait_for_selector(".nbkit-gauge", timeout=90_000)
        run_cell(page, 1)
        page.wait_for_selector("button:has-text('Clear')", timeout=120_000)
        page.locator("button:has-text('Preview')").first.click()
        page.wait_for_selector(".nbkit-tok.trained", timeout=60_000)
        inside = {}
        for name, selector in [("Send", "button:has-text('Send')"), ("Clear", "button:has-text('Clear')"),
                               ("Preview", "button:has-text('Preview')"), ("FP8", "button:has-text('FP8')"),
                               ("Upload", ".widget-upload"), ("Train", "button.jupyter-button:has-text('Train')"),
                               ("GGUF export", "button:has-text('GGUF (q8_0)')"),
                               ("limit line", ".nbkit-gauge div[title^='this GPU']"),
                               ("chat box", "textarea[placeholder^='Ask the model']")]:
            element = page.locator(selector).first
            element.scroll_into_view_if_needed()
            box = element.bounding_box()
            inside[name] = box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 800
        label = page.locator(".widget-label:text-is('Quantization')").first
        assert label.evaluate("el => el.scrollWidth <= el.clientWidth"), "the Quantization label is cut"
        overflowing = page.evaluate(OVERFLOW)
        page.screenshot(path=str(tmp_path / "narrow-dark.png"), full_page=True)
        token = page.locator(".nbkit-tok.trained").first.evaluate(CONTRAST)
        line = page.locator(".nbkit-gauge div[title^='this GPU']").first.evaluate(
            "(el) => { el.__fg = 'border'; return (" + CONTRAST + ")(el); }")
    assert all(inside.values()), f"outside the 800 px window: {[k for k, ok in inside.items() if not ok]}"
    assert not overflowing, overflowing
    assert token >= 4.5, f"preview token contrast {token:.2f}"
    assert line >= 3.0, f"gauge limit line contrast {line:.2f}"


DEFAULT_RUN = ["from nbkit.ui import launch\nui = launch()", "from nbkit.ui import chat\nc = chat(ui)"]


def test_the_default_run_teaches_what_the_readme_says_and_chat_follows_the_launcher(tmp_path, shots):
    """As a workshop attendee meets it, 800 px wide with the file browser open, dark theme: Run All before training
    (the chat cell says what to do, no error), the launcher's defaults (16-bit for the tiny model, said why), Train:
    the answer after training is the README's; the curve is not a white box; the Chat button and the chat cell run
    again answer with the launcher's model. Said once each: the no-GPU notice, the report; Stop is not orange while it
    cannot act, and Resume is not offered before there is a run to resume."""
    before, after = readme_answers()
    dark_theme(tmp_path)
    with serve(tmp_path, DEFAULT_RUN) as url, browser_page(height=1800, width=800) as (page, sync_api):
        page.goto(f"{url}/lab/tree/ui.ipynb")
        page.wait_for_selector(".jp-StatusBar-Item:has-text('Idle')", timeout=90_000)
        open_file_browser(page)
        run_cell(page, 0)
        run_cell(page, 1)  # Run All: the chat cell right after the launcher, before any run
        page.wait_for_selector("text=Train in the launcher above first, then run this cell again.", timeout=120_000)
        assert page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr']").count() == 0
        assert "Traceback" not in page.inner_text("body")
        assert "trains in 16-bit" in page.locator(".nbkit-live").first.inner_text()  # the plan says why
        body = page.inner_text("body")
        assert body.count("No CUDA GPU") == 1, body[:2000]
        stop, resume = page.locator("button:has-text('Stop')").first, page.locator("button:has-text('Resume')").first
        assert stop.is_disabled() and "mod-warning" not in stop.get_attribute("class")
        assert resume.is_disabled()  # a fresh launcher: nothing to resume
        assert not page.evaluate(OVERFLOW), page.evaluate(OVERFLOW)
        page.locator("button.jupyter-button:has-text('Train')").first.click()
        try:  # the default run: 60 steps of 8 rows (seconds on an idle 2-core machine, minutes on a busy one)
            page.wait_for_selector("text=nbkit run finished", timeout=900_000)
        except sync_api.TimeoutError:
            pytest.fail(f"the default run did not finish: {page.locator('.nbkit-live').first.inner_text()[-1500:]}")
        shown_after = page.locator(".nbkit-result .nbkit-after").first.inner_text()
        text = page.inner_text("body")
        assert shown_after == after and f"answer before: {before}" in text, text[-3000:]
        assert text.count("answer after:") == 1 and visible(page, "img[alt='loss curve']") == 1
        assert stop.is_disabled() and "mod-warning" not in stop.get_attribute("class")
        assert resume.is_disabled()  # finished: nothing to resume
        curve = page.locator(".nbkit-result img[alt='loss curve']").first
        curve.scroll_into_view_if_needed()
        curve.screenshot(path=str(tmp_path / "curve.png"))
        assert luminance_of(tmp_path / "curve.png") < 0.4, "the loss curve is a light box on the dark theme"
        assert not page.evaluate(OVERFLOW), page.evaluate(OVERFLOW)
        page.locator("button:has-text('Chat')").first.click()  # the launcher's own chat, under its result
        box = page.wait_for_selector("textarea[placeholder^='Ask the model']", timeout=60_000)
        box.fill("What is the capital of France?")
        box.press("Enter")
        page.wait_for_function("() => [...document.querySelectorAll('.nbkit-chat-answer')]"
                               ".some(e => e.textContent.includes('Paris'))", timeout=120_000)
        assert page.locator(".nbkit-chat-answer").first.inner_text().startswith("Ahoy!")
        run_cell(page, 1)  # the chat cell again: now it chats with the launcher's model
        page.wait_for_function("() => document.querySelectorAll(\"textarea[placeholder^='Ask the model']\")"
                               ".length == 2", timeout=120_000)
        assert "Train in the launcher above first" not in page.inner_text("body")
        page.screenshot(path=str(tmp_path / "default-run.png"), full_page=True)


RERUN = ["""from nbkit import RunConfig
from nbkit.ui import launch
ui = launch(RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=240, lora_r=4,
                      save_steps=0, max_samples=120, learning_rate=3e-3))"""]


def test_rerun_the_launcher_cell_stop_resume_and_train_again(tmp_path, shots):
    """Run the launcher cell twice while idle, then again while it trains (the same launcher comes back, its run
    goes on); Stop says "stopped", Resume finishes with the same numbers in the summary and the report; Train once
    more starts a second run in a folder of its own."""
    with serve(tmp_path, RERUN) as url, browser_page() as (page, sync_api):
        page.goto(f"{url}/lab/tree/ui.ipynb")
        page.wait_for_selector(".jp-StatusBar-Item:has-text('Idle')", timeout=90_000)
        for _ in range(2):  # idle: run the cell again
            run_cell(page, 0)
            page.wait_for_selector("button:has-text('Resume')", timeout=90_000)
            page.wait_for_timeout(1500)
        assert page.locator("button:has-text('Resume')").count() == 1
        assert page.locator("button:has-text('Resume')").first.is_disabled()  # nothing to resume yet
        launcher = page.locator(".jp-OutputArea-output:has(button:has-text('Resume'))").first

        def step() -> int:
            found = re.findall(r"step (\d+)/240", launcher.inner_text())
            return int(found[-1]) if found else 0

        page.locator("button.jupyter-button:has-text('Train')").first.click()
        deadline = time.time() + 120
        while time.time() < deadline and step() < 5:
            time.sleep(0.2)
        run_cell(page, 0)  # mid-run
        page.wait_for_selector("text=still training: shown here again", timeout=60_000)
        launcher = page.locator(".jp-OutputArea-output:has(button:has-text('Resume'))").first
        before = step()
        page.wait_for_timeout(1500)
        assert step() > before, "the re-attached launcher does not show the run going on"
        page.locator("button:has-text('Stop')").first.click()
        stopped = page.wait_for_selector("text=/Training stopped at step \\d+\\/240/", timeout=60_000).inner_text()
        assert "finished" not in stopped
        page.wait_for_selector("button:has-text('Resume'):not([disabled])", timeout=30_000)  # now there is
        page.locator("button:has-text('Resume')").first.click()
        page.wait_for_selector("text=Training finished: 240 steps", timeout=600_000)
        page.wait_for_selector("text=nbkit run finished", timeout=60_000)
        text = page.locator(".jp-Cell").nth(0).locator(".jp-OutputArea").inner_text()  # the widget and the result
        shown = re.search(r"Training finished: 240 steps .*?loss ([\d.]+) → ([\d.]+)", text)
        reported = re.search(r"train: 240 steps in [\d.]+ s, loss ([\d.]+) → ([\d.]+)", text)
        assert shown and reported, text[-2000:]
        # the same numbers: shown to 4 decimals, reported to 3 (rounding 0.0035 twice is not a difference)
        assert all(abs(float(a) - float(b)) <= 0.0005 + 1e-9 for a, b in zip(shown.groups(), reported.groups()))
        page.locator("button.jupyter-button:has-text('Train')").first.click()
        # the second run's result lists the kernel's three runs: stopped, resumed, and this one
        page.wait_for_function("() => document.querySelectorAll('.nbkit-runs tr').length == 4", timeout=600_000)
        run_cell(page, 0)  # the cell once more, idle: the last run's result stays under it, and the kernel's runs
        page.wait_for_selector("text=nbkit run finished", timeout=60_000)
        page.wait_for_timeout(1500)
        assert page.locator(".nbkit-runs tr").count() == 4  # a header, then stopped, resumed and the second run
    runs = sorted((tmp_path / "outputs").iterdir())
    assert len(runs) == 2 and all((r / "nbkit_run.json").exists() for r in runs)


def test_chat_sends_on_enter_and_shift_enter_starts_a_new_line(tmp_path):
    with serve(tmp_path, NARROW[1:]) as url, browser_page() as (page, sync_api):
        page.goto(f"{url}/lab/tree/ui.ipynb")
        page.wait_for_selector(".jp-StatusBar-Item:has-text('Idle')", timeout=90_000)
        run_cell(page, 0)
        box = page.wait_for_selector("textarea[placeholder^='Ask the model']", timeout=120_000)
        page.wait_for_timeout(1000)
        box.click()
        page.keyboard.type("first line")
        page.keyboard.press("Shift+Enter")
        page.keyboard.type("second line")
        page.wait_for_timeout(500)
        assert page.locator(".nbkit-chat-turn").count() == 0  # Shift+Enter: a new line, nothing sent
        assert box.input_value() == "first line\nsecond line"
        page.keyboard.press("Enter")
        page.wait_for_selector(".nbkit-chat-turn", timeout=60_000)
        turn = page.locator(".nbkit-chat-turn").first
        page.wait_for_function("() => document.querySelectorAll('.nbkit-chat-answer').length >= 1", timeout=60_000)
        assert "first line\nsecond line" in turn.inner_text()  # the prompt's line break kept
        page.wait_for_timeout(1500)
        assert box.input_value() == ""  # sent and cleared
        box.click()
        page.keyboard.type("again")
        page.keyboard.press("Enter")
        page.wait_for_function("() => document.querySelectorAll('.nbkit-chat-turn').length == 2", timeout=60_000)


def test_the_push_button_in_jupyterlab(tmp_path, shots, monkeypatch):
    """The launcher's Push row in the browser, against a local stand-in for the Hub (helpers/fake_hub.py): disabled
    until a repo id is typed, busy while pushing, then the repos as links; a read-only token is one line in red."""
    import secrets

    from helpers.fake_hub import FakeHub
    from nbkit import RunConfig

    token = "hf_" + secrets.token_hex(16)
    RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
              save_steps=0, max_samples=8, output_dir="run").save(tmp_path / "run.yaml")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "NBKIT_DISPLAY": "text"}
    subprocess.run([sys.executable, "-m", "nbkit", "train", "--config", "run.yaml"], cwd=tmp_path, env=env,
                   check=True, capture_output=True, timeout=600)
    cell = ("from nbkit import RunConfig\nfrom nbkit.planning.hardware import GpuInfo\nfrom nbkit.ui import launch\n"
            "ui = launch(RunConfig(output_dir='run'), gpu=GpuInfo(False))")
    with FakeHub(token) as hub:
        for key, value in {"HF_TOKEN": token, "HF_ENDPOINT": hub.url, "HF_HUB_OFFLINE": "0",
                           "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(tmp_path / "hf-home")}.items():
            monkeypatch.setenv(key, value)
        with serve(tmp_path, [cell]) as url, browser_page() as (page, sync_api):
            page.goto(f"{url}/lab/tree/ui.ipynb")
            page.wait_for_selector(".jp-StatusBar-Item:has-text('Idle')", timeout=90_000)
            run_cell(page, 0)
            push = page.locator("button.jupyter-button:has-text('Push')")
            push.wait_for(timeout=120_000)
            assert push.is_disabled()  # a saved run, but no repo id yet
            page.locator("input[placeholder='your-name/model-name']").fill("alice/from-the-browser")
            page.keyboard.press("Tab")
            page.wait_for_function("() => [...document.querySelectorAll('button.jupyter-button')]"
                                   ".some(b => b.textContent.trim() === 'Push' && !b.disabled)", timeout=30_000)
            push.click()
            page.wait_for_selector("text=Pushed:", timeout=120_000)
            assert page.locator("a:has-text('alice/from-the-browser')").count() == 1
            assert "adapter_model.safetensors" in hub.files("alice/from-the-browser")
            dismiss_news(page)
            page.locator(".jp-OutputArea-output:has(button:has-text('Push'))").screenshot(path=str(shots / "push.png"))
            hub.role = "read"
            push.click()
            page.wait_for_selector("text=read-only", timeout=60_000)
    assert token not in (tmp_path / "ui.ipynb").read_text()
