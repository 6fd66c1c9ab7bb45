from pathlib import Path

import pytest

from nbkit import RunConfig
from nbkit.planning.hardware import GpuInfo
from nbkit.ui.form import ConfigForm, quantization_availability
from nbkit.ui.gauge import MemoryGauge, verdict
from nbkit.ui.launcher import Launcher

LLAMA_8B = "unsloth/Meta-Llama-3.1-8B-Instruct"
CPU = GpuInfo(available=False)


def test_form_produces_a_validated_config():
    form = ConfigForm(RunConfig(model=LLAMA_8B), CPU)
    seen = []
    form.observe_config(seen.append)
    form.lora_r.value = 32
    form.max_seq_length.value = 4096
    assert form.config.lora_r == 32 and form.config.max_seq_length == 4096 and seen[-1] is form.config
    form.batch_size.value = 0
    assert form.config is None and seen[-1] is None
    assert "batch_size=0 is invalid" in form.error.value
    form.batch_size.value = 2
    assert form.config.batch_size == 2 and form.error.value == ""
    assert form.config.packing == "auto"
    form.packing.value = "off"  # under Advanced
    assert form.config.packing == "off"


def test_fp8_is_disabled_with_its_reason(fake_gpu):
    form = ConfigForm(RunConfig(), fake_gpu(15.0, (7, 5)))
    button = form.quantization.buttons["fp8"]
    assert button.disabled and "Tesla T4 is 7.5" in button.tooltip and "Ada/Hopper" in form.quantization.note.value
    assert not form.quantization.buttons["16bit"].disabled
    assert quantization_availability(CPU)["fp8"].startswith("FP8 needs an NVIDIA GPU")
    assert quantization_availability(fake_gpu(80.0, (9, 0)))["fp8"] is None


def test_quantization_buttons_act_as_one_choice():
    form = ConfigForm(RunConfig(quantization="4bit"), CPU)
    form.quantization.buttons["16bit"].value = True  # the user clicks 16-bit
    assert form.quantization.value == "16bit" and form.config.quantization == "16bit"
    assert {q: b.value for q, b in form.quantization.buttons.items()} == {"4bit": False, "16bit": True, "fp8": False}
    form.quantization.buttons["16bit"].value = False  # clicking the chosen one again keeps it
    assert form.quantization.buttons["16bit"].value is True


def test_gauge_follows_the_form(fake_gpu):
    gpu = fake_gpu(15.0)
    form = ConfigForm(RunConfig(model=LLAMA_8B, quantization="4bit", batch_size=1, max_seq_length=1024), gpu)
    gauge = MemoryGauge(gpu, backend="unsloth")
    form.observe_config(gauge.update)
    gauge.update(form.config)
    assert gauge.level == "ok" and "fits" in gauge.bar.value and "data-level='ok'" in gauge.bar.value
    small = gauge.breakdown.total
    form.quantization.buttons["16bit"].value = True
    assert gauge.level == "over" and "will not fit" in gauge.bar.value and gauge.breakdown.total > small
    for part in ("weights", "LoRA + optimizer", "activations", "overhead"):
        assert part in gauge.detail.value
    form.lora_alpha.value = -1
    assert gauge.level == "none" and "Fix the form" in gauge.bar.value


def test_gauge_shows_each_gpu_of_a_sharded_run(fake_gpu):
    """A 70B does not fit one 40 GB card; sharded across two it does: the gauge predicts per GPU, as the run is."""
    from nbkit.planning.memory import estimate
    from nbkit.specs import spec_for

    gpu = fake_gpu(40.0)
    cfg = RunConfig(model="unsloth/Llama-3.3-70B-Instruct-bnb-4bit", quantization="4bit", batch_size=1,
                    max_seq_length=2048, parallelism="fsdp")
    one = MemoryGauge(gpu, backend="unsloth")
    one.update(cfg.replace(parallelism="ddp"))
    assert one.level == "over"
    two = MemoryGauge(gpu, backend="unsloth", processes=2)
    two.update(cfg)
    assert two.level != "over" and "each of 2 GPUs (sharded)" in two.detail.value
    assert two.breakdown == estimate(cfg, spec_for(cfg.model), "transformers", processes=2)


