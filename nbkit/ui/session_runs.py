"""The runs this kernel made from launchers, side by side: settings, how each ended, final loss, speed, folder, and
their loss curves on one plot (plain HTML, so a saved notebook keeps it). Kept for the kernel, not per launcher:
a launcher cell run again still lists the runs the one before it made."""
from __future__ import annotations

import html
from pathlib import Path

from .plot import loss_curves_png
from .static import png_img

KERNEL_RUNS: list = []  # every launcher run of this kernel (nbkit.workflow.WorkflowReport), oldest first


def record(report) -> None:
    if report is not None and all(r is not report for r in KERNEL_RUNS):
        KERNEL_RUNS.append(report)


def runs_table_html(reports=None) -> str:
    """An HTML table of `reports` (default: the kernel's), oldest first, with their curves overlaid; "" for fewer
    than two."""
    reports = KERNEL_RUNS if reports is None else reports
    if len(reports) < 2:
        return ""
    rows = []
    for i, r in enumerate(reports, start=1):
        c, t = r.config, r.train
        loss = f"{t.final_loss:.4f}" if t.losses else "–"
        rows.append(f"<tr><td>{i}</td><td>{html.escape(t.state)} {t.steps}/{t.total}</td>"
                    f"<td>{c.quantization}, r={c.lora_r}, {c.max_seq_length} tokens, batch {c.batch_size}×{c.grad_accum},"
                    f" lr {c.learning_rate:g}</td><td>{loss}</td><td>{t.tokens_per_second:,.0f}</td>"
                    f"<td><code>{html.escape(Path(c.output_dir).name)}</code></td></tr>")
    curves = {f"{i}: {Path(r.config.output_dir).name}": r.train.losses for i, r in enumerate(reports, start=1)}
    # narrow cells wrap (a folder's name breaks anywhere) rather than scroll sideways
    return ("<details open><summary><b>This session's runs</b></summary><table class='nbkit-runs' "
            "style='font-size:smaller;overflow-wrap:anywhere'><tr><th>#</th><th>ended</th><th>settings</th><th>final loss</th>"
            "<th>tokens/s</th><th>folder</th></tr>" + "".join(rows) + "</table>"
            + png_img(loss_curves_png(curves), "loss curves") + "</details>")


def resumable(config) -> tuple[str, str] | None:
    """(folder, its state in words) of the run that Resume would continue, or None: the form's folder when it holds
    a run that stopped, was interrupted or failed with a checkpoint; where nbkit named that folder (output_dir left
    unset), also the newest such run of the same model beside it, as an earlier kernel left it."""
    from ..errors import NbkitError
    from ..planning.config import is_auto_output_dir
    from ..training import outputs, runs

    if config is None:
        return None
    own = Path(config.output_dir)
    folders = [own]
    if is_auto_output_dir(config.output_dir) and own.parent.is_dir():
        others = [p for p in own.parent.iterdir() if p != own and (p / "nbkit_run.json").is_file()]
        folders += sorted(others, key=lambda p: (p / "nbkit_run.json").stat().st_mtime, reverse=True)
    for folder in folders:
        marker = outputs.read_marker(folder)
        if not marker or not marker.get("config") or marker["config"].get("model") != config.model:
            continue
        try:  # as the run was started: Resume continues it with its own settings
            if runs.plan(outputs.saved_config(folder), resume=True).continues:
                return str(folder), runs.describe(marker)
        except (NbkitError, OSError, ValueError):
            continue
    return None
