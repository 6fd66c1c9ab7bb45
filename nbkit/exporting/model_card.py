"""A model card for a run folder, written from the folder alone (its marker, report and adapters), so a run from an
earlier kernel gets one too: `nbkit card RUN_DIR`, `write_card(run_dir)`, and at the end of every run
(`CardWriter`, an observer of the run).

The card is huggingface_hub's ModelCard: YAML metadata the Hub indexes (base model, data set, library, tags) and a
body that says how the model was trained, how well, and how to load it. It never holds a token or a local path
other than the run folder's own name.
"""
from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path

from ..errors import ExportError
from ..training import outputs, runs
from ..training.events import RunObserver

CARD = "README.md"  # the Hub reads a repo's card from README.md; the run folder's card has the same name
CURVE = "loss_curve.png"
REPORT = "nbkit_report.json"
_PSEUDO_IDS = ("nbkit/tiny-llama", "nbkit/instruct-mini")  # names nbkit resolves itself: not Hub repos
_FILE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet", ".txt", ".gguf")  # a file's name, not a repo
RELATION = {"lora": "adapter", "merged": "finetune", "gguf": "quantized"}


def run_facts(folder: str | Path) -> dict:
    """What the card is made of: the marker, the report (if the run got that far) and the adapters' config."""
    folder = Path(folder)
    marker = outputs.read_marker(folder)
    if marker is None or not marker.get("config"):
        raise ExportError(f"{folder} is not an nbkit run folder (no nbkit_run.json with settings): pass the folder "
                          "a run wrote, e.g. outputs/<model>-<date>-<time>.")
    try:
        report = json.loads((folder / REPORT).read_text())
    except (OSError, ValueError):
        report = {}
    if not report.get("losses"):  # a run trained stage by stage (the tier notebooks): its newest checkpoint's log
        report = {**_checkpoint_log(folder), **report}
    return {"folder": folder, "marker": marker, "report": report, "config": marker["config"]}


def _checkpoint_log(folder: Path) -> dict:
    newest, _ = outputs.newest_checkpoint(folder)
    try:
        history = json.loads((newest / "trainer_state.json").read_text())["log_history"]
    except (TypeError, OSError, ValueError, KeyError):
        return {}
    return {"losses": [(h["step"], h["loss"]) for h in history if "loss" in h],
            "eval_losses": [(h["step"], h["eval_loss"]) for h in history if "eval_loss" in h]}


def is_hub_id(name: str) -> bool:
    """A Hub repo id the Hub can link to (owner/name, not a local path nor one of nbkit's own pseudo ids)."""
    parts = str(name).split("/")
    return (len(parts) == 2 and all(parts) and name not in _PSEUDO_IDS and not Path(name).expanduser().exists()
            and not name.startswith((".", "~")) and not name.lower().endswith(_FILE_SUFFIXES))


def loss_curve(facts: dict) -> bytes | None:
    """The training (and eval) loss per step as a PNG, drawn with matplotlib's Agg backend (no display)."""
    report = facts["report"]
    losses = report.get("losses") or []
    if not losses:
        return None
    from matplotlib.figure import Figure  # a Figure without pyplot: no global state, no GUI backend

    fig = Figure(figsize=(6, 3.2), dpi=100)
    ax = fig.add_subplot()
    ax.plot([s for s, _ in losses], [v for _, v in losses], label="train loss")
    evals = report.get("eval_losses") or []
    if evals:
        ax.plot([s for s, _ in evals], [v for _, v in evals], "o-", label="eval loss")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def card_data(facts: dict, kind: str = "lora", quant: str | None = None):
    from huggingface_hub import ModelCardData

    cfg, marker = facts["config"], facts["marker"]
    backend = facts["report"].get("backend") or marker.get("config", {}).get("backend", "")
    tags = ["nbkit", *(["unsloth"] if backend == "unsloth" else []), cfg.get("quantization", ""),
            "lora", "sft", "trl"]
    extra = {"base_model_relation": RELATION[kind]} if is_hub_id(cfg["model"]) else {}
    if kind == "gguf":
        tags += ["gguf", *([quant] if quant else [])]
    return ModelCardData(
        base_model=cfg["model"] if is_hub_id(cfg["model"]) else None,
        datasets=[cfg["dataset"]] if is_hub_id(cfg.get("dataset", "")) else None,
        library_name={"lora": "peft", "merged": "transformers"}.get(kind),
        pipeline_tag="text-generation", tags=[t for t in tags if t], **extra)


