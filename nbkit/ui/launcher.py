"""launch(): form + memory gauge + Train / Stop / Resume / Chat, wired to the workflow core.

Training runs on a background thread that a runner owns (nbkit.runner), so the widgets stay live while it
trains: the gauge refreshes, and Stop asks the run to end at the next step boundary (with a resumable checkpoint);
the launcher only draws what the runner reports. Resume is offered when there is a run
to continue (nbkit.ui.session_runs.resumable). A run's result is a plain-HTML output beside the widgets (said
once, there); a dead kernel's launcher hides its controls and says how to bring them back (nbkit.ui.static).
"""
from __future__ import annotations

import html
from pathlib import Path

import ipywidgets as w

from ..planning.config import RunConfig, auto_output_dir, is_auto_output_dir
from ..errors import NbkitError
from ..planning.hardware import GpuInfo, check_gpu
from ..runner import Runner, training
from ..training.outputs import is_run_folder
from .display import WidgetDisplay
from .export_row import ExportRow
from .form import ConfigForm
from .frontend import main_thread
from .gauge import MemoryGauge
from .progress import TrainingProgress
from .session_runs import record, resumable, runs_table_html
from .static import ERROR, offline_line, run_html


class Launcher(w.VBox):
    def __init__(self, config: RunConfig | None = None, gpu: GpuInfo | None = None, recommend: bool = True,
                 earlier: "Launcher | None" = None):
        from ..loading import backend
        from ..loading.tiny import with_suggested

        backend._notice_shown = True  # the launcher's first line says where it trains (said once, not printed too)
        backend.start_import()  # the form shows while Unsloth imports; Train waits for it
        self.gpu = gpu or check_gpu()
        # the tiny model's suggested settings (16-bit, its learning rate) where the config leaves RunConfig's
        # defaults, said in the first line; what the config sets is kept (a 4-bit it sets is kept, with a warning)
        said: list[str] = []
        config = with_suggested(config or RunConfig(), say=lambda line: said.append(line.removeprefix("nbkit: ")))
        self.form = ConfigForm(config, self.gpu)
        self.gauge = MemoryGauge(self.gpu)
        lines = [self.gpu.summary(), *(line for line in said if "4-bit:" not in line)]  # the form says that one
        self.status = w.HTML(value="<div style='line-height:1.4'>" + "<br>".join(
            f"<small>{html.escape(line)}</small>" for line in lines) + "</div>")
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
        self.stop_button = w.Button(description="Stop", icon="stop", disabled=True,
                                    tooltip="End at the next step, keeping a checkpoint to resume from")
        self.resume_button = w.Button(description="Resume", icon="forward", disabled=True,
                                      tooltip="Nothing to resume: no stopped or interrupted run in the output folder")
        self.chat_button = w.Button(description="Chat", icon="comments", disabled=True,
                                    tooltip="Chat with the trained model, under the run's result")
        self.chat_area = w.VBox(layout=w.Layout(display="none"))  # launch() shows it below the result
        self.chat_area.add_class("nbkit-quiet")  # no "disconnected" icon of its own (nbkit.ui.static)
        self.progress_view = WidgetDisplay(embedded=True)
        self.progress_view.box.layout.display = "none"  # shown once a run starts
        self.message = w.HTML()
        self.exports = ExportRow(self._run_folder, self._loaded)  # Export and Push (nbkit.ui.export_row)
        self.export_buttons, self.export_status, self.hub_push = (self.exports.buttons, self.exports.status,
                                                                  self.exports.hub_push)
        self.report = earlier.report if earlier is not None else None  # a re-run cell keeps the last run
        self.result_handle = None  # a plain-HTML output beside the widgets (launch() makes it): what survives
        self.chat_handle = None  # the chat's plain-HTML transcript (launch() makes it)
        self.reports: list = []  # every run this launcher made (the table lists the kernel's: session_runs)
        self.runner = Runner("nbkit-train")  # the training run: its thread, its Stop, its outcome
        self.runner.on_end(self._run_ended)
        self._base = config
        self.form.observe_config(self._config_changed)
        if recommend and self.gpu.available:
            self._apply_recommendation(config)
        if is_run_folder(config.output_dir) or self.report is not None:  # a run to export (maybe from disk)
            self.exports.enable()
        if self.report is not None:
            self.message.value = (f"<b>The last run ({html.escape(Path(self.report.config.output_dir).name)}) is "
                                  "shown below.</b> Train starts a new one.")
        self.gauge.update(self.form.config)
        self._offer_resume()
        self.chat_button.disabled = not self._chat_ready()
        self.train_button.on_click(lambda _b: self.train())
        self.resume_button.on_click(lambda _b: self.resume())
        self.stop_button.on_click(lambda _b: self.runner.stop("Stop button"))
        self.chat_button.on_click(lambda _b: self.open_chat())
        # the row wraps in a narrow cell rather than cutting the labels short
        buttons = w.HBox([self.train_button, self.stop_button, self.resume_button, self.chat_button],
                         layout=w.Layout(flex_flow="row wrap"))
        offline = w.HTML(offline_line("launcher"))
        offline.add_class("nbkit-offline")
        super().__init__([self.status, self.form, self.gauge, buttons, self.progress_view.box, self.message,
                          *self.exports.widgets, offline])
        self.add_class("nbkit-live")  # nbkit.ui.static: its controls hide once its kernel is gone

    def _apply_recommendation(self, config: RunConfig) -> None:
        from ..planning.recommend import recommend, set_by_user
        from ..specs import spec_for

        # what the config passed in sets on purpose is kept; the rest is recommended
        rec = recommend(spec_for(config.model), self.gpu, base=config, backend=self.gauge.backend,
                        keep=set_by_user(config))
        if not rec.fits:
            self.status.value = self.status.value.removesuffix("</div>") + (
                f"<br><small style='{ERROR}'>{html.escape(rec.reason)}</small></div>")
            return
        self.form.apply(rec.config)
        self.status.value = self.status.value.removesuffix("</div>") + (
            f"<br><small>Recommended: {html.escape(rec.reason)}</small></div>")

    def _config_changed(self, config: RunConfig | None) -> None:
        self.gauge.update(config)
        if not self.running:
            self.train_button.disabled = config is None or self.gauge.level == "over"
            self._offer_resume()

    def _offer_resume(self) -> None:
        """Resume only where there is a run to continue: its folder and state in the tooltip."""
        self.resumable = None if self.running else resumable(self.form.config)
        self.resume_button.disabled = self.resumable is None
        self.resume_button.tooltip = (f"Continue {self.resumable[0]} ({self.resumable[1]}) from its newest checkpoint"
                                      if self.resumable else "Nothing to resume: no stopped or interrupted run in "
                                      "the output folder")

    def _chat_ready(self) -> bool:
        r = self.report
        return r is not None and r.train.finished and r.loaded is not None and not r.loaded.released

    def resume(self, wait: bool = False):
        """Continue the run Resume offers (this launcher's, or an earlier kernel's beside it) with its own
        settings, which the form then shows. None when there is nothing to resume."""
        from ..training.outputs import saved_config

        self._offer_resume()
        if self.resumable is None or self.running:
            return None
        self.form.apply(saved_config(self.resumable[0]))
        return self.train(resume=True, wait=wait)

    def open_chat(self, max_new_tokens: int = 128):
        """A chat with this launcher's trained model, below its result (launch() places it)."""
        from .chatbox import Chat

        if not self._chat_ready():
            return None
        chat = Chat(self, max_new_tokens)
        if self.chat_handle is not None:
            chat.attach_static(self.chat_handle)
        self.chat_area.children = [chat]
        self.chat_area.layout.display = None
        return chat

    @property
    def running(self) -> bool:
        return self.runner.running  # the run's own thread, drawing its end (_after_run), no longer counts

    @property
    def stop(self):
        """The run's stop control (the runner's): `ui.stop.request(reason)` is what Stop does."""
        return self.runner.control

    @property
    def error(self) -> BaseException | None:
        """What ended the last run with an error (None after a run that ended well)."""
        return self.runner.error

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
        # the last run's report stays (its exports) until this one has its own
        for b in (self.train_button, self.resume_button, self.chat_button):
            b.disabled = True
        self.form.lock()
        self.stop_button.disabled, self.stop_button.button_style = False, "warning"
        self.message.value = "<i>Preparing the run …</i>"
        progress = TrainingProgress(mode="widgets")
        progress.display = self.progress_view
        # the engine first (Unsloth before transformers), then the libraries' bars off, loading too: this
        # launcher's own progress shows the run
        work = training(config, bars_off=True, resume=resume)
        return self.runner.start(work, observers=[progress, self.gauge], wait=wait)

    def _run_ended(self, runner: Runner) -> None:
        """What the run's end says (on the run's thread; the widgets are drawn by _after_run)."""
        self.gauge.stop_live()
        exc = runner.error
        if exc is None:
            self.report = runner.result
            self.reports.append(self.report)
            record(self.report)
            state = "stopped early — press Resume to continue" if self.report.train.stopped else "done"
            message = f"<b>{state}</b>: the run's report, answers and loss curve are below"
        elif isinstance(exc, NbkitError):  # the user's to fix: a message, not a traceback
            message = f"<b style='{ERROR}'>⚠ {html.escape(str(exc))}</b>"
        else:  # a bug still must not leave the buttons dead
            message = f"<b style='{ERROR}'>⚠ {type(exc).__name__}: {html.escape(str(exc))}</b>"
        self._after_run(message)

    @main_thread
    def _after_run(self, message: str) -> None:
        """The widgets after a run (on the main thread where the front end needs it: nbkit.ui.frontend)."""
        self.message.value = message
        self.exports.enable(self.report is not None)
        self.stop_button.disabled, self.stop_button.button_style = True, ""  # not orange when it cannot act
        self.hub_push.refresh()
        self.form.lock(False)
        self._offer_resume()
        self.chat_button.disabled = not self._chat_ready()
        if self.error is None:  # an error is said once, in the message line; the last result stays below
            self._publish()
        self.train_button.disabled = self.form.config is None or self.gauge.level == "over"

    def result_html(self) -> str:
        """The last run's outcome as plain HTML (nbkit.ui.static.run_html, with its loss curve), then the table of
        this kernel's runs: a saved notebook, nbconvert and GitHub show it where the widgets are gone."""
        from .plot import loss_curve_png

        if self.report is None:
            return run_html(None, self.error)
        t = self.report.train
        png = loss_curve_png(t.losses, t.eval_losses) if t.losses else b""
        return run_html(self.report, png=png) + runs_table_html()

    def _publish(self) -> None:
        if self.result_handle is not None and (self.report is not None or self.error is not None):
            from IPython.display import HTML

            self.result_handle.update(HTML(self.result_html()))

    def export(self, kind: str, wait: bool = False):
        """Save the trained model as `kind` (lora, merged, gguf) into the run's folder, on a thread, with the
        same functions the notebooks call; the status line says what is being written and then where. Without a
        run in this kernel, the run in the form's folder (from an earlier kernel) is exported from disk."""
        return self.exports.export(kind, wait)

    def _run_folder(self) -> str:
        return self.report.config.output_dir if self.report else (self.form.config or self._base).output_dir

    def _loaded(self):
        """The trained model in memory, unless a later load released it (then the run's folder on disk)."""
        loaded = self.report.loaded if self.report else None
        return loaded if loaded is not None and not loaded.released else None