def test_gauge_on_cpu_and_unknown_model():
    gauge = MemoryGauge(CPU)
    gauge.update(RunConfig(model=LLAMA_8B))
    assert "Predicted peak VRAM on a GPU" in gauge.bar.value and gauge.breakdown is not None
    assert "no CUDA GPU" not in gauge.bar.value  # the launcher's first line says that, once
    gauge.update(RunConfig(model="nobody/no-such-model"))
    gauge.settled(timeout=60)  # looked up on a thread (the form does not wait: see the test after next)
    assert "was not found" in gauge.bar.value
    gauge.start_live(interval=0.25)
    gauge.stop_live()
    assert gauge.live.value == ""  # no GPU: no live line repeating it


@pytest.mark.parametrize("used, level", [(10.0, "ok"), (14.0, "tight"), (16.0, "over")])
def test_verdict_levels(used, level):
    assert verdict(used, 15.0)[0] == level


def test_launcher_prefills_and_blocks_what_cannot_fit(fake_gpu):
    ui = Launcher(RunConfig(model=LLAMA_8B), gpu=fake_gpu(15.0))
    assert ui.form.config.quantization == "4bit" and "Recommended" in ui.status.value
    assert ui.gauge.level == "ok" and not ui.train_button.disabled
    ui.form.batch_size.value = 64
    assert ui.gauge.level == "over" and ui.train_button.disabled


def test_launcher_trains_the_tiny_model(tmp_path):
    cfg = RunConfig(quantization="16bit", max_seq_length=96, batch_size=2, grad_accum=1, max_steps=3, save_steps=0,
                    max_samples=12, output_dir=str(tmp_path))
    ui = Launcher(cfg, gpu=CPU)
    ui.train_button.click()  # starts training on a thread and returns
    ui.runner.wait(timeout=120)
    assert ui.report is not None and ui.report.train.steps == 3 and ui.report.verify.ok
    assert (tmp_path / "lora_adapters" / "adapter_model.safetensors").exists()


def test_launcher_trains_without_blocking_and_stops_and_resumes(tmp_path, tiny_dir):
    """Train runs on a thread: the Stop button works while it trains, and Resume continues the run."""
    import time

    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=40, lora_r=4,
                    save_steps=0, max_samples=40, output_dir=str(tmp_path / "run"))
    ui = Launcher(cfg, CPU)
    thread = ui.train()
    assert thread.is_alive() and ui.train_button.disabled and not ui.stop_button.disabled  # returned at once
    deadline = time.time() + 120
    while ui.progress_view.bar.value < 2 and time.time() < deadline:  # the bar moves while we wait here
        time.sleep(0.05)
    ui.stop_button.click()
    thread.join(timeout=120)
    assert ui.error is None and ui.report.train.stopped and 2 <= ui.report.train.steps < 40
    assert "press Resume" in ui.message.value and not ui.resume_button.disabled
    stopped_at = ui.report.train.steps
    assert (tmp_path / "run" / f"checkpoint-{stopped_at}").is_dir()
    ui.train(resume=True, wait=True)
    assert ui.error is None and ui.report.train.steps == 40 and not ui.report.train.stopped
    assert ui.report.train.resumed_from.endswith(f"checkpoint-{stopped_at}")
    assert "Phase: done" in ui.gauge.phase.value and ui.progress_view.bar.value == 40


