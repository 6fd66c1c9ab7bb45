"""The whole run in one call: check → load → LoRA → data → train (observed) → verify → generate → save.

Everything that can be checked without the model (settings, data, output folder) is checked first, in
seconds. Views watch through `observers` (nbkit.events); nothing here imports one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loading import data, models
from .gpus import distributed, fsdp
from .exporting import generate, model_card, verify
from .training import outputs, runs, tracking, train
from .planning.config import RunConfig
from .errors import ConfigError, ExportError
from .training.events import StopControl, as_events

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
        """Trained to the end, verified, every requested export written, ranks in agreement."""
        return self.train.finished and self.verify.ok and self.ranks_agree and not self.failures

    def summary(self) -> str:
        lines = [f"backend: {self.backend}", f"train: {self.train.summary()}", f"verify: {self.verify.summary()}"]
        if self.sample_before is not None and self.sample_after is not None:  # what training changed, in words
            lines += [f"answer before: {self.sample_before!r}", f"answer after:  {self.sample_after!r}"]
        lines.append(f"adapters: {self.adapter_dir}")
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
            "state": t.state, "total_steps": t.total, "stopped": t.stopped, "stop_reason": t.stop_reason,
            "resumed_from": t.resumed_from,
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
    the data, and (on the process that writes) what training into the output folder would do. Writes nothing:
    the folder is claimed when training starts. Raises an NbkitError (RunFinished for a finished run to resume)."""
    config.validate()
    train.check_extra(config.extra)
    lines = [data.check(config), *tracking.preflight(config)]
    if distributed.is_main():
        claim = runs.plan(config, resume=resume, overwrite=overwrite)
        free = outputs.free_gib(claim.folder)
        if free < 1.0:
            raise ConfigError(f"Only {free:.2f} GiB free where {claim.folder} is: checkpoints and adapters need "
                              "more. Free disk space or pick an output_dir on another disk.")
        lines.append(f"output: {claim.folder} ({free:.0f} GiB free)" + _CLAIM_NOTES.get(claim.mode, ""))
    return lines


_CLAIM_NOTES = {"retry": "; retrying the run there that never trained", "extend": "; training the finished run "
                "there longer", "overwrite": "; replacing the run there when training starts"}


def run(config: RunConfig, prompt: str = DEFAULT_PROMPT, merged: bool = False, gguf: bool = False,
        observers: Any = None, max_new_tokens: int = 48, probe: bool = False, resume: bool = False,
        overwrite: bool = False, stop: StopControl | None = None, progress: Any = None) -> WorkflowReport:
    """`probe=True` first trains a couple of full-length steps at the configured batch (nbkit.probe) and, if
    that runs out of memory, trains with the largest batch that fits and more accumulation instead; the memory
    check before loading then asks only that the model fits with batch 1. `resume=True` continues the run in
    config.output_dir from its newest complete checkpoint (a finished one only to a larger max_steps);
    `overwrite=True` replaces the run there. Each phase that fails is recorded in the run folder (nbkit.runs)."""
    main = distributed.is_main()
    events = as_events(observers if main else None)
    if progress and main:  # older spelling: one observer
        events.add(progress)
    if main:  # the run folder's model card, written once the run is saved
        events.add(model_card.CardWriter(config.output_dir))
    config = _checked(config, probe, merged, gguf)
    if resume and main:  # a run folder lost with its session: its checkpoint from the Hub, if the config has one
        tracking.restore(config)
    for line in preflight(config, resume, overwrite):
        _say(line)
    if main:
        runs.begin(config, resume=resume, overwrite=overwrite)
    events.run_planned(config, None)
    with runs.phase(config.output_dir, "loading", main):
        events.phase_changed("loading", config.model)
        loaded, notes = _load(config, probe)
        config = loaded.config
    with runs.phase(config.output_dir, "preparing", main):
        events.phase_changed("preparing", "tokenizing the data")
        prepared = data.prepare(config, loaded.tokenizer)
        before = verify.snapshot(loaded.model)
        sharded = fsdp.sharded(loaded.config)
        # a sharded model is still in CPU memory here (FSDP moves it to the GPUs when training starts): its "before"
        # answer comes after training, from the base model with the adapters switched off
        sample_before = "" if sharded else generate.generate(loaded, prompt, max_new_tokens)
    result = train.run(loaded, prepared, events, stop=stop, resume=resume, overwrite=overwrite)
    wf = _report(loaded, result, before, sample_before, prompt, max_new_tokens, notes, sharded)
    if not main:
        # wait for rank 0's files, so no rank returns before the run is saved, or fails if it was not
        failure = distributed.from_main(None)
        if failure:
            raise ExportError(f"Rank 0 could not save this run, so it is not saved: {failure}")
        return wf
    events.phase_changed("saving", config.output_dir)
    _save_or_rescue(wf, loaded, merged, gguf)
    events.phase_changed("done", result.state if result.stopped else "")
    return wf


