"""The whole run in one call: check → load → LoRA → data → train (observed) → save → verify → sample → exports.

Everything that can be checked without the model (settings, data, output folder) is checked first, in
seconds. Views watch through `observers` (nbkit.training.events); nothing here imports one.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .loading import data, models
from .gpus import distributed, fsdp
from .exporting import generate, model_card, verify
from .exporting.finishing import Finishing
from .training import outputs, runs, tracking, train
from .planning.config import RunConfig
from .errors import ConfigError
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


def preflight(config: RunConfig, resume: bool = False, overwrite: bool = False,
              accept_changed_data: bool = False) -> list[str]:
    """Checks that need no model, in seconds: the settings (however the config was built or changed since),
    the data, and (on the process that writes) what training into the output folder would do. Writes nothing:
    the folder is claimed when training starts. Raises an NbkitError (RunFinished for a finished run to resume)."""
    config.validate()
    train.check_extra(config.extra)
    lines = [data.check(config), *tracking.preflight(config)]
    if distributed.is_main():
        claim = runs.plan(config, resume=resume, overwrite=overwrite, accept_changed_data=accept_changed_data)
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
        overwrite: bool = False, stop: StopControl | None = None, progress: Any = None,
        accept_changed_data: bool = False) -> WorkflowReport:
    """`probe=True` first trains a couple of full-length steps at the configured batch (nbkit.training.probe) and, if
    that runs out of memory, trains with the largest batch that fits and more accumulation instead; the memory
    check before loading then asks only that the model fits with batch 1. `resume=True` continues the run in
    config.output_dir from its newest complete checkpoint (a finished one only to a larger max_steps), on the
    same data unless `accept_changed_data=True`; `overwrite=True` replaces the run there. Each phase that fails
    is recorded in the run folder (nbkit.training.runs). The adapters are saved the moment training ends; a failure or an
    interrupt after that leaves a saved run that says what is missing (nbkit.exporting.finishing)."""
    main = distributed.is_main()
    events = as_events(observers if main else None)
    if progress and main:  # older spelling: one observer
        events.add(progress)
    if main:  # the run folder's model card, written once the run is saved
        events.add(model_card.CardWriter(config.output_dir))
    config = _checked(config, probe, merged, gguf)
    if resume and main:  # a run folder lost with its session: its checkpoint from the Hub, if the config has one
        tracking.restore(config)
    for line in preflight(config, resume, overwrite, accept_changed_data):
        _say(line)
    with runs.claimed(config, resume, overwrite, record=main, accept_changed_data=accept_changed_data):
        events.run_planned(config, None)
        loaded, notes = _loading(config, probe, events, main)
        prepared, before, sample_before = _preparing(loaded, prompt, max_new_tokens, events, main)
        result = train.run(loaded, prepared, events, stop=stop, resume=resume, overwrite=overwrite)
        events.phase_changed("saving", loaded.config.output_dir)
        with Finishing(loaded, result, _todo(result, merged, gguf), record=main) as finish:
            finish.save()
            wf = _checks(finish, before, sample_before, prompt, max_new_tokens, notes)
            _exports(finish, wf, merged, gguf)
            with finish.stage("report"):
                _write_report(wf, finish)
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
                              "memory: nbkit.exporting.export.save_merged(loaded, folder) after loading the adapters.")
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


def _loading(config: RunConfig, probe: bool, events, main: bool):
    with runs.phase(config.output_dir, "loading", main):
        events.phase_changed("loading", config.model)
        return _load(config, probe)


def _preparing(loaded, prompt: str, max_new_tokens: int, events, main: bool):
    """The data as token rows, the adapters before training, and the model's answer before it."""
    with runs.phase(loaded.config.output_dir, "preparing", main):
        events.phase_changed("preparing", "tokenizing the data")
        prepared = data.prepare(loaded.config, loaded.tokenizer)
        before = verify.snapshot(loaded.model)
        # a sharded model is still in CPU memory here (FSDP moves it to the GPUs when training starts): its "before"
        # answer comes after training, from the base model with the adapters switched off
        sharded = fsdp.sharded(loaded.config)
        return prepared, before, None if sharded else generate.generate(loaded, prompt, max_new_tokens)