def test_data_in_the_form_with_a_masked_preview(tmp_path, tiny_dir, monkeypatch):
    """The form takes the data too: checked inline, and previewed as the model sees it, answer tokens apart from
    the masked prompt."""
    from nbkit.planning.config import DEFAULT_DATASET

    monkeypatch.chdir(tmp_path)
    form = ConfigForm(RunConfig(), CPU)
    assert form.data.value == DEFAULT_DATASET and form.config.dataset == DEFAULT_DATASET
    form.data.source.value = str(tmp_path / "missing.jsonl")
    assert "does not exist" in form.data.status.value and form.config.dataset.endswith("missing.jsonl")
    (tmp_path / "d.jsonl").write_text('{"question": "q", "answer": "a"}\n')
    form.data.source.value = str(tmp_path / "d.jsonl")
    assert "question -&gt; instruction" in form.data.status.value  # the fix, inline
    # an upload lands in a local file and becomes the source
    form.data.upload.value = ({"name": "mine.jsonl", "content": b'{"instruction": "Say hi.", "output": "Hi there."}\n',
                               "type": "", "size": 0,
                                "last_modified": __import__("datetime").datetime.now()},)
    assert form.data.value.endswith("nbkit-uploads/mine.jsonl") and "1 rows, alpaca format" in form.data.status.value
    form.data.preview_button.click()
    html = form.data.preview.value
    trained = "".join(t for t in __import__("re").findall(r"class='nbkit-tok trained'[^>]*>([^<]*)<", html))
    masked = "".join(t for t in __import__("re").findall(r"class='nbkit-tok masked'[^>]*>([^<]*)<", html))
    assert trained.replace("▁", " ").strip().startswith("Hi there.")
    assert "Say hi." in masked.replace("▁", " ") and "user" in masked


def test_essentials_first_the_rest_under_advanced():
    form = ConfigForm(RunConfig(), CPU)
    top = form.children
    assert top[0] is form.model and form.data in top and form.max_steps in top and form.batch_size in top
    folded = form.advanced.children[0].children
    assert {form.lora_alpha, form.grad_accum, form.learning_rate, form.max_seq_length} <= set(folded)
    assert form.advanced.selected_index is None  # closed until opened


def test_gauge_names_its_colours_and_the_limit(fake_gpu):
    gauge = MemoryGauge(fake_gpu(15.0), backend="unsloth")
    gauge.update(RunConfig(model=LLAMA_8B, quantization="4bit", batch_size=1, max_seq_length=1024))
    for part in ("weights", "LoRA + optimizer", "activations", "overhead"):
        assert f"</span> {part} " in gauge.bar.value
    assert "this GPU's limit 15.0 GiB" in gauge.bar.value


def test_launcher_exports_with_the_notebooks_functions(tmp_path, tiny_dir):
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=3, lora_r=4,
                    save_steps=0, max_samples=12, output_dir=str(tmp_path / "run"))
    ui = Launcher(cfg, CPU)
    assert all(b.disabled for b in ui.export_buttons.values())  # nothing to export before training
    ui.train(wait=True)
    assert not any(b.disabled for b in ui.export_buttons.values())
    ui.export("merged", wait=True)
    assert "merged 16-bit saved:" in ui.export_status.value and "model.safetensors" in ui.export_status.value
    assert (tmp_path / "run" / "merged_16bit" / "model.safetensors").exists()
    ui.export("gguf", wait=True)
    assert "GGUF (q8_0) saved:" in ui.export_status.value and "Modelfile" in ui.export_status.value


def test_colab_gets_its_custom_widget_manager(monkeypatch):
    """ipywidgets 8 in Colab needs `output.enable_custom_widget_manager()`: nbkit calls it when it runs there."""
    import sys
    import types

    from nbkit.ui.display import WidgetDisplay, enable_colab_widgets

    assert enable_colab_widgets() is False  # not in Colab here
    calls = []
    colab = types.ModuleType("google.colab")
    colab.output = types.SimpleNamespace(enable_custom_widget_manager=lambda: calls.append(1))
    monkeypatch.setitem(sys.modules, "google", types.ModuleType("google"))
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    WidgetDisplay()
    assert calls == [1]


