"""launch(): form + memory gauge + Train button, wired to the workflow core."""
from __future__ import annotations

import ipywidgets as w

from ..config import RunConfig
from ..hardware import GpuInfo, check_gpu
from .form import ConfigForm
from .gauge import MemoryGauge


class Launcher(w.VBox):
    def __init__(self, config: RunConfig | None = None, gpu: GpuInfo | None = None, recommend: bool = True):
        self.gpu = gpu or check_gpu()
        config = config or RunConfig()
        self.form = ConfigForm(config, self.gpu)
        self.gauge = MemoryGauge(self.gpu)
        self.status = w.HTML(value=f"<small>{self.gpu.summary()}</small>")
        self.train_button = w.Button(description="Train", button_style="primary", icon="play")
        self.output = w.Output()
        self.report = None
        self.form.observe_config(self._config_changed)
        if recommend and self.gpu.available:
            self._apply_recommendation(config)
        self.gauge.update(self.form.config)
        self.train_button.on_click(lambda _b: self.train())
        super().__init__([self.status, self.form, self.gauge, self.train_button, self.output])

    def _apply_recommendation(self, config: RunConfig) -> None:
        from ..memory import recommend
        from ..specs import spec_for

        rec = recommend(spec_for(config.model), self.gpu, base=config, backend=self.gauge.backend)
        self.form.apply(rec.config)
        self.status.value += f"<br><small>Recommended: {rec.reason}</small>"

    def _config_changed(self, config: RunConfig | None) -> None:
        self.gauge.update(config)
        self.train_button.disabled = config is None or self.gauge.level == "over"

    def train(self):
        from .. import workflow
        from ..errors import NbkitError

        config = self.form.config
        if config is None:
            return None
        self.train_button.disabled = True
        self.gauge.start_live()
        try:
            with self.output:
                try:
                    self.report = workflow.run(config)
                    print(self.report.summary())
                except NbkitError as exc:  # shown as a message, not a traceback
                    print(f"⚠ {exc}")
        finally:
            self.gauge.stop_live()
            self.train_button.disabled = False
        return self.report


def launch(config: RunConfig | None = None, gpu: GpuInfo | None = None) -> Launcher:
    from IPython.display import display

    ui = Launcher(config, gpu)
    display(ui)
    return ui
