"""ConfigForm: pick model, quantization and LoRA settings; produces a validated RunConfig."""
from __future__ import annotations

import html
from typing import Callable

import ipywidgets as w

from ..planning.config import QUANTIZATIONS, TINY_MODEL, RunConfig
from ..errors import ConfigError, NbkitError
from ..planning.hardware import GpuInfo, check_gpu
from .data_panel import DataPanel
from .fold import folded
from .model_menu import ModelMenu
from .static import ERROR, WARN

QUANT_LABELS = {"4bit": "4-bit (dynamic)", "16bit": "16-bit", "fp8": "FP8"}


def quantization_availability(gpu: GpuInfo) -> dict[str, str | None]:
    """None where a quantization can run here, else the reason it cannot."""
    reasons: dict[str, str | None] = {q: None for q in QUANTIZATIONS}
    if not gpu.available:
        reasons["fp8"] = "FP8 needs an NVIDIA GPU with compute capability 8.9+ (Ada/Hopper); none found."
    elif not gpu.fp8:
        reasons["fp8"] = (f"FP8 needs compute capability 8.9+ (Ada/Hopper); {gpu.name} is "
                          f"{gpu.capability[0]}.{gpu.capability[1]}.")
    return reasons


class QuantizationPicker(w.VBox):
    """One toggle per quantization, so an unavailable one can be disabled with its reason as tooltip."""

    def __init__(self, reasons: dict[str, str | None], value: str = "4bit"):
        self.reasons = reasons
        self.buttons = {
            q: w.ToggleButton(description=QUANT_LABELS[q], value=False, disabled=reasons[q] is not None,
                              tooltip=reasons[q] or f"Load the base model in {QUANT_LABELS[q]}",
                              layout=w.Layout(width="auto", min_width="96px"))
            for q in QUANTIZATIONS
        }
        self.note = w.HTML(" ".join(f"<small>Unavailable: {r}</small>" for r in reasons.values() if r))
        self._callbacks: list[Callable[[str], None]] = []
        self._value = ""
        # the buttons wrap onto a second line in a narrow cell rather than being pushed out of it
        super().__init__([w.HBox(list(self.buttons.values()), layout=w.Layout(flex_flow="row wrap")), self.note],
                         layout=w.Layout(min_width="0", flex="1 1 260px"))
        for q, b in self.buttons.items():
            b.observe(lambda change, q=q: self._clicked(q, change["new"]), names="value")
        self.value = value if reasons.get(value) is None else "4bit"

    @property
    def value(self) -> str:
        return self._value

    @value.setter
    def value(self, q: str) -> None:
        if self.reasons.get(q):
            raise NbkitError(self.reasons[q])
        self._value = q
        for name, b in self.buttons.items():
            b.value = name == q
        for cb in self._callbacks:
            cb(q)

    def _clicked(self, q: str, pressed: bool) -> None:
        if pressed and q != self._value:
            self.value = q
        elif not pressed and q == self._value:
            self.buttons[q].value = True  # a radio group: the chosen one cannot be un-chosen

    def on_change(self, callback: Callable[[str], None]) -> None:
        self._callbacks.append(callback)