def test_launcher_trains_twice_into_fresh_folders_and_exports_an_earlier_kernels_run(tmp_path, tiny_dir,
                                                                                     monkeypatch):
    """Train after a finished run (the folder nbkit chose) starts a new run in a new folder; the finished one is
    left as it was. A launcher of a later kernel exports that run from its folder, without training."""
    import json

    from helpers.kernel import tree_digest

    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=2, lora_r=4,
                    save_steps=0, max_samples=8)  # output_dir left to nbkit
    ui = Launcher(cfg, CPU)
    ui.train(wait=True)
    first = Path(ui.report.config.output_dir)
    assert ui.error is None and json.loads((first / "nbkit_run.json").read_text())["status"] == "finished"
    done = tree_digest(first)
    ui.form.max_steps.value = 3
    ui.train(wait=True)
    second = Path(ui.report.config.output_dir)
    assert ui.error is None and second != first and ui.report.train.steps == 3
    assert tree_digest(first) == done
    from nbkit.ui.session_runs import KERNEL_RUNS

    table = ui.result_html()  # the kernel's runs side by side (these two last), their curves on one plot
    assert [Path(r.config.output_dir) for r in KERNEL_RUNS[-2:]] == [first, second]
    assert table.count("<tr><td>") == len(KERNEL_RUNS) and first.name in table and second.name in table and "finished 3/3" in table
    assert "alt='loss curves'" in table
    later = Launcher(RunConfig(**{**cfg.to_dict(), "output_dir": str(first)}), CPU)  # as in a new kernel
    assert not any(b.disabled for b in later.export_buttons.values())
    later.export("merged", wait=True)
    assert "merged 16-bit saved:" in later.export_status.value
    assert json.loads((first / "nbkit_run.json").read_text())["exported"]["merged"]["step"] == 2


def test_launch_and_chat_stay_functions_however_the_ui_is_imported():
    import nbkit.ui.chatbox  # noqa: F401  (what the first call imports)
    import nbkit.ui.launcher  # noqa: F401
    from nbkit.ui import chat, launch

    assert callable(launch) and callable(chat) and type(launch).__name__ == type(chat).__name__ == "function"


def test_a_rerun_launcher_cell_shows_the_running_launcher_and_the_form_is_locked_while_it_trains(tmp_path, tiny_dir):
    """Run the launcher cell again while its run trains: the same launcher (its Stop button, its progress) comes
    back instead of a new one beside an orphaned run; the form cannot change under the run, and unlocks after."""
    import time

    from nbkit.ui import launcher

    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=400, lora_r=4,
                    save_steps=0, max_samples=16, output_dir=str(tmp_path / "run"))
    ui = launcher.launch(cfg, CPU)
    ui.train()
    deadline = time.time() + 60
    while time.time() < deadline and not (tmp_path / "run" / "nbkit_run.json").exists():
        time.sleep(0.05)
    assert ui.running and ui.form.model.disabled and ui.form.max_steps.disabled and ui.form.data.source.disabled
    again = launcher.launch(cfg, CPU)
    assert again is ui and "still training: shown here again" in ui.message.value
    ui.runner.stop("test")
    ui.runner.wait(timeout=120)
    assert not ui.running and not ui.form.model.disabled and not ui.form.max_steps.disabled
    assert ui.report.train.state == "stopped" and launcher.launch(cfg.replace(output_dir=str(tmp_path / "b")), CPU) is not ui


