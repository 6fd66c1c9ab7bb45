"""Data-parallel training started from a notebook: one forked process per GPU (accelerate's notebook_launcher).

Kept apart from nbkit.distributed (which the loader and trainer use to ask "which rank am I?") so that the
low-level rank helpers never import the workflow that sits on top of them.
"""
from __future__ import annotations

import json
from pathlib import Path

from .distributed import free_port


def _worker(config_dict: dict, merged: bool, view) -> None:
    from ..planning.config import RunConfig
    from ..workflow import run

    run(RunConfig.from_dict(config_dict), merged=merged, observers=[view()] if view else [])


def launch(config, num_processes: int | None = None, merged: bool = False, view=None) -> dict:
    """Train `config` data-parallel from a notebook: one forked process per GPU.

    `view` makes rank 0's observer in its own process, e.g. `view=nbkit.ui.progress.TrainingProgress`.
    Call it before anything touches CUDA in the kernel (forked processes cannot inherit a CUDA context).
    Returns rank 0's report (also in output_dir/nbkit_report.json).
    """
    import torch
    from accelerate import notebook_launcher

    n = num_processes or max(1, torch.cuda.device_count())
    notebook_launcher(_worker, (config.to_dict(), merged, view), num_processes=n, use_port=str(free_port()))
    return json.loads((Path(config.output_dir) / "nbkit_report.json").read_text())