def _fmt(value, spec: str = ".4f", none: str = "—") -> str:
    return none if value is None else format(value, spec)


def _data_line(cfg: dict, marker: dict) -> str:
    source = cfg.get("dataset", "")
    if source == "nbkit/instruct-mini":
        name = "nbkit's embedded instruct-mini data set (325 rows, CC0)"
    elif is_hub_id(source):
        name = f"[{source}](https://huggingface.co/datasets/{source})"
    else:
        name = f"a local file (`{Path(source).name}`)"
    rows = marker.get("data_rows")
    counted = f"; {rows} training rows" if rows else ""
    limit = f", the first {cfg['max_samples']} rows" if cfg.get("max_samples") else ""
    held = f", {cfg['eval_fraction']:.0%} held out for eval" if cfg.get("eval_fraction") else ""
    return f"{name}{limit}{held}{counted}"


def _settings_table(cfg: dict) -> str:
    skip = {"output_dir", "extra"}
    rows = [f"| `{k}` | `{v}` |" for k, v in cfg.items() if k not in skip]
    rows += [f"| `extra.{k}` | `{v}` |" for k, v in (cfg.get("extra") or {}).items()]
    return "| setting | value |\n|---|---|\n" + "\n".join(rows)


def _how_to_load(facts: dict, kind: str, repo_id: str | None, gguf_files: list[str]) -> str:
    cfg = facts["config"]
    folder = facts["folder"].resolve()
    # nbkit's tiny model is built on first use, wherever nbkit is installed: its id, resolved, names it anywhere
    base = (f"resolve_model({cfg['model']!r})" if cfg["model"] == "nbkit/tiny-llama" else repr(cfg["model"]))
    imports = "from nbkit.loading.models import resolve_model\n" if cfg["model"] == "nbkit/tiny-llama" else ""
    if kind == "gguf":
        names = gguf_files or ["<model>-<quant>.gguf"]
        quant = names[0].rsplit("-", 1)[-1].removesuffix(".gguf").upper()
        where = (f"ollama run hf.co/{repo_id}:{quant}" if repo_id else
                 f"cd {folder / 'gguf'} && ollama create my-model -f Modelfile && ollama run my-model")
        return (f"With [Ollama](https://ollama.com):\n\n```bash\n{where}\n```\n\nWith llama.cpp:\n\n```bash\n"
                f"llama-cli -m {names[0]} -cnv\n```\n")
    if kind == "merged":
        where = repo_id or str(folder / "merged_16bit")
        return ("With transformers (the adapters are merged into 16-bit weights):\n\n```python\nfrom transformers "
                f"import AutoModelForCausalLM, AutoTokenizer\n\nmodel = AutoModelForCausalLM.from_pretrained({where!r})"
                f"\ntokenizer = AutoTokenizer.from_pretrained({where!r})\n```\n")
    adapters = repo_id or str(folder / "lora_adapters")
    return ("With transformers + peft (the base model, then these LoRA adapters on it):\n\n```python\n"
            f"{imports}from peft import PeftModel\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
            f"base = AutoModelForCausalLM.from_pretrained({base})\n"
            f"model = PeftModel.from_pretrained(base, {adapters!r})\n"
            f"tokenizer = AutoTokenizer.from_pretrained({adapters!r})\n"
            "messages = [{\"role\": \"user\", \"content\": \"What is the capital of France?\"}]\n"
            "inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors=\"pt\", "
            "return_dict=True)\n"
            "print(tokenizer.decode(model.generate(**inputs, max_new_tokens=32)[0][inputs[\"input_ids\"].shape[1]:], "
            "skip_special_tokens=True))\n```\n")