def test_views_fit_narrow_cells_and_dark_themes(fake_gpu):
    """Widths follow the cell up to 520 px; the preview's tokens keep dark text on their pale backgrounds and the
    gauge's limit line takes the theme's text colour (a dark theme showed neither)."""
    from nbkit.ui.data_panel import tokens_html

    form = ConfigForm(RunConfig(), CPU)
    assert (form.model.layout.width, form.model.layout.max_width) == ("auto", "520px")  # the cell, less margins
    html = tokens_html([[("Hi", True), ("user", False)]])
    assert html.count("color:#111") == 4  # the legend's two swatches and both tokens
    gauge = MemoryGauge(fake_gpu(15.0), backend="unsloth")
    gauge.update(RunConfig(model=LLAMA_8B, quantization="4bit", batch_size=1, max_seq_length=1024))
    assert "max-width:520px" in gauge.bar.value and "var(--jp-ui-font-color0, #000)" in gauge.bar.value


def test_a_slow_hub_lookup_never_draws_over_a_newer_setting(monkeypatch):
    """A typo'd id is looked up on a thread; corrected at once, the right prediction shows, and the old lookup's
    "not found", answering later, is dropped (it used to replace the right one and stay)."""
    import threading

    from nbkit import ModelNotFoundError, specs

    real, answered = specs.spec_for, threading.Event()

    def slow_for_the_typo(model):
        if model == "unsloth/Llama-3.2-1B-Instrct":
            answered.wait(10)
            raise ModelNotFoundError(f"Model {model!r} was not found")
        return real(model)

    monkeypatch.setattr(specs, "spec_for", slow_for_the_typo)
    gauge = MemoryGauge(CPU)
    gauge.update(RunConfig(model="unsloth/Llama-3.2-1B-Instrct"))
    gauge.update(RunConfig(model="unsloth/Llama-3.2-1B-Instruct"))  # corrected before the lookup answers
    right = gauge.bar.value
    assert "Predicted peak VRAM" in right
    answered.set()
    gauge.settled(timeout=10)
    assert gauge.bar.value == right and gauge.breakdown is not None


@pytest.mark.slow
def test_a_launcher_run_survives_in_the_saved_notebook(tmp_path, tiny_dir):
    """Executed in a real kernel and saved: the launcher cell keeps a plain-HTML result (state, summary, answers,
    the loss curve) that nbconvert, GitHub and a reopened notebook show without the widgets."""
    import nbformat
    from nbclient import NotebookClient
    from nbconvert import HTMLExporter

    cells = ['from nbkit import RunConfig\nfrom nbkit.ui import launch\n'
             'cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=4, '
             'lora_r=4, save_steps=0, max_samples=8, output_dir="run")',
             "ui = launch(cfg)", "ui.train(wait=True)\nprint(ui.report.train.state)"]
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
    path = tmp_path / "saved.ipynb"
    nbformat.write(nb, path)
    saved = nbformat.read(path, as_version=4)
    results = [o["data"]["text/html"] for o in saved.cells[1].outputs if "nbkit-result" in o.get("data", {}).get(
        "text/html", "")]
    assert len(results) == 1 and "nbkit run finished" in results[0] and "4 steps in" in results[0]
    assert "<b>Before:</b>" in results[0] and "<b>After:</b>" in results[0] and "lora_adapters" in results[0]
    assert "nbkit/tiny-llama, 16bit, LoRA r=4" in results[0] and "4 steps, learning rate" in results[0]
    html, _ = HTMLExporter().from_filename(str(path))
    assert "nbkit run finished" in html


def test_on_colab_the_advanced_fields_fold_without_an_accordion(monkeypatch):
    """Colab's widget manager breaks Accordion (colabtools#3571): there the fields fold under a toggle."""
    import ipywidgets as w

    monkeypatch.setenv("NBKIT_FRONTEND", "colab")
    form = ConfigForm(RunConfig(), CPU)
    toggle, box = form.advanced.children
    assert not isinstance(form.advanced, w.Accordion) and form.max_seq_length in box.children
    assert box.layout.display == "none"
    toggle.value = True
    assert box.layout.display is None


