"""Checkpoints that never half-exist: a mix-in for the HF Trainer that writes each one under a temporary name and
renames it into place once complete, with nbkit's marker inside, and warns before the disk runs short; and resumes
from one into the very state that wrote it (the adapters in the dtype they trained in)."""
from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from . import outputs
from ..errors import ExportError


class AtomicCheckpoints:
    """Checkpoints are written into a staging folder and renamed into place once complete, with nbkit's marker
    inside: a checkpoint half-written when the process died has no marker, and resume skips it. Rotation
    (save_total_limit) only ever deletes complete nbkit checkpoints."""

    def _save_checkpoint(self, model, trial):
        final_root = Path(self.args.output_dir)
        name = f"checkpoint-{self.state.global_step}"
        staging = final_root / f".nbkit-tmp-{name}"
        warn_if_disk_is_short(final_root, self.model)
        self.args.output_dir = str(staging)
        try:
            super()._save_checkpoint(model, trial)
        except (OSError, RuntimeError) as exc:  # disk full shows as OSError, or SafetensorError (a RuntimeError)
            shutil.rmtree(staging, ignore_errors=True)  # never a partial checkpoint
            last, _ = outputs.newest_checkpoint(final_root)
            err = ExportError(f"Could not write {name} in {final_root}: {exc}. Training stopped at step "
                              f"{self.state.global_step}. Free disk space, then resume: the newest complete "
                              f"checkpoint is {last or 'none yet'}.")
            err.checkpoint_failed = True
            raise err from exc
        finally:
            self.args.output_dir = str(final_root)
        from ..gpus.distributed import barrier

        barrier()  # every rank's RNG file is in before rank 0 renames the folder
        if not self.args.should_save:
            return
        outputs.write_text_atomic(staging / name / outputs.CHECKPOINT_MARKER,
                                  f'{{"step": {self.state.global_step}, "saved": "{time.strftime("%F %T")}"}}')
        target = final_root / name
        if target.exists():  # a resumed run re-saving a step: the old copy is nbkit's own
            shutil.rmtree(target)
        os.replace(staging / name, target)
        shutil.rmtree(staging, ignore_errors=True)
        limit = self.args.save_total_limit
        complete = [c for c in outputs.checkpoints(final_root) if outputs.is_complete(c)]
        for old in complete[:-limit] if limit else []:
            shutil.rmtree(old, ignore_errors=True)


    def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
        """The adapters as they were when the checkpoint was written, dtype included. TRL trains a quantized
        model's adapters in bf16, but peft's load_adapter (how the Trainer resumes a PEFT model) upcasts them to
        fp32 (autocast_adapter_dtype): a resumed 4-bit run then trained in another precision than the run it
        continues, and parted from it at the first step after the resume. Casting back is exact (the checkpoint
        holds the bf16 values)."""
        target = model if model is not None else self.model
        trained_in = {name: p.dtype for name, p in target.named_parameters() if p.requires_grad}
        super()._load_from_checkpoint(resume_from_checkpoint, model)
        if getattr(self, "is_fsdp_enabled", False):
            return  # FSDP's flat parameters keep the dtype FSDP gave them
        # by name: peft replaces the parameter objects it upcasts (the optimizer is built after this)
        for name, param in target.named_parameters():
            if param.requires_grad and trained_in.get(name, param.dtype) != param.dtype:
                param.data = param.data.to(trained_in[name])


_disk_warned: set[str] = set()


def warn_if_disk_is_short(folder: Path, model) -> None:
    """Once per folder: say so before a checkpoint when free disk is under twice what one takes (the newest one
    on disk, else the adapters plus Adam's two states in fp32)."""
    newest, _ = outputs.newest_checkpoint(folder)
    if newest is not None:
        need = sum(p.stat().st_size for p in newest.rglob("*") if p.is_file()) / 1024**3
    else:
        need = 12 * sum(p.numel() for p in model.parameters() if p.requires_grad) / 1024**3
    free = outputs.free_gib(folder)
    if free < 2 * need and str(folder) not in _disk_warned:
        _disk_warned.add(str(folder))
        print(f"nbkit: warning: {free:.2f} GiB free where checkpoints go ({folder}); one takes about {need:.2f} "
              "GiB. Free disk space or lower save_total_limit before the disk fills.")