def build(run_dir: str | Path, kind: str = "lora", repo_id: str | None = None, gguf_files=(),
          facts: dict | None = None):
    """The ModelCard of a run folder, for `kind` (lora, merged, gguf) at `repo_id` (None: the local folder)."""
    from huggingface_hub import ModelCard

    facts = facts or run_facts(run_dir)
    cfg, marker, report = facts["config"], facts["marker"], facts["report"]
    gguf_files = list(gguf_files)
    quant = gguf_files[0].rsplit("-", 1)[-1].removesuffix(".gguf") if gguf_files else None
    data = card_data(facts, kind, quant)
    what = {"lora": "LoRA adapters", "merged": "merged 16-bit weights", "gguf": f"GGUF ({quant or '?'})"}[kind]
    base = f"[{cfg['model']}](https://huggingface.co/{cfg['model']})" if is_hub_id(cfg["model"]) else \
        f"`{cfg['model']}` (a local model)"
    losses, evals = report.get("losses") or [], report.get("eval_losses") or []
    peak = report.get("peak_vram_gib")
    memory = (f"{peak:.2f} GiB reserved ({_fmt(report.get('peak_allocated_gib'), '.2f')} GiB allocated)" if peak
              else "— (CPU run)")
    lines = [
        f"# {Path(repo_id).name if repo_id else facts['folder'].name}", "",
        f"{what} of {base}, fine-tuned with nbkit "
        f"({'Unsloth' if report.get('backend') == 'unsloth' else report.get('backend') or 'transformers'} backend, "
        f"{cfg.get('quantization')} LoRA, TRL's SFTTrainer). Run state: {runs.describe(marker)}.", "",
        "## How to load it", "", _how_to_load(facts, kind, repo_id, gguf_files),
        "## Training data", "", _data_line(cfg, marker), "",
        "## Results", "",
        "| | |\n|---|---|",
        f"| steps | {report.get('steps', marker.get('step'))} of {report.get('total_steps', marker.get('total'))} |",
        f"| final train loss | {_fmt(losses[-1][1] if losses else None)} (first {_fmt(losses[0][1] if losses else None)}) |",
        f"| final eval loss | {_fmt(evals[-1][1] if evals else None)} |",
        f"| tokens/s | {_fmt(report.get('tokens_per_second'), ',.0f')} over {_fmt(report.get('train_seconds'), '.1f')} s "
        f"({report.get('tokens', '—')} tokens) |",
        f"| GPU | {marker.get('gpu') or '—'} |",
        f"| peak memory | {memory} |", "",
    ]
    if (facts["folder"] / CURVE).exists():
        lines += [f"![loss curve]({CURVE})", ""]
    if report.get("sample_after") is not None:
        lines += ["## Answers before and after", "", f"Prompt: *{report.get('prompt') or 'What is the capital of France?'}*", "",
                  f"- before: `{report.get('sample_before')!r}`", f"- after: `{report.get('sample_after')!r}`", ""]
    lines += ["## Training settings", "", _settings_table(cfg), ""]
    return ModelCard(f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(lines))


def _write_bytes_atomic(path: Path, payload: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".nbkit-tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _ours_or_free(folder: Path, name: str, marker: dict) -> bool:
    return not (folder / name).exists() or name in marker.get("written", [])


def write_card(run_dir: str | Path) -> Path:
    """Write the run folder's card (README.md) and loss curve (loss_curve.png), replacing only nbkit's own."""
    facts = run_facts(run_dir)
    folder, marker = facts["folder"], facts["marker"]
    for name in (CARD, CURVE):
        if not _ours_or_free(folder, name, marker):
            raise ExportError(f"{folder / name} is there and nbkit did not write it, so the model card was not "
                              "written. Move that file away and run `nbkit card` again.")
    png = loss_curve(facts)
    if png:
        _write_bytes_atomic(folder / CURVE, png)
        runs.note(folder, written=CURVE)
    card = build(folder, facts=facts)
    outputs.write_text_atomic(folder / CARD, str(card))
    runs.note(folder, written=CARD)
    return folder / CARD


class CardWriter(RunObserver):
    """Writes the run folder's card when the run has saved (the "done" phase), with what only the running process
    knows recorded in the marker first: the GPU and the training rows. A card that cannot be written is a line,
    never a failed run."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.rows: int | None = None

    def epoch_planned(self, plan) -> None:
        self.rows = plan.rows

    def phase_changed(self, phase: str, detail: str = "") -> None:
        if phase != "done" or not (self.folder / REPORT).exists():
            return
        try:
            runs.note(self.folder, gpu=_gpu_name(), **({"data_rows": self.rows} if self.rows else {}))
            write_card(self.folder)
        except Exception as exc:  # noqa: BLE001 — the trained run is saved; the card can be made later
            print(f"nbkit: the model card was not written ({exc}); make it later with nbkit card {self.folder}")


def _gpu_name() -> str:
    import torch

    if not torch.cuda.is_available():
        return "CPU"
    count = torch.cuda.device_count()
    name = torch.cuda.get_device_name(0)
    return f"{count} × {name}" if count > 1 else name
