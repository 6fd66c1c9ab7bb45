"""The whole run in one call: load → LoRA → data → train → verify → generate → save."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .config import RunConfig

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

    def summary(self) -> str:
        lines = [f"backend: {self.backend}", f"train: {self.train.summary()}", f"verify: {self.verify.summary()}",
                 f"adapters: {self.adapter_dir}"]
        if self.world_size > 1:
            lines.append(f"data parallel: {self.world_size} processes, adapters identical on all ranks: "
                         f"{self.ranks_agree}")
        if self.merged_dir:
            lines.append(f"merged 16-bit: {self.merged_dir}")
        if self.gguf_dir:
            lines.append(f"GGUF: {self.gguf_dir}")
        return "\n".join(lines + self.notes)

    def to_dict(self) -> dict[str, Any]:
        t = self.train
        return {
            "backend": self.backend, "config": self.config.to_dict(), "steps": t.steps, "losses": t.losses,
            "eval_losses": t.eval_losses, "train_seconds": t.train_seconds, "tokens": t.tokens,
            "tokens_per_second": t.tokens_per_second, "steady_tokens_per_second": t.steady_tokens_per_second(),
            "peak_vram_gib": t.peak_vram_gib,
            "checkpoints": t.checkpoints, "adapters_changed": self.verify.ok, "max_abs_diff": self.verify.max_abs_diff,
            "sample_before": self.sample_before, "sample_after": self.sample_after, "adapter_dir": self.adapter_dir,
            "merged_dir": self.merged_dir, "gguf_dir": self.gguf_dir, "notes": self.notes,
            "world_size": self.world_size, "ranks_agree": self.ranks_agree,
        }


def run(config: RunConfig, prompt: str = DEFAULT_PROMPT, merged: bool = False, gguf: bool = False,
        progress: Any = True, max_new_tokens: int = 48, probe: bool = False) -> WorkflowReport:
    """`probe=True` first trains a couple of full-length steps at the configured batch (nbkit.probe) and, if
    that runs out of memory, trains with the largest batch that fits and more accumulation instead; the memory
    check before loading then asks only that the model fits with batch 1."""
    from . import data, distributed, generate, models, train, verify
    from .errors import ExportError

    if probe and distributed.world_size() > 1:
        from .errors import ConfigError

        # ranks probing apart could settle on different batches and leave DDP waiting for each other
        raise ConfigError("probe=True runs on one GPU: probe the batch in a single-GPU run first (memory is per "
                          "GPU, so the answer holds for each), then launch the data-parallel run with it.")
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
    prepared = data.prepare(config, loaded.tokenizer)
    before = verify.snapshot(loaded.model)
    sample_before = generate.generate(loaded, prompt, max_new_tokens)
    # in a data-parallel run one process shows progress and writes; the trainer keeps ranks in step
    result = train.run(loaded, prepared, progress=progress if distributed.is_main() else False)
    report = verify.adapters_changed(loaded.model, before)
    digests = distributed.gather(report.hash_after)
    sample_after = generate.generate(loaded, prompt, max_new_tokens)
    out = Path(config.output_dir)
    adapter_dir = out / "lora_adapters"
    wf = WorkflowReport(config, loaded.backend, result, report, sample_before, sample_after, str(adapter_dir),
                        notes=notes, world_size=len(digests), ranks_agree=len(set(digests)) == 1)
    if not distributed.is_main():
        # wait for rank 0's files, so no rank returns before the run is saved, or fails if it was not
        failure = distributed.from_main(None)
        if failure:
            raise ExportError(f"Rank 0 could not save this run, so it is not saved: {failure}")
        return wf
    try:
        _save(wf, loaded, out, merged, gguf)
    except BaseException as exc:
        distributed.from_main(f"{type(exc).__name__}: {exc}")  # release the other ranks with the reason
        if not isinstance(exc, Exception):
            raise
        # the trained adapters are still in memory: hand them to the caller rather than lose them
        err = ExportError(f"Training finished but saving failed: {exc} The trained model is kept on this "
                          f"error as `.loaded` (and the run's report as `.report`): save it elsewhere with "
                          f"nbkit.export.save_lora(err.loaded, 'another/folder').")
        err.loaded, err.report = loaded, wf
        raise err from exc
    distributed.from_main(None)
    return wf


def _save(wf: WorkflowReport, loaded, out: Path, merged: bool, gguf: bool) -> None:
    from . import export
    from .errors import ExportError

    adapter_dir = Path(wf.adapter_dir)
    export.save_lora(loaded, adapter_dir)
    if merged:
        wf.merged_dir = str(export.save_merged(loaded, out / "merged_16bit", adapter_dir))
    if gguf:
        try:
            wf.gguf_dir = str(export.save_gguf(loaded, out / "gguf"))
        except ExportError as exc:
            wf.notes.append(f"GGUF skipped: {exc}")
    (out / "nbkit_report.json").write_text(json.dumps(wf.to_dict(), indent=2, default=str))
