"""launch(): form + memory gauge + Train / Stop / Resume, wired to the workflow core.

Training runs on a background thread, so the widgets stay live while it trains: the gauge refreshes, and Stop
asks the run to end at the next step boundary (with a resumable checkpoint). Resume continues the run in the
form's output folder from its newest complete checkpoint.
"""
from __future__ import annotations

import html
import threading
from pathlib import Path

import ipywidgets as w

from ..planning.config import RunConfig, auto_output_dir, is_auto_output_dir
from ..training.outputs import is_run_folder
from ..training.events import StopControl
from ..planning.hardware import GpuInfo, check_gpu
from .display import WidgetDisplay
from .form import ConfigForm
from .frontend import main_thread
from .gauge import MemoryGauge
from .hub_button import HubPush
from .progress import TrainingProgress
from .session_runs import runs_table_html

EXPORTS = {"lora": "LoRA adapters", "merged": "merged 16-bit", "gguf": "GGUF (q8_0)"}


class Launcher(w.VBox):
    def __init__(self, config: RunConfig | None = None, gpu: GpuInfo | None = None, recommend: bool = True):
        from ..loading import backend

        backend.start_import()  # the form shows while Unsloth imports; Train waits for it
        self.gpu = gpu or check_gpu()
        if config is None:  # the tiny model's suggested settings where nbkit chooses (tiny.with_suggested)
            from ..loading.tiny import with_suggested

            config = with_suggested(RunConfig())
        self.form = ConfigForm(config, self.gpu)
        self.gauge = MemoryGauge(self.gpu)
        self.status = w.HTML(value=f"<small>{self.gpu.summary()}</small>")
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", button_style="warning", icon="stop", disabled=True,
                                    tooltip="End at the next step, keeping a checkpoint to resume from")
        self.resume_button = w.Button(description="Resume", icon="forward",
                                      tooltip="Continue the run in the output folder from its newest checkpoint")
        self.progress_view = WidgetDisplay(embedded=True)
        self.progress_view.box.layout.display = "none"  # shown once a run starts
        self.message = w.HTML()
        self.export_buttons = {kind: w.Button(description=label, icon="save", disabled=True,
                                              layout=w.Layout(width="auto"))
                               for kind, label in EXPORTS.items()}
        self.export_status = w.HTML()
        self.hub_push = HubPush(self._saved_run)  # Push beside Export (nbkit.ui.hub_button)
        for kind, button in self.export_buttons.items():
            button.on_click(lambda _b, kind=kind: self.export(kind))
        self.report = None
        self.error: BaseException | None = None
        self.result_handle = None  # a plain-HTML output beside the widgets (launch() makes it): what survives
        self.reports: list = []  # every run this launcher made, for the table of the session's runs
        self.stop = StopControl()
        self._thread: threading.Thread | None = None
        self._base = config
        self.form.observe_config(self._config_changed)
        if recommend and self.gpu.available:
            self._apply_recommendation(config)
        if is_run_folder(config.output_dir):  # a run from an earlier kernel: export it from its folder
            for button in self.export_buttons.values():
                button.disabled = False
        self.gauge.update(self.form.config)
        self.train_button.on_click(lambda _b: self.train())
        self.resume_button.on_click(lambda _b: self.train(resume=True))
        self.stop_button.on_click(lambda _b: self.stop.request("Stop button"))
        buttons = w.HBox([self.train_button, self.stop_button, self.resume_button], layout=w.Layout(flex_flow="row wrap"))
        # rows wrap in a narrow cell rather than cutting the labels short
        exports = w.HBox([w.Label("Export:", layout=w.Layout(width="auto")), *self.export_buttons.values()],
                         layout=w.Layout(flex_flow="row wrap"))
        super().__init__([self.status, self.form, self.gauge, buttons, self.progress_view.box, self.message,
                          exports, self.export_status, self.hub_push])

    def _apply_recommendation(self, config: RunConfig) -> None:
        from ..planning.recommend import recommend, set_by_user
        from ..specs import spec_for

        # what the config passed in sets on purpose is kept; the rest is recommended
        rec = recommend(spec_for(config.model), self.gpu, base=config, backend=self.gauge.backend,
                        keep=set_by_user(config))
        if not rec.fits:
            self.status.value += f"<br><small style='color:#b00020'>{html.escape(rec.reason)}</small>"
            return
        self.form.apply(rec.config)
        self.status.value += f"<br><small>Recommended: {rec.reason}</small>"

    def _config_changed(self, config: RunConfig | None) -> None:
        self.gauge.update(config)
        if not self.running:
            self.train_button.disabled = config is None or self.gauge.level == "over"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def train(self, resume: bool = False, wait: bool = False):
        """Start training on a background thread (the widgets keep working); `wait=True` blocks until it ends.
        Returns the thread, or None if the form holds an invalid value or a run is going. Train after a run in a
        folder nbkit chose starts a new run in a new folder; Resume continues the run in the form's folder."""
        config = self.form.config
        if config is None or self.running:
            return None
        if not resume and is_run_folder(config.output_dir) and is_auto_output_dir(config.output_dir):
            self.form.set_output_dir(auto_output_dir(config.model))
            config = self.form.config
        self.stop.clear()
        self.error = None  # the last run's report stays (its exports) until this one has its own
        for b in (self.train_button, self.resume_button):
            b.disabled = True
        self.form.lock()
        self.stop_button.disabled = False
        self.message.value = ""
        self.progress_view.box.layout.display = None
        self._thread = threading.Thread(target=self._run, args=(config, resume), name="nbkit-train", daemon=True)
        self._thread.start()
        if wait:
            self._thread.join()
        return self._thread

    def _run(self, config: RunConfig, resume: bool) -> None:
        from ..loading import backend
        from .. import workflow
        from ..errors import NbkitError

        progress = TrainingProgress(mode="widgets")
        progress.display = self.progress_view
        message = ""
        try:
            backend.ensure()  # the engine first (Unsloth before transformers), then the libraries' bars off
            with backend.library_bars_off():  # loading too: this launcher's own progress shows the run
                self.report = workflow.run(config, observers=[progress, self.gauge], stop=self.stop, resume=resume)
            self.reports.append(self.report)
            state = "stopped early — press Resume to continue" if self.report.train.stopped else "done"
            message = f"<pre>{html.escape(self.report.summary())}</pre><b>{state}</b>"
        except NbkitError as exc:  # the user's to fix: a message, not a traceback
            self.error = exc
            message = f"<b style='color:#b00020'>⚠ {html.escape(str(exc))}</b>"
        except Exception as exc:  # noqa: BLE001 — a bug still must not leave the buttons dead
            self.error = exc
            message = f"<b style='color:#b00020'>⚠ {type(exc).__name__}: {html.escape(str(exc))}</b>"
        finally:
            self.gauge.stop_live()
            self._after_run(message, progress)

    @main_thread
    def _after_run(self, message: str, progress) -> None:
        """The widgets after a run (on the main thread where the front end needs it: nbkit.ui.frontend)."""
        self.message.value = message
        for button in self.export_buttons.values():
            button.disabled = self.report is None
        self.stop_button.disabled = True
        self.hub_push.refresh()
        self.resume_button.disabled = False
        self.form.lock(False)
        self._publish(progress)
        self.train_button.disabled = self.form.config is None or self.gauge.level == "over"

    def result_html(self, progress=None) -> str:
        """The run's outcome as plain HTML (state, numbers, answers before and after, folders, the loss curve):
        a saved notebook, nbconvert and GitHub show it where the widgets are gone."""
        import base64

        png = getattr(getattr(progress, "display", None), "_png", b"")
        curve = (f"<br><img alt='loss curve' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"
                 if png else "")
        if self.report is None:
            return f"<div class='nbkit-result'><b style='color:#b00020'>⚠ {html.escape(str(self.error))}</b></div>"
        r, t = self.report, self.report.train
        state = "finished" if t.finished else f"{t.state} at step {t.steps}/{t.total} (Resume continues it)"
        answers = (f"<br><b>Before:</b> <code>{html.escape(r.sample_before[:300])!r}</code><br><b>After:</b> "
                   f"<code>{html.escape(r.sample_after[:300])!r}</code>")
        c = r.config
        settings = (f"{c.model}, {c.quantization}, LoRA r={c.lora_r} alpha={c.lora_alpha}, {c.max_seq_length} tokens, "
                    f"batch {c.batch_size}×{c.grad_accum}, {c.max_steps} steps, learning rate {c.learning_rate:g}, "
                    f"data {c.dataset}")
        return (f"<div class='nbkit-result'><b>nbkit run {state}</b><br><small>{html.escape(settings)}</small>"
                f"<pre>{html.escape(r.summary())}</pre>"
                f"{answers}{curve}{runs_table_html(self.reports)}</div>")

    def _publish(self, progress=None) -> None:
        if self.result_handle is not None:
            from IPython.display import HTML

            self.result_handle.update(HTML(self.result_html(progress)))

    def export(self, kind: str, wait: bool = False):
        """Save the trained model as `kind` (lora, merged, gguf) into the run's folder, on a thread, with the
        same functions the notebooks call; the status line says what is being written and then where. Without a
        run in this kernel, the run in the form's folder (from an earlier kernel) is exported from disk."""
        folder = self.report.config.output_dir if self.report else (self.form.config or self._base).output_dir
        # the model in memory, unless a later load released it; else the run's folder on disk
        loaded = self.report.loaded if self.report and self.report.loaded and not self.report.loaded.released \
            else None
        if loaded is None and not is_run_folder(folder):
            return None

        def work():
            from ..exporting import export
            from ..errors import NbkitError

            out = Path(folder)
            adapters = out / "lora_adapters"
            self._export_status(f"<i>Saving {EXPORTS[kind]} …</i>", busy=True)
            try:
                if loaded is None:  # a run from an earlier kernel, or one whose model was released since
                    path = export.from_run(out, merged=kind == "merged", gguf="q8_0" if kind == "gguf" else None)[
                        kind]
                elif kind == "lora":
                    path = export.save_lora(loaded, adapters)
                elif kind == "merged":
                    path = export.save_merged(loaded, out / "merged_16bit", adapters)
                else:
                    path = export.save_gguf(loaded, out / "gguf", adapter_dir=adapters)
                files = ", ".join(sorted(p.name for p in Path(path).iterdir())[:6])
                self._export_status(f"<b>{EXPORTS[kind]} saved:</b> <code>{path}</code> ({files})")
            except NbkitError as exc:
                self._export_status(f"<b style='color:#b00020'>⚠ {html.escape(str(exc))}</b>")

        thread = threading.Thread(target=work, name="nbkit-export", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return thread


    def _saved_run(self) -> str | None:
        """The folder Push sends: this launcher's run once saved, else a saved run in the form's folder."""
        folder = self.report.config.output_dir if self.report else (self.form.config or self._base).output_dir
        return folder if is_run_folder(folder) and Path(folder, "nbkit_report.json").exists() else None

    @main_thread
    def _export_status(self, text: str, busy: bool = False) -> None:
        self.export_status.value = text
        for button in self.export_buttons.values():
            button.disabled = busy


_last: list = []  # the launcher this kernel showed last (a weak reference)


def launch(config: RunConfig | None = None, gpu: GpuInfo | None = None) -> Launcher:
    """Show the launcher. Run again while its run trains, the cell shows that launcher again (its Stop button,
    its progress) instead of a new one beside an orphaned run."""
    import weakref

    from IPython.display import display

    earlier = _last[0]() if _last else None
    if earlier is not None and earlier.running:
        earlier.message.value = ("<b>This launcher's run is still training: shown here again. Stop it to start "
                                 "another.</b>")
        display(earlier)
        if earlier.result_handle is not None:  # its result, when the run ends, lands under this cell now
            from IPython.display import HTML

            earlier.result_handle.display(HTML("<div class='nbkit-result'></div>"))
        return earlier
    from IPython.display import HTML

    ui = Launcher(config, gpu)
    _last[:] = [weakref.ref(ui)]
    display(ui)
    # filled when a run ends: plain HTML, so a reopened notebook shows the result where the widgets are gone
    ui.result_handle = display(HTML("<div class='nbkit-result'></div>"), display_id=True)
    return ui
