"""The LoRA adapters of a loaded model as training needs them: CPU copies of their tensors, and a folder they are
written to (or rescued to, when the run's own folder cannot take them).

On the training floor because training itself needs them (the probe puts the adapters back as they were; a
checkpoint the disk refused sends them to a rescue folder); exporting builds its checks and saves on them.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from . import outputs
from ..errors import ExportError
from ..gpus.fsdp import plain_name, whole

if TYPE_CHECKING:
    import torch

    from ..loading.models import LoadedModel


def snapshot(model) -> dict[str, torch.Tensor]:
    """CPU copies of every trainable LoRA tensor, whole: a sharded model's are gathered (then every rank must
    call this), under the names they had before sharding."""
    return {plain_name(name): whole(p).detach().float().cpu().clone()
            for name, p in model.named_parameters() if "lora_" in name and p.requires_grad}


def write_adapters(loaded: LoadedModel, directory: Path) -> None:
    """Adapters, tokenizer and the run's settings into `directory` (which exists)."""
    if loaded.adapter_state is not None:  # a sharded model's, gathered whole beforehand by every rank
        from ..gpus.fsdp import save_adapters

        save_adapters(loaded.model, directory, loaded.adapter_state)
    else:
        loaded.model.save_pretrained(directory)
    loaded.tokenizer.save_pretrained(directory)
    files = sorted(p.name for p in directory.iterdir() if p.name != outputs.RUN_MARKER)  # what a re-save replaces
    (directory / outputs.RUN_MARKER).write_text(json.dumps(
        {"base_model": loaded.base_path, "backend": loaded.backend, **loaded.config.to_dict(), "files": files},
        indent=2))
    if not any(directory.glob("adapter_model.*")):
        raise ExportError(f"Saving adapters to {directory} produced no adapter_model file; check disk space.")


def rescue_adapters(loaded: LoadedModel, write=write_adapters) -> Path:
    """Save the adapters where a save can still go (the user cache, else the temp folder); raise if none can."""
    spare = None
    try:
        spare = outputs.rescue_dir("lora_adapters")
        write(loaded, spare)
        return spare
    except (OSError, ExportError) as exc:
        if spare is not None:
            shutil.rmtree(spare, ignore_errors=True)  # an empty or partial rescue folder helps nobody
        # the caller says what to do next: a Python caller holds the model, the CLI names a command
        raise ExportError(f"A rescue copy failed too ({exc}); the trained adapters are only in memory now.") from None
