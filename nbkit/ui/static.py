"""What a notebook keeps when its kernel is gone: plain-HTML copies of a run's result and of a chat, and the rule
that makes dead controls say so.

A widget whose kernel has stopped still renders from the saved widget state, but nothing answers its clicks, and
ipywidgets marks every view of it with `jupyter-widgets-disconnected` (a red broken-link icon on each one: dozens
over a launcher). nbkit's live views carry the class `nbkit-live` (a box around one, `nbkit-quiet`); the style
below hides such a view's controls and its icons once it is disconnected and shows one line instead
(`offline_line`), while the plain-HTML copy (an output updated through its display id, which nbconvert and GitHub
show too) stands below it.
"""
from __future__ import annotations

import base64
import html

ERROR = "color:var(--jp-error-color1, #b00020)"  # readable on a light and on a dark theme
WARN = "color:var(--jp-warn-color1, #8a5a00)"

STYLE = """<style>
.nbkit-live.jupyter-widgets-disconnected::before, .nbkit-live .jupyter-widgets-disconnected::before,
.nbkit-quiet.jupyter-widgets-disconnected::before {
  display: none !important; content: none !important; }
.nbkit-offline { display: none; }
.nbkit-live.jupyter-widgets-disconnected > * { display: none !important; }
.nbkit-live.jupyter-widgets-disconnected > .nbkit-offline { display: block !important; opacity: 0.8; }
.nbkit-result pre, .nbkit-chat-static pre { white-space: pre-wrap; overflow-wrap: anywhere; }
.nbkit-result img, .nbkit-progress img { max-width: 100%; }
</style>"""


def offline_line(what: str) -> str:
    """The HTML of a live view's last child: the style above, and the line shown once its kernel is gone."""
    return (f"{STYLE}<div style='padding:4px 0;line-height:1.4'><i>The kernel behind this {what} has stopped, so its "
            f"controls are hidden; what it did is shown below. Run this cell again to bring them back.</i></div>")


def png_img(png: bytes, alt: str) -> str:
    if not png:
        return ""
    return f"<br><img alt='{alt}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def run_html(report, error: BaseException | None = None, png: bytes = b"", heading: str = "nbkit run") -> str:
    """A run's outcome (state, settings, numbers, answers before and after, folders, the loss curve) as plain HTML."""
    if report is None:
        return f"<div class='nbkit-result'><b style='{ERROR}'>⚠ {html.escape(str(error))}</b></div>"
    r, t = report, report.train
    state = "finished" if t.finished else f"{t.state} at step {t.steps}/{t.total} (Resume continues it)"
    answers = (f"<br><b>Before:</b> <code>{html.escape(repr(r.sample_before[:300]))}</code><br><b>After:</b> "
               f"<code class='nbkit-after'>{html.escape(repr(r.sample_after[:300]))}</code>")
    c = r.config
    settings = (f"{c.model}, {c.quantization}, LoRA r={c.lora_r} alpha={c.lora_alpha}, {c.max_seq_length} tokens, "
                f"batch {c.batch_size}×{c.grad_accum}, {c.max_steps} steps, learning rate {c.learning_rate:g}, "
                f"data {c.dataset}")
    return (f"<div class='nbkit-result'><b>{heading} {state}</b><br><small>{html.escape(settings)}</small>"
            f"<pre>{html.escape(r.summary())}</pre>{answers}{png_img(png, 'loss curve')}</div>")


def transcript_html(turns) -> str:
    """A chat's turns, (prompt, answer, adapters on, question number), each question once with its answers side
    by side (line breaks as written)."""
    rows = []
    for number in dict.fromkeys(t[3] for t in turns):
        answers = [t for t in turns if t[3] == number]
        cells = "".join(f"<div style='flex:1;min-width:200px'><b>Model ({'fine-tuned' if on else 'base'}):</b> "
                        f"<span class='nbkit-chat-answer'>{_shown(answer)}</span></div>"
                        for _, answer, on, _ in answers)
        rows.append(f"<div class='nbkit-chat-turn' style='white-space:pre-wrap'><b>You:</b> "
                    f"{html.escape(answers[0][0])}<div style='display:flex;flex-wrap:wrap;gap:12px'>{cells}"
                    "</div></div>")
    return "".join(rows)


def _shown(answer: str) -> str:
    if answer and not answer.strip():  # an answer of blank lines would otherwise look like no answer at all
        return f"<i>(only whitespace: {len(answer)} characters, {answer.count(chr(10))} line breaks)</i>"
    return html.escape(answer)