def _todo(result, merged: bool, gguf: bool) -> list[str]:
    """The stages after the save; the exports only for a finished run (a stopped one is resumed first)."""
    wanted = [kind for kind, asked in (("merged", merged), ("gguf", gguf)) if asked and result.finished]
    return ["verify", "sample", *wanted, "report"]


def _checks(finish: Finishing, before, sample_before, prompt, max_new_tokens, notes) -> WorkflowReport:
    """Verify the adapters (every rank) and sample the trained model, each a stage of finishing."""
    loaded, result = finish.loaded, finish.result
    wf = finish.report = WorkflowReport(loaded.config, loaded.backend, result, None, sample_before, None,
                                        str(finish.adapter_dir), notes=notes, loaded=loaded,
                                        failures=finish.failures)
    with finish.stage("verify"):
        wf.verify = verify.adapters_changed(loaded.model, before)
        digests = distributed.gather(wf.verify.hash_after)
        wf.world_size, wf.ranks_agree = len(digests), len(set(digests)) == 1
        wf.shard_fraction = fsdp.local_fraction(loaded.model)
    with finish.stage("sample"):
        if wf.sample_before is None:  # sharded: the base model's answer, the adapters switched off
            wf.sample_before = generate.generate(loaded, prompt, max_new_tokens, adapters=False)
        wf.sample_after = generate.generate(loaded, prompt, max_new_tokens)
    return wf


def _exports(finish: Finishing, wf: WorkflowReport, merged: bool, gguf: bool) -> None:
    """The exports asked for (rank 0, a finished run): a failed one is a failed step of the run, not its end."""
    from .exporting import export

    out, loaded = finish.folder, finish.loaded
    wanted = [kind for kind, asked in (("merged", merged), ("gguf", gguf)) if asked]
    if not finish.record or not wanted:
        return
    if not wf.train.finished:
        wf.notes.append(f"not exported ({', '.join(wanted)}): the run {wf.train.state} at step {wf.train.steps}/"
                        f"{wf.train.total}; resume it, or export it as it is with nbkit export {out} "
                        f"--allow-unfinished")
        return
    if merged:
        with finish.stage("merged", tolerate=True):
            wf.merged_dir = str(export.save_merged(loaded, out / "merged_16bit", finish.adapter_dir))
    if gguf:
        with finish.stage("gguf", tolerate=True):
            wf.gguf_dir = str(export.save_gguf(loaded, out / "gguf", adapter_dir=finish.adapter_dir))
    for step, why in finish.failures.items():  # one line each, with the command that finishes the job
        print(f"nbkit: {step} FAILED: {why} The adapters are saved in {finish.adapter_dir}; retry the export "
              f"alone with: nbkit export {out} --{step.split()[0].lower()}")


def _write_report(wf: WorkflowReport, finish: Finishing) -> None:
    if finish.record:
        outputs.write_text_atomic(finish.folder / "nbkit_report.json",
                                  json.dumps(wf.to_dict(), indent=2, default=str))
        runs.note(finish.folder, written="nbkit_report.json", failures=wf.failures)


def _run_in_worker(config_dict: dict, merged: bool, view) -> None:
    run(RunConfig.from_dict(config_dict), merged=merged, observers=[view()] if view else [])


def run_parallel(config: RunConfig, num_processes: int | None = None, merged: bool = False, view=None) -> dict:
    """Train `config` data-parallel from a notebook: one forked process per GPU (accelerate's notebook_launcher),
    each running run() on its share of the data.

    `view` makes rank 0's observer in its own process, e.g. `view=nbkit.ui.progress.TrainingProgress`.
    Call it before anything touches CUDA in the kernel (forked processes cannot inherit a CUDA context).
    Returns rank 0's report (also in output_dir/nbkit_report.json).
    """
    import torch
    from accelerate import notebook_launcher

    n = num_processes or max(1, torch.cuda.device_count())
    notebook_launcher(_run_in_worker, (config.to_dict(), merged, view), num_processes=n,
                      use_port=str(distributed.free_port()))
    return json.loads((Path(config.output_dir) / "nbkit_report.json").read_text())