def test_the_tiny_model_trains_in_16_bit_where_nothing_chose_its_precision(tmp_path):
    """The launcher's defaults and `nbkit train --config` with only output_dir train the demo model in 16-bit (on a CPU
    twice as fast as 4-bit, which teaches it the same) and say why; a 4-bit the user chose is kept, with a line
    saying it is slower."""
    from nbkit.loading.tiny import with_suggested

    ui = Launcher(gpu=CPU)
    assert ui.form.config.quantization == "16bit" and "trains in 16-bit" in ui.status.value
    assert ui.form.precision_note.value == ""
    ui.form.quantization.buttons["4bit"].value = True  # the user picks 4-bit: kept, and told
    assert ui.form.config.quantization == "4bit" and "learns the same, about twice as slowly" in ui.form.precision_note.value
    said = []
    only_folder = with_suggested(RunConfig.from_dict({"output_dir": "run"}), given={"output_dir": "run"},
                                 say=said.append)
    assert only_folder.quantization == "16bit" and "trains in 16-bit" in said[0]
    said.clear()
    chosen = with_suggested(RunConfig.from_dict({"quantization": "4bit"}), given={"quantization": "4bit"},
                            say=said.append)
    assert chosen.quantization == "4bit" and any("about twice as slowly" in line for line in said)
    assert with_suggested(RunConfig(model=LLAMA_8B), say=said.append).quantization == "4bit"  # only the tiny one


def test_resume_is_offered_only_for_a_run_to_continue_and_chat_follows_the_launcher(tmp_path, tiny_dir, monkeypatch):
    """A fresh launcher offers no Resume (nothing to resume); a stopped run is offered, also to the launcher of a
    later kernel whose folder nbkit names beside it, and Resume there finishes it. chat(ui) before a run says what to
    do in one line; after it, it answers with the launcher's model; a launcher cell run again keeps the last run."""
    import time

    from nbkit.exporting import generate
    from nbkit.ui import chatbox, launcher
    from nbkit.ui.chatbox import Chat

    monkeypatch.chdir(tmp_path)
    cfg = RunConfig(quantization="16bit", max_seq_length=64, batch_size=2, grad_accum=1, max_steps=24, lora_r=4,
                    save_steps=0, max_samples=16)  # output_dir left to nbkit
    ui = Launcher(cfg, CPU)
    assert ui.resume_button.disabled and ui.resume() is None
    assert chatbox.chat(ui) is None  # prints the one line: "Train in the launcher above first ..."
    ui.train()
    deadline = time.time() + 120
    while ui.progress_view.bar.value < 2 and time.time() < deadline:
        time.sleep(0.05)
    ui.runner.stop("test")
    ui.runner.wait(timeout=120)
    stopped = ui.report.config.output_dir
    assert ui.report.train.state == "stopped" and not ui.resume_button.disabled
    assert stopped in ui.resume_button.tooltip and ui.chat_button.disabled  # a partial model is not chatted with
    fresh = RunConfig(**{**cfg.to_dict(), "output_dir": "", "max_steps": 30})  # as in a new kernel: a fresh folder
    later = Launcher(fresh, CPU)  # beside the stopped run
    assert later.form.config.output_dir != stopped and not later.resume_button.disabled
    later.resume(wait=True)
    assert later.error is None and later.report.train.finished and later.report.config.output_dir == stopped
    assert later.report.train.steps == 24 and later.resume_button.disabled and not later.chat_button.disabled
    chat = Chat(later, max_new_tokens=6)
    chat.ask("What is the capital of France?", wait=True)
    assert chat.turns[0][1] == generate.generate(later.report.loaded, "What is the capital of France?", 6)
    monkeypatch.setattr(launcher, "_last", [__import__("weakref").ref(later)])
    again = launcher.launch(cfg, CPU)  # the cell run again: the last run stays, to export and chat with
    assert again is not later and again.report is later.report and not again.chat_button.disabled
    assert "nbkit run finished" in again.result_html()
