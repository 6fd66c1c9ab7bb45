"""The whole run in one call: check → load → LoRA → data → train (observed) → verify → generate → save.

Everything that can be checked without the model (settings, data, output folder) is checked first, in
seconds. Views watch through `observers` (nbkit.events); nothing here imports one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import data, distributed, fsdp, generate, models, outputs, train, verify
from .config import RunConfig
from .errors import ConfigError, ExportError, TrainingDivergedError
from .events import StopControl, as_events

DEFAULT_PROMPT = "What is the capital of France?"


@dataclass
class WorkflowReport:
    config: RunConfig
    backend: str
    train: Any  # train.TrainResult
    verify: Any  # verify.VerifyReport
    sample_before: str
    sample_after: str
    adapter_dir: str
    merged_dir: str | None = None
    gguf_dir: str | None = None
    notes: list[str] = field(default_factory=list)
    world_size: int = 1
    ranks_agree: bool = True  # every data-parallel rank ended with the same adapter tensors
    shard_fraction: float = 1.0  # share of the model's parameters this process held (1/N-ish when sharded)
    failures: dict[str, str] = field(default_factory=dict)  # requested step that failed -> why
    loaded: Any = field(default=None, repr=False, compare=False)  # the trained model, for more exports or chat

    @property
    def ok(self) -> bool:
        """Trained, verified, every requested export written, ranks in agreement."""
        return self.verify.ok and self.ranks_agree and not self.failures

    def summary(self) -> str:
        lines = [f"backend: {self.backend}", f"train: {self.train.summary()}", f"verify: {self.verify.summary()}",
                 f"adapters: {self.adapter_dir}"]
        if self.world_size > 1:
            mode = "sharded (FSDP)" if self.config.parallelism == "fsdp" else "data parallel"
            held = f", this process held {self.shard_fraction:.0%} of the weights" if self.shard_fraction < 1 else ""
            lines.append(f"{mode}: {self.world_size} processes{held}, adapters identical on all ranks: "
                         f"{self.ranks_agree}")
        if self.merged_dir:
            lines.append(f"merged 16-bit: {self.merged_dir}")
        if self.gguf_dir:
            lines.append(f"GGUF: {self.gguf_dir}")
        lines += [f"FAILED {step}: {why}" for step, why in self.failures.items()]
        return "\n".join(lines + self.train.notes + self.notes)

    def to_dict(self) -> dict[str, Any]:
        t = self.train
        return {
            "backend": self.backend, "config": self.config.to_dict(), "steps": t.steps, "losses": t.losses,
            "eval_losses": t.eval_losses, "train_seconds": t.train_seconds, "tokens": t.tokens,
            "processes": t.processes, "tokens_this_rank": t.tokens_this_rank,
            "tokens_per_second": t.tokens_per_second, "steady_tokens_per_second": t.steady_tokens_per_second(),
            "peak_vram_gib": t.peak_vram_gib, "peak_allocated_gib": t.peak_allocated_gib,
            "stopped": t.stopped, "stop_reason": t.stop_reason, "resumed_from": t.resumed_from,
            "checkpoints": t.checkpoints, "adapters_changed": self.verify.ok, "max_abs_diff": self.verify.max_abs_diff,
            "lora_tensors": self.verify.tensors, "lora_tensors_changed": self.verify.changed,
            "lora_fraction_changed": self.verify.fraction_changed, "lora_tensors_nonfinite": self.verify.nonfinite,
            "sample_before": self.sample_before, "sample_after": self.sample_after, "adapter_dir": self.adapter_dir,
            "merged_dir": self.merged_dir, "gguf_dir": self.gguf_dir, "notes": t.notes + self.notes,
            "failures": self.failures, "ok": self.ok, "world_size": self.world_size, "ranks_agree": self.ranks_agree,
            "parallelism": self.config.parallelism, "shard_fraction": self.shard_fraction,
        }


def preflight(config: RunConfig, resume: bool = False, overwrite: bool = False) -> list[str]:
    """Checks that need no model, in seconds: the settings (however the config was built or changed since),
    the data, and (on the process that writes) the output folder, claimed for this run. Raises an NbkitError."""
    config.validate()
    lines = [data.check(config)]
    if distributed.is_main():
        folder = outputs.claim(config, resume=resume, overwrite=overwrite)
        free = outputs.free_gib(folder)
        if free < 1.0:
            raise ConfigError(f"Only {free:.2f} GiB free where {folder} is: checkpoints and adapters need more. "
                              "Free disk space or pick an output_dir on another disk.")
        lines.append(f"output: {folder} ({free:.0f} GiB free)")
    return lines


def run(config: RunConfig, prompt: str = DEFAULT_PROMPT, merged: bool = False, gguf: bool = False,
        observers: Any = None, max_new_tokens: int = 48, probe: bool = False, resume: bool = False,
        overwrite: bool = False, stop: StopControl | None = None, progress: Any = None) -> WorkflowReport:
    """`probe=True` first trains a couple of full-length steps at the configured batch (nbkit.probe) and, if
    that runs out of memory, trains with the largest batch that fits and more accumulation instead; the memory
    check before loading then asks only that the model fits with batch 1. `resume=True` continues the run in
    config.output_dir from its newest complete checkpoint; `overwrite=True` replaces the run there."""
    events = as_events(observers if distributed.is_main() else None)
    if progress and distributed.is_main():  # older spelling: one observer
        events.add(progress)
    if probe and distributed.world_size() > 1:
        # ranks probing apart could settle on different batches and leave DDP waiting for each other
        raise ConfigError("probe=True runs on one GPU: probe the batch in a single-GPU run first (memory is per "
                          "GPU, so the answer holds for each), then launch the data-parallel run with it.")
    if merged or gguf:
        config = models.launch_parallelism(config)
        if fsdp.sharded(config):
            raise ConfigError("Merged and GGUF exports need the whole model in one process; a sharded run saves "
                              "the LoRA adapters. Train without merged/gguf, then merge on one machine with enough "
                              "memory: nbkit.export.save_merged(loaded, folder) after loading the adapters.")
    for line in preflight(config, resume, overwrite):
        if distributed.is_main():
            print(f"nbkit: {line}")
    events.run_planned(config, None)
    events.phase_changed("loading", config.model)
    # with a probe coming, only the weights and one row need to pass the memory check: the probe finds the batch
    loaded = models.load(config.replace(batch_size=1) if probe else config)
    notes = []
    if probe:
        from .probe import probe_batch, settle_batch

        config, note = settle_batch(config, probe_batch(loaded, config.batch_size))
        loaded.config = config
        notes.append(note)
        if distributed.is_main():
            print(f"nbkit: {note}")
    events.phase_changed("preparing", "tokenizing the data")
    prepared = data.prepare(config, loaded.tokenizer)
    before = verify.snapshot(loaded.model)
    sharded = fsdp.sharded(loaded.config)
    # a sharded model is still in CPU memory here (FSDP moves it to the GPUs when training starts): its "before"
    # answer comes after training, from the base model with the adapters switched off
    sample_before = "" if sharded else generate.generate(loaded, prompt, max_new_tokens)
    try:
        result = train.run(loaded, prepared, events, stop=stop, resume=resume, claim=False)
    except TrainingDivergedError:
        if distributed.is_main():
            outputs.update_marker(config.output_dir, status="diverged")
        raise
    report = verify.adapters_changed(loaded.model, before)
    digests = distributed.gather(report.hash_after)
    shard_fraction = fsdp.local_fraction(loaded.model)
    if sharded:  # every rank gathers, so that rank 0 alone can save them
        loaded.adapter_state = fsdp.full_adapter_state(loaded.model)
        sample_before = generate.generate(loaded, prompt, max_new_tokens, adapters=False)
    sample_after = generate.generate(loaded, prompt, max_new_tokens)
    out = Path(config.output_dir)
    adapter_dir = out / "lora_adapters"
    wf = WorkflowReport(loaded.config, loaded.backend, result, report, sample_before, sample_after, str(adapter_dir),
                        notes=notes, world_size=len(digests), ranks_agree=len(set(digests)) == 1, loaded=loaded,
                        shard_fraction=shard_fraction)
    if not distributed.is_main():
        # wait for rank 0's files, so no rank returns before the run is saved, or fails if it was not
        failure = distributed.from_main(None)
        if failure:
            raise ExportError(f"Rank 0 could not save this run, so it is not saved: {failure}")
        return wf
    events.phase_changed("saving", str(out))
    try:
        _save(wf, loaded, out, merged, gguf)
    except BaseException as exc:
        distributed.from_main(f"{type(exc).__name__}: {exc}")  # release the other ranks with the reason
        if not isinstance(exc, Exception):
            raise
        outputs.update_marker(out, status="save failed")
        # the trained adapters are still in memory: hand them to the caller rather than lose them
        err = ExportError(f"Training finished but saving failed: {exc} The trained model is kept on this "
                          f"error as `.loaded` (and the run's report as `.report`): save it elsewhere with "
                          f"nbkit.export.save_lora(err.loaded, 'another/folder').")
        err.loaded, err.report = loaded, wf
        err.saved_to = getattr(exc, "saved_to", None)
        raise err from exc
    distributed.from_main(None)
    events.phase_changed("done", "stopped early" if result.stopped else "")
    return wf


def _save(wf: WorkflowReport, loaded, out: Path, merged: bool, gguf: bool) -> None:
    from . import export

    adapter_dir = Path(wf.adapter_dir)
    export.save_lora(loaded, adapter_dir)
    if merged:
        try:
            wf.merged_dir = str(export.save_merged(loaded, out / "merged_16bit", adapter_dir))
        except ExportError as exc:
            wf.failures["merged export"] = str(exc)
    if gguf:
        try:
            wf.gguf_dir = str(export.save_gguf(loaded, out / "gguf", adapter_dir=adapter_dir))
        except ExportError as exc:
            wf.failures["GGUF export"] = str(exc)
    outputs.write_text_atomic(out / "nbkit_report.json", json.dumps(wf.to_dict(), indent=2, default=str))
    status = "stopped" if wf.train.stopped else ("finished" if wf.ok else "finished with failures")
    outputs.update_marker(out, written="nbkit_report.json", status=status)
    for step, why in wf.failures.items():
        print(f"nbkit: {step} FAILED: {why}\nnbkit: the LoRA adapters are saved in {adapter_dir}")
