"""The runs a launcher made in this session, side by side: settings, how each ended, final loss, speed, folder, and
their loss curves on one plot (plain HTML, so a saved notebook keeps it)."""
from __future__ import annotations

import base64
import html
from pathlib import Path

from .plot import loss_curves_png


def runs_table_html(reports) -> str:
    """An HTML table of `reports` (nbkit.workflow.WorkflowReport), oldest first, with their curves overlaid."""
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
    png = base64.b64encode(loss_curves_png(curves)).decode()
    return ("<details open><summary><b>This session's runs</b></summary><table class='nbkit-runs'><tr><th>#</th>"
            "<th>ended</th><th>settings</th><th>final loss</th><th>tokens/s</th><th>folder</th></tr>"
            + "".join(rows) + f"</table><img alt='loss curves' src='data:image/png;base64,{png}'></details>")
