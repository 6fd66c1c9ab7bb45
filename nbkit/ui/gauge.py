"""MemoryGauge: predicted peak VRAM against the GPU before loading; live VRAM while training."""
from __future__ import annotations

import threading

import ipywidgets as w

from ..planning.config import RunConfig
from ..errors import NbkitError
from ..training.events import RunObserver
from ..planning.hardware import GpuInfo, all_gpus_memory, check_gpu, live_vram, per_gpu_line
from .frontend import call, main_thread

COLORS = {"weights": "#4e79a7", "LoRA + optimizer": "#f28e2b", "activations": "#59a14f", "logits": "#b07aa1",
          "overhead": "#9c9c9c"}


def verdict(used: float, capacity: float) -> tuple[str, str]:
    """(level, words): green within recommend()'s safety margin, amber up to the card, red beyond."""
    from ..planning.memory import SAFETY_MARGIN

    if used <= SAFETY_MARGIN * capacity:
        return "ok", "fits"
    if used <= capacity:
        return "tight", "tight: may OOM on longer sequences"
    return "over", "will not fit"


LEVEL_COLOR = {"ok": "#2e7d32", "tight": "#ef8f00", "over": "#c62828"}


class MemoryGauge(w.VBox, RunObserver):
    """A view of the memory plan before the run and of live VRAM during it; also an observer of the run."""

    def __init__(self, gpu: GpuInfo | None = None, backend: str | None = None, processes: int = 1):
        self.gpu = gpu or check_gpu()
        self.processes = processes  # GPUs the run will use (nbkit.workflow.run_parallel): the prediction is per GPU
        if backend is None:
            from ..loading.backend import unsloth_installed

            backend = "unsloth" if self.gpu.available and unsloth_installed() else "transformers"
        self.backend = backend
        self.bar = w.HTML()
        self.detail = w.HTML()
        self.live = w.HTML()
        self.level = "none"
        self.breakdown = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self.phase = w.HTML()
        self._request = 0  # the newest update(): what a lookup answering later must not draw over
        self._lookup: threading.Thread | None = None
        super().__init__([self.bar, self.detail, self.live, self.phase])

    @property
    def capacity(self) -> float:
        return self.gpu.usable_gib if self.gpu.available else 0.0

    @main_thread
    def update(self, config: RunConfig | None) -> None:
        """Redraw the prediction for `config` (None: the form holds an invalid value). A model that must be looked
        up on the Hub is looked up on a thread, so the form never waits for the network; the latest request wins
        (an older lookup that answers later is dropped)."""
        self._request += 1
        if config is None:
            self.level, self.breakdown = "none", None
            self.bar.value = "<i>Fix the form's error to see the memory prediction.</i>"
            self.detail.value = ""
            return
        from ..specs import known_without_hub, spec_for

        if known_without_hub(config.model):
            self._show(config, self._request, spec_for)
            return
        self.level, self.breakdown = "none", None
        self.bar.value = f"<i>Looking up {config.model} on the Hugging Face Hub …</i>"
        self.detail.value = ""
        self._lookup = threading.Thread(target=self._show, args=(config, self._request, spec_for), daemon=True,
                                        name="nbkit-gauge-lookup")
        self._lookup.start()

    def settled(self, timeout: float | None = None) -> None:
        """Wait for a Hub lookup still under way (scripts and tests; the form never waits)."""
        if self._lookup is not None:
            self._lookup.join(timeout)

    def _show(self, config: RunConfig, request: int, spec_for) -> None:
        try:
            spec = spec_for(config.model)
        except NbkitError as exc:
            spec = exc
        call(self._draw, config, request, spec)

    def _draw(self, config: RunConfig, request: int, spec) -> None:
        from ..planning.memory import estimate, usage_vs_capacity

        if request != self._request:  # the form changed while this was looked up: a newer drawing stands
            return
        if isinstance(spec, NbkitError):
            self.level, self.breakdown = "none", None
            self.bar.value = f"<span style='color:#b00020'>⚠ {spec}</span>"
            self.detail.value = ""
            return
        sharded = config.parallelism == "fsdp" and self.processes > 1
        # a sharded run trains on transformers (Unsloth does not shard), each GPU holding its share
        part = estimate(config, spec, "transformers" if sharded else self.backend, on_cuda=True,
                        processes=self.processes)
        self.breakdown = part
        if not self.gpu.available:
            self.level = "none"
            # the launcher's first line already says there is no GPU here: said once
            self.bar.value = (f"<div class='nbkit-gauge' data-level='none'><b>Predicted peak VRAM on a GPU: "
                              f"{part.peak_total:.2f} GiB</b> (for the same settings on a GPU)</div>")
        else:
            self._refresh_gpu()
            used, capacity = usage_vs_capacity(self.gpu, part)
            self.level, words = verdict(used, capacity)
            self.bar.value = self._bar_html(part, capacity, words, used)
        load = f" · loading {part.load + part.cuda_context:.2f} GiB"
        each = f"each of {self.processes} GPUs ({'sharded' if sharded else 'a whole copy'}), " \
            if self.processes > 1 else ""
        # the whole table, redrawn with the settings: the numbers beside the bar are always those of the form
        self.detail.value = (f"<small>{each}training: " + " · ".join(f"{k} {v:.2f} GiB" for k, v in part.groups().items())
                             + load + f"</small><details><summary><small>the prediction, line by line</small></summary>"
                             f"<pre class='nbkit-gauge-table'>{part.table()}</pre></details>")

    def _refresh_gpu(self) -> None:
        """Memory in use changes (a model loaded in another cell): re-read it when this is the GPU here."""
        import torch

        if torch.cuda.is_available():
            from ..planning.hardware import check_gpu

            now = check_gpu()
            if now.name == self.gpu.name:
                self.gpu = now

    def _bar_html(self, part, capacity: float, words: str, used: float) -> str:
        groups = part.groups()
        if part.limiting_phase == "loading":
            # the bar shows what loading holds: the whole bf16 model, before FP8 quantization
            groups = {"weights": part.load, "overhead": part.cuda_context}
            limit = f"the limit is loading: {part.load_note}"
        else:
            limit = "the limit is the training peak (loading needs less)"
        scale = max(capacity, sum(groups.values()))
        segs = "".join(
            f"<div title='{k}: {v:.2f} GiB' style='width:{100 * v / scale:.2f}%;background:{COLORS[k]}'></div>"
            for k, v in groups.items() if v > 0)
        cap_pos = 100 * capacity / scale
        color = LEVEL_COLOR[self.level]
        legend = " ".join(f"<span class='nbkit-legend'><span style='display:inline-block;width:10px;height:10px;"
                          f"background:{COLORS[k]}'></span> {k} </span>" for k, v in groups.items() if v > 0)
        # as wide as the cell allows, up to 520 px; the limit line in the theme's text colour (black on light,
        # white on dark: a fixed black one vanished in a dark theme)
        return (f"<div class='nbkit-gauge' data-level='{self.level}' style='width:100%;max-width:520px'>"
                f"<div style='display:flex;height:18px;border:1px solid #888;position:relative'>{segs}"
                f"<div title='this GPU: {capacity:.1f} GiB' style='position:absolute;left:{cap_pos:.2f}%;top:-3px;"
                f"bottom:-3px;border-left:2px solid var(--jp-ui-font-color0, #000)'></div></div>"
                f"<small>{legend} · <b>|</b> this GPU's limit {capacity:.1f} GiB{self._held()} · {limit}</small><br>"
                f"<b style='color:{color}'>{used:.2f} / {capacity:.1f} GiB — {words}</b></div>")

    def _held(self) -> str:
        return f" (free now: {'; '.join(self.gpu.held_by)} in use)" if self.gpu.held_by else ""

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus the prediction as plain HTML for viewers without widgets (a saved notebook on
        GitHub, nbconvert): they show that instead of an empty "widget" placeholder."""
        bundle = super()._repr_mimebundle_(**kwargs)
        html = f"<div class='nbkit-gauge-static'>{self.bar.value}{self.detail.value}</div>"
        if isinstance(bundle, tuple):
            bundle[0]["text/html"] = html
        elif isinstance(bundle, dict):
            bundle["text/html"] = html
        return bundle

    # --- as an observer of the run (nbkit.training.events) ------------------------------------------------
    def run_planned(self, config, breakdown) -> None:
        self.update(config)

    @main_thread
    def phase_changed(self, phase: str, detail: str = "") -> None:
        self.phase.value = f"<small>Phase: {phase.replace('_', ' ')}{' — ' + detail if detail else ''}</small>"

    def training_started(self, total_steps: int, first_step: int = 0) -> None:
        self.start_live()

    def run_finished(self, result) -> None:
        self.stop_live()

    def run_failed(self, error: BaseException) -> None:
        self.stop_live()

    # --- live view ---------------------------------------------------------------------------
    @main_thread
    def refresh_live(self) -> None:
        vals = live_vram()
        if vals is None:  # no GPU: nothing to show (the launcher's first line says so, once)
            self.live.value = ""
            return
        alloc, reserved, peak = vals
        predicted = f", predicted {self.breakdown.reserved:.2f}" if self.breakdown else ""
        every = ""
        if self.gpu.count > 1:  # data-parallel ranks live in other processes: the driver sees them all
            every = per_gpu_line(all_gpus_memory())
            every = f"<br>All GPUs (driver): {every}" if every else ""
        self.live.value = (f"<small>Live VRAM: {alloc:.2f} GiB allocated, {reserved:.2f} reserved, "
                           f"peak {peak:.2f}{predicted} of {self.capacity:.1f} GiB{every}</small>")

    def start_live(self, interval: float = 0.5) -> None:
        """Refresh from a background thread, at most every `interval` s (>= 0.25: a few times a second)."""
        interval = max(interval, 0.25)
        self.stop_live()
        self._stop.clear()

        def loop():
            while not self._stop.wait(interval):
                self.refresh_live()

        self.refresh_live()
        self._thread = threading.Thread(target=loop, name="nbkit-gauge", daemon=True)
        self._thread.start()

    def stop_live(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2)
            self._thread = None
            self.refresh_live()
