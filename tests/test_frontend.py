"""nbkit.ui.frontend: which front end this is, and on Colab every widget message sent from the kernel's main thread,
checked in a real kernel while the launcher trains on its thread."""
import time

import pytest

from helpers.kernel import Kernel
from nbkit.ui import frontend

SETUP = """
import threading
from ipywidgets.widgets.widget import Widget
from nbkit import RunConfig
from nbkit.planning.hardware import GpuInfo
from nbkit.ui.launcher import Launcher

sends = []  # for every widget message: was it sent from the kernel's main thread?
real_send = Widget._send
def recording_send(self, msg, buffers=None):
    sends.append(threading.current_thread() is threading.main_thread())
    return real_send(self, msg, buffers)
Widget._send = recording_send
cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=6, lora_r=4,
                save_steps=0, max_samples=8, output_dir="run")
ui = Launcher(cfg, GpuInfo(False))
sends.clear()
ui.train()
"""


def train_in_a_kernel(tmp_path, name: str) -> str:
    tmp_path.mkdir()
    kernel = Kernel(tmp_path, env={"NBKIT_FRONTEND": name})
    try:
        assert kernel.run(SETUP, timeout=120).error is None
        deadline = time.time() + 180
        while time.time() < deadline and "True" in kernel.run("print(ui.running)").text:
            time.sleep(0.5)  # the kernel is idle between cells: its main thread sends what was handed to it
        kernel.run("pass")
        out = kernel.run("print('SENDS', len(sends), sum(sends), ui.report.train.state, ui.form.model.disabled, "
                         "'done' in ui.message.value)")
    finally:
        kernel.close()
    return out.text


@pytest.mark.slow
def test_on_colab_every_widget_message_leaves_from_the_main_thread(tmp_path, tiny_dir):
    total, on_main, state, locked, done = train_in_a_kernel(tmp_path / "colab", "colab").split("SENDS")[1].split()
    assert int(total) > 10 and on_main == total  # progress, gauge, buttons, form: all from the main thread
    assert (state, locked, done) == ("finished", "False", "True")  # and the run's end reached the widgets


@pytest.mark.slow
def test_elsewhere_updates_go_out_from_the_training_thread(tmp_path, tiny_dir):
    """The control: without the routing, the same run sends from its thread (so the Colab test can fail)."""
    total, on_main, *_ = train_in_a_kernel(tmp_path / "lab", "jupyter").split("SENDS")[1].split()
    assert int(on_main) < int(total)


def test_the_front_end_is_told_from_the_kernels_environment(monkeypatch):
    monkeypatch.delenv("NBKIT_FRONTEND", raising=False)
    for var in ("KAGGLE_KERNEL_RUN_TYPE", "VSCODE_PID", "VSCODE_CWD"):
        monkeypatch.delenv(var, raising=False)
    assert frontend.detect() == "headless" and frontend.updates_from_threads()
    monkeypatch.setenv("VSCODE_PID", "1")
    assert frontend.detect() == "vscode"
    monkeypatch.setenv("KAGGLE_KERNEL_RUN_TYPE", "Interactive")
    assert frontend.detect() == "kaggle"
    monkeypatch.setenv("NBKIT_FRONTEND", "Colab")
    assert frontend.detect() == "colab" and not frontend.updates_from_threads()
    monkeypatch.setenv("NBKIT_FRONTEND", "lab")
    with pytest.raises(ValueError, match="choose one of colab, kaggle"):
        frontend.detect()


@pytest.mark.slow
def test_on_kaggle_the_notebooks_progress_is_one_html_output_and_no_widget(tmp_path, tiny_dir):
    """Kaggle's progress widgets can stay at "Loading widget…": there the tier notebook's training cell shows its
    progress as one plain-HTML output updated in place, and sends no widget message at all."""
    from pathlib import Path

    from helpers.kernel import notebook_cells

    cells = notebook_cells(Path(__file__).resolve().parent.parent / "notebooks" / "8gb.ipynb", save_merged=False,
                           save_gguf=False)
    train = next(i for i, c in enumerate(cells) if "train.run(" in c)
    kernel = Kernel(tmp_path, env={"NBKIT_FRONTEND": "kaggle", "NBKIT_DISPLAY": "auto"})
    try:
        assert not [r.error for r in kernel.run_all(cells[:train]) if r.error]
        run = kernel.run(cells[train])
    finally:
        kernel.close()
    assert run.error is None
    assert not any(k.startswith("comm") for k in run.kinds), run.kinds  # no widget opened or updated
    shown = [o for o in run.outputs if "nbkit-progress" in o.get("data", {}).get("text/html", "")]
    assert shown and "Training finished: 60 steps" in shown[-1]["data"]["text/html"]
    assert run.kinds.get("display_data") == 1 and run.kinds.get("update_display_data", 0) >= 1