_last: list = []  # the launcher this kernel showed last (a weak reference)


def launch(config: RunConfig | None = None, gpu: GpuInfo | None = None) -> Launcher:
    """Show the launcher. Run again while its run trains, the cell shows that launcher again (its Stop button,
    its progress) instead of a new one beside an orphaned run; run again after a run, the new launcher keeps that
    run (its result below, Export and Chat)."""
    import weakref

    earlier = _last[0]() if _last else None
    if earlier is not None and earlier.running:
        earlier.message.value = ("<b>This launcher's run is still training: shown here again. Stop it to start "
                                 "another.</b>")
        _show(earlier)
        return earlier
    ui = Launcher(config, gpu, earlier=earlier)
    _last[:] = [weakref.ref(ui)]
    _show(ui)
    return ui


def _show(ui: Launcher) -> None:
    """The launcher, then the plain-HTML outputs a reopened notebook keeps (filled by their display ids): the run's
    result, and the chat under it (its box, then its transcript)."""
    from IPython.display import HTML, display

    display(ui)
    ui.result_handle = display(HTML("<div class='nbkit-result'></div>"), display_id=True)
    ui._publish()
    display(ui.chat_area)
    ui.chat_handle = display(HTML("<div class='nbkit-chat-static'></div>"), display_id=True)
    for chat in ui.chat_area.children:  # a chat already open: its transcript lands under this cell now
        chat.attach_static(ui.chat_handle)