def _say(line: str) -> None:
    if distributed.is_main():
        print(f"nbkit: {line}")


def _checked(config: RunConfig, probe: bool, merged: bool, gguf: bool) -> RunConfig:
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
    return config


def _load(config: RunConfig, probe: bool):
    """The model with LoRA attached, and (with a probe) the batch that fits, said once."""
    # with a probe coming, only the weights and one row need to pass the memory check: the probe finds the batch
    loaded = models.load(config.replace(batch_size=1) if probe else config)
    notes = []
    if probe:
        from .training.probe import probe_batch, settle_batch

        config, note = settle_batch(config, probe_batch(loaded, config.batch_size))
        loaded.config = config
        notes.append(note)
        _say(note)
    return loaded, notes


def _report(loaded, result, before, sample_before, prompt, max_new_tokens, notes, sharded) -> WorkflowReport:
    """Verify the adapters (every rank), gather a sharded model's, and sample the trained model."""
    report = verify.adapters_changed(loaded.model, before)
    digests = distributed.gather(report.hash_after)
    shard_fraction = fsdp.local_fraction(loaded.model)
    if sharded:  # every rank gathers, so that rank 0 alone can save them
        loaded.adapter_state = fsdp.full_adapter_state(loaded.model)
        sample_before = generate.generate(loaded, prompt, max_new_tokens, adapters=False)
    sample_after = generate.generate(loaded, prompt, max_new_tokens)
    adapter_dir = Path(loaded.config.output_dir) / "lora_adapters"
    return WorkflowReport(loaded.config, loaded.backend, result, report, sample_before, sample_after,
                          str(adapter_dir), notes=notes, world_size=len(digests), ranks_agree=len(set(digests)) == 1,
                          loaded=loaded, shard_fraction=shard_fraction)


def _save_or_rescue(wf: WorkflowReport, loaded, merged: bool, gguf: bool) -> None:
    """Save (rank 0), then release the other ranks; if saving fails, the error keeps the trained model."""
    try:
        _save(wf, loaded, Path(wf.config.output_dir), merged, gguf)
    except BaseException as exc:
        distributed.from_main(f"{type(exc).__name__}: {exc}")  # release the other ranks with the reason
        if not isinstance(exc, Exception):
            raise
        runs.note(wf.config.output_dir, save_failed=str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        saved = getattr(exc, "saved_to", None)
        where = (f"the adapters were saved to {saved} instead" if saved else
                 "save it elsewhere with nbkit.export.save_lora(err.loaded, 'another/folder')")
        # the trained adapters are still in memory: hand them to the caller rather than lose them
        err = ExportError(f"Training finished but saving failed: {exc} The trained model is kept on this error "
                          f"as `.loaded` (and the run's report as `.report`); {where}.")
        err.loaded, err.report, err.saved_to = loaded, wf, saved
        raise err from None
    distributed.from_main(None)


def _save(wf: WorkflowReport, loaded, out: Path, merged: bool, gguf: bool) -> None:
    from .exporting import export

    adapter_dir = Path(wf.adapter_dir)
    # a stopped run's adapters are saved (what Resume or an explicit export continues from); exports wait for a
    # finished run
    export.save_lora(loaded, adapter_dir, allow_unfinished=True)
    wanted = [kind for kind, asked in (("merged", merged), ("gguf", gguf)) if asked]
    if wanted and not wf.train.finished:
        wf.notes.append(f"not exported ({', '.join(wanted)}): the run {wf.train.state} at step {wf.train.steps}/"
                        f"{wf.train.total}; resume it, or export it as it is with nbkit export {out} "
                        f"--allow-unfinished")
        wanted = []
    if "merged" in wanted:
        try:
            wf.merged_dir = str(export.save_merged(loaded, out / "merged_16bit", adapter_dir))
        except ExportError as exc:
            wf.failures["merged export"] = str(exc)
    if "gguf" in wanted:
        try:
            wf.gguf_dir = str(export.save_gguf(loaded, out / "gguf", adapter_dir=adapter_dir))
        except ExportError as exc:
            wf.failures["GGUF export"] = str(exc)
    outputs.write_text_atomic(out / "nbkit_report.json", json.dumps(wf.to_dict(), indent=2, default=str))
    runs.note(out, written="nbkit_report.json", failures=wf.failures)
    for step, why in wf.failures.items():
        print(f"nbkit: {step} FAILED: {why}\nnbkit: the LoRA adapters are saved in {adapter_dir}; retry the "
              f"export alone with nbkit export {out} --{step.split()[0].lower()}")