class ConfigForm(w.VBox):
    """Every field maps to a RunConfig field; `config` is the validated result or None with `error` set."""

    def __init__(self, config: RunConfig | None = None, gpu: GpuInfo | None = None, models: list[str] | None = None):
        from ..specs import curated_ids

        self.gpu = gpu or check_gpu()
        cfg = config or RunConfig()
        style = {"description_width": "140px"}
        self.model = w.Combobox(value=cfg.model, options=[TINY_MODEL, *(models or curated_ids())],
                                description="Model", ensure_option=False, continuous_update=False, placeholder="Hub id or local folder",
                                style=style, layout=w.Layout(width="auto", max_width="520px"))
        self.quantization = QuantizationPicker(quantization_availability(self.gpu), cfg.quantization)
        self.lora_r = w.Dropdown(options=[4, 8, 16, 32, 64, 128], value=cfg.lora_r if cfg.lora_r in
                                 (4, 8, 16, 32, 64, 128) else 16, description="LoRA rank r", style=style)
        self.lora_alpha = w.IntText(value=cfg.lora_alpha, description="LoRA alpha", style=style)
        self.max_seq_length = w.IntText(value=cfg.max_seq_length, description="Max sequence length", style=style)
        self.batch_size = w.IntText(value=cfg.batch_size, description="Batch size", style=style)
        self.grad_accum = w.IntText(value=cfg.grad_accum, description="Grad accumulation", style=style)
        self.max_steps = w.IntText(value=cfg.max_steps, description="Steps", style=style)
        self.learning_rate = w.FloatText(value=cfg.learning_rate, description="Learning rate", style=style)
        # packing: labels as the options say what each does; the value is RunConfig.packing's
        self.packing = w.Dropdown(options=[("auto (on a GPU, when steps get fuller)", "auto"),
                                           ("on: short rows share a sequence", "on"), ("off", "off")],
                                  value=cfg.packing, description="Packing", style=style)
        # where the trainer also logs (RunConfig.report_to); the package and login are checked before loading
        self.report_to = w.Dropdown(options=[("none (the run folder keeps its metrics)", "none"),
                                             ("TensorBoard", "tensorboard"), ("trackio", "trackio"),
                                             ("Weights & Biases", "wandb")],
                                    value=cfg.report_to, description="Log to", style=style)
        self.data = DataPanel(cfg.dataset, style)
        self.error = w.HTML(value="")
        self.precision_note = w.HTML(value="")  # e.g. the tiny model in 4-bit: slower on a CPU
        self._base = cfg
        self._checked_data = ""
        self._listeners: list[Callable[[RunConfig | None], None]] = []
        self.config: RunConfig | None = cfg
        self._tokenizers: dict[str, object] = {}
        self.data.config_for = lambda: self.config
        self.data.tokenizer_for = self._tokenizer
        fields = [self.model, self.lora_r, self.lora_alpha, self.max_seq_length, self.batch_size,
                  self.grad_accum, self.max_steps, self.learning_rate, self.packing, self.report_to]
        # what a workshop sets first; the rest, which recommend() fills well, folded under Advanced
        self.advanced = folded(w.VBox([self.lora_r, self.lora_alpha, self.max_seq_length, self.grad_accum,
                                       self.learning_rate, self.packing, self.report_to]),
                               "Advanced: LoRA rank and alpha, sequence length, accumulation, learning rate, packing, "
                               "logging")
        quantization_row = w.HBox([w.Label("Quantization", layout=w.Layout(width="144px", min_width="144px")),
                                   self.quantization], layout=w.Layout(flex_flow="row wrap"))
        self.menu = ModelMenu(self.gpu, models)
        super().__init__([self.model, self.menu, quantization_row, self.precision_note, self.data, self.max_steps,
                          self.batch_size, self.advanced, self.error])
        for f in fields:
            f.observe(lambda _change: self._rebuild(), names="value")
        self.quantization.on_change(lambda _q: self._rebuild())
        self.data.on_change(lambda _d: self._rebuild())
        self._checked_data = cfg.dataset
        self.data.check(cfg)
        self._note_precision()

    def _tokenizer(self):
        """The chosen model's tokenizer, for the data preview (loaded once per model)."""
        model = self.model.value.strip()
        if model not in self._tokenizers:
            from ..loading import backend

            backend.ensure()  # Unsloth before transformers (waits for a background import)
            from transformers import AutoTokenizer

            from ..loading.models import resolve_model

            self._tokenizers[model] = AutoTokenizer.from_pretrained(resolve_model(model))
        return self._tokenizers[model]

    def values(self) -> dict:
        return dict(model=self.model.value.strip(), quantization=self.quantization.value,
                    lora_r=self.lora_r.value, lora_alpha=self.lora_alpha.value,
                    max_seq_length=self.max_seq_length.value, batch_size=self.batch_size.value,
                    grad_accum=self.grad_accum.value, max_steps=self.max_steps.value,
                    learning_rate=self.learning_rate.value, packing=self.packing.value, dataset=self.data.value,
                    report_to=self.report_to.value)

    def _rebuild(self) -> None:
        try:
            self.config = self._base.replace(**self.values())
            self.error.value = ""
            if self.config.dataset != self._checked_data:  # a new source: read and check it, inline
                self._checked_data = self.config.dataset
                self.data.check(self.config)
        except NbkitError as exc:  # shown inline: a form never raises a traceback at the user
            self.config = None
            self.problem = str(exc)
            self.error.value = f"<span style='{ERROR}'>⚠ {html.escape(str(exc))}</span>"
        self._note_precision()
        for listener in self._listeners:
            listener(self.config)

    def _note_precision(self) -> None:
        from ..loading.tiny import quantization_note

        note = quantization_note(self.config) if self.config is not None else ""
        self.precision_note.value = f"<small style='{WARN}'>⚠ {html.escape(note)}</small>" if note else ""

    def lock(self, locked: bool = True) -> None:
        """While a run trains the form describes that run: no field can change under it."""
        inputs = [self.model, self.lora_r, self.lora_alpha, self.max_seq_length, self.batch_size, self.grad_accum,
                  self.max_steps, self.learning_rate, self.packing, self.data.source, self.data.upload, self.report_to]
        for widget in inputs:
            widget.disabled = locked
        for q, button in self.quantization.buttons.items():
            button.disabled = locked or self.quantization.reasons[q] is not None

    def set_output_dir(self, folder: str) -> None:
        """Train into `folder` from now on (the launcher's fresh folder for the next run)."""
        self._base = self._base.replace(output_dir=folder)
        self._rebuild()

    def checked_config(self) -> RunConfig:
        """The form's settings for the next cell, or the form's error raised: a cell never goes on with older
        settings because a field is invalid."""
        self._rebuild()
        if self.config is None:
            raise ConfigError(f"The form above holds an invalid value: {self.problem} Fix it there, then run this "
                              "cell again.")
        return self.config

    def observe_config(self, listener: Callable[[RunConfig | None], None]) -> None:
        self._listeners.append(listener)

    def apply(self, config: RunConfig) -> None:
        """Fill the form from a config (e.g. recommend()'s)."""
        self._base = config
        with self.hold_trait_notifications():
            self.model.value = config.model
            self.lora_r.value = config.lora_r if config.lora_r in self.lora_r.options else 16
            for name in ("lora_alpha", "max_seq_length", "batch_size", "grad_accum", "max_steps", "learning_rate",
                         "packing", "report_to"):
                getattr(self, name).value = getattr(config, name)
            self.data.source.value = config.dataset
        self.quantization.value = config.quantization
