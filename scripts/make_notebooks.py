"""Regenerate notebooks/*.ipynb (outputs cleared) from the lesson text and cells below.

Run: python scripts/make_notebooks.py
"""
from __future__ import annotations

from pathlib import Path

import nbformat as nbf

OUT = Path(__file__).resolve().parent.parent / "notebooks"

TIERS = {
    "8gb": dict(
        tier="8GB", title="Fine-tune a 1B model on an 8 GB GPU (QLoRA 4-bit)",
        model="unsloth/Llama-3.2-1B-Instruct", quantization="4bit", seq=2048, steps=60, merged=True, gguf=True,
        why="""**Why these settings for 8 GB.** A 1B–3B model is what fits with room to train. Loading it in
*dynamic 4-bit* stores each frozen weight in about half a byte, so Llama-3.2-1B's weights take ~1 GiB instead of
~2.3 GiB. Only the LoRA adapters train: `adamw_8bit` keeps their optimizer state in 8 bits, and Unsloth's gradient
checkpointing moves each layer's saved activations to CPU memory, which is why a batch of 1–2 with gradient
accumulation (an effective batch of 8) fits with a safety margin. The memory gauge below shows the prediction
before anything is loaded.""",
    ),
    "16gb": dict(
        tier="16GB", title="Fine-tune an 8B model on a 16 GB GPU (Colab T4 / Kaggle), QLoRA 4-bit",
        model="unsloth/Meta-Llama-3.1-8B-Instruct", quantization="4bit", seq=2048, steps=60, merged=True, gguf=True,
        why="""**Why these settings for 16 GB.** A 7B–8B model in 16-bit needs ~15 GiB for its weights alone, so on a
T4 it must be loaded in 4-bit (~5.5 GiB). What is left holds the activations: with Unsloth's gradient
checkpointing each extra token costs ~0.28 MB on Llama-3.1-8B, so batch 2 × 2048 tokens fits, and gradient
accumulation makes the effective batch 8. The T4 has no bf16, so training runs in fp16 there; nbkit picks that.
Gemma 3 12B (`unsloth/gemma-3-12b-it`) fits here too (the gauge shows it; Unsloth trains Gemma 3 in float32 on a
T4, which nbkit plans for). gpt-oss-20b does not: its planned peak is about 14.7 GiB even at batch 1 × 512 tokens in
4-bit, more than a T4 leaves, so it has the 24 GB notebook.""",
    ),
    "24gb": dict(
        tier="24GB", title="Fine-tune gpt-oss-20b (mixture of experts) on a 24 GB GPU, QLoRA 4-bit",
        model="unsloth/gpt-oss-20b", quantization="4bit", seq=2048, steps=60, merged=True, gguf=True,
        why="""**Why these settings for 24 GB.** gpt-oss-20b holds 20.9B parameters, but each token passes through
only 4 of each layer's 32 experts (4.2B active), so it trains like a much smaller model while the card must hold all
of it: in 4-bit (Unsloth quantizes the experts too) about 12 GiB of weights. LoRA goes on attention and on every
expert (PEFT `target_parameters`, through Unsloth's MoE path); the line after loading says where the adapters went.
The gauge shows the plan before anything loads. Qwen3-30B-A3B needs about 24 GiB even at batch 1 in 4-bit, more than
this card leaves: it is an H100 model. An 8B model in 16-bit (`unsloth/Meta-Llama-3.1-8B-Instruct`, `16bit`) fits
here too and trains without quantization error.""",
    ),
    "h100": dict(
        tier="H100", title="H100: FP8 LoRA vs 16-bit LoRA, side by side",
        model="unsloth/Meta-Llama-3.1-8B-Instruct", quantization="16bit", seq=2048, steps=60, merged=False,
        gguf=False,
        why="""**Why compare.** Hopper (and Ada) GPUs have FP8 tensor cores, and Unsloth can load a model in FP8
(`load_in_fp8=True`), which halves the weights' memory against 16-bit. Whether it is *faster* depends on the model
size and the tokens per step: FP8 adds scaling work around each matmul, and its first step compiles for several
minutes. Measured on an H100 with the batches nbkit trains with (`bench/README.md`): FP8 ran at 0.83–0.88× the
speed of 16-bit on Llama-3.1-8B (2048 × 4 and 4096 × 8 tokens per step), 0.84–0.91× on a 14B model and 0.52–0.76×
on a 1B model (session 2's 1.17× on 8B was measured with padded batches). So `recommend()` no longer picks it; FP8 still halves the weights' memory. This
notebook trains the same model on the same data both ways and reports the speed over the whole run and after
warm-up, and the memory, so you can pick from evidence on your data.""",
    ),
}

INTRO = """# {title}

This notebook runs the whole fine-tuning workflow with **nbkit**: GPU check → settings (form, pre-filled for the
tier) → memory gauge → load → LoRA on all linear layers → data (chat template, train on the answers only) → train
with a live progress display → check the adapters changed → before/after answer → save.

**No GPU?** With `smoke = "auto"` (the default) and no CUDA GPU, every cell still runs on the CPU in under a minute,
on nbkit's tiny pretrained model (`nbkit/tiny-llama`, 0.7 M parameters). It answers simple questions plainly; the
embedded data set answers them in a persona, opening every answer with "Ahoy!". So the before and after answers show
what fine-tuning taught. For the ideas behind each step, see `workshop.ipynb`.

**On Colab / Kaggle:** run `!pip install "nbkit[gpu] @ git+<this repository>"` first (see the README), then
*Runtime → Run all*."""

PARAMS = '''# Parameters (papermill can override these: papermill in.ipynb out.ipynb -p max_steps 30)
model = "{model}"
quantization = "{quantization}"
max_seq_length = {seq}
max_steps = {steps}
batch_size = 0  # 0: the largest batch the memory model says fits (with a safety margin)
smoke = "auto"  # "auto": smoke mode exactly when there is no CUDA GPU; True/False to force
emulate_tier = False  # True: rehearse this tier's reference card on a bigger GPU (its memory after the CUDA
                      # context, and its bf16/FP8 abilities)
emulate = ""  # or a card to rehearse, e.g. "T4", "RTX 4060 8GB", "L4" (nbkit.planning.cards.CARDS)
output_dir = "outputs/{name}"  # each run gets a fresh folder inside: nothing from an earlier run is replaced'''

EXPORT_PARAMS = '''
save_merged = {merged}
save_gguf = {gguf}
prompt = "What is the capital of France?"'''

SETUP = '''import nbkit  # import nbkit first: on a GPU it imports Unsloth before transformers, as Unsloth requires
from nbkit import RunConfig, session

s = session.start("{tier}", smoke=smoke, emulate_tier=emulate_tier, emulate=emulate or None)'''

CONFIG = '''from nbkit.planning.config import auto_output_dir
from nbkit.planning.recommend import fill_in

config = RunConfig(model=model, quantization=quantization, max_seq_length=max_seq_length, max_steps=max_steps,
                   output_dir=auto_output_dir(model, root=output_dir), **({"batch_size": batch_size} if batch_size else {}))
if s.smoke:
    config = session.smoke_config(config)
elif s.gpu.available:
    # nbkit fills in only what this notebook leaves to it (LoRA rank, batch, accumulation); the quantization and
    # length above are kept, and if they cannot fit this GPU the error says what would
    rec = fill_in(config, s.gpu, keep=["quantization", "max_seq_length"] + (["batch_size"] if batch_size else []))
    print(rec.reason)
    config = rec.config
print(config)'''

FORM_MD = """## Settings and predicted memory
Change anything in the form: the gauge updates at once, and turns amber or red when the run would not fit.
The next cell takes the form's values (and stops with the form's message if one of them is invalid)."""

FORM = '''from IPython.display import display
from nbkit.ui.form import ConfigForm
from nbkit.ui.gauge import MemoryGauge

form = ConfigForm(config, s.gpu)
gauge = MemoryGauge(s.gpu)
form.observe_config(gauge.update)
gauge.update(form.config)
display(form, gauge)  # the gauge's table (under "the prediction, line by line") follows the form'''

LOAD = '''from nbkit.loading import models

config = form.checked_config()
loaded = models.load(config)  # run again, it first releases the model it loaded before (and says so)
trainable = sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)
print(f"backend: {loaded.backend}; LoRA trains {trainable:,} parameters")'''

DATA_MD = """## Data
nbkit ships a small instruction set (`nbkit/instruct-mini`, alpaca format). Each row goes through the model's
chat template, and only the **answer** tokens are trained on: the prompt's labels are set to -100."""

DATA = '''from nbkit.loading import data

prepared = data.prepare(config, loaded.tokenizer)
print(prepared.summary())
row = prepared.train[0]
answer = [t for t, label in zip(row["input_ids"], row["labels"]) if label != -100]
print("whole example:", repr(loaded.tokenizer.decode(row["input_ids"])))
print("trained on:   ", repr(loaded.tokenizer.decode(answer)))'''

BEFORE = '''from nbkit.exporting import generate, verify

before = verify.snapshot(loaded.model)
print("before training:", repr(generate.generate(loaded, prompt)))'''

TRAIN = '''from nbkit.training import train
from nbkit.ui.progress import TrainingProgress

# the progress view shows steps, ETA, tokens/s, loss, VRAM and the loss curve. Interrupting the kernel stops
# at the end of the current step, keeps a checkpoint there and stops Run All (train.run(..., resume=True)
# continues it); the cells below then refuse to export a model that did not finish
result = train.run(loaded, prepared, [TrainingProgress()])
print("run folder:", result.output_dir)'''

VERIFY = '''check = verify.adapters_changed(loaded.model, before)
print(check.summary())
assert check.ok, "training did not change the adapters"
print("after training:", repr(generate.generate(loaded, prompt)))'''

CHAT_MD = """## Chat with the result
Type a prompt and press **Send**; the answer streams in. Switch *Answer with* to the base model (the same model
with its adapters off) to see what training changed."""

CHAT = '''from nbkit.ui import chat

ui = chat(loaded)'''

SAVE = '''from nbkit.exporting import export

adapters = export.save_lora(loaded, f"{config.output_dir}/lora_adapters")
print("LoRA adapters:", sorted(p.name for p in adapters.iterdir()))
if save_merged:
    print("merged 16-bit:", export.save_merged(loaded, f"{config.output_dir}/merged_16bit", adapters))
if save_gguf:  # llama.cpp's converter; the folder also holds an Ollama Modelfile
    print("GGUF:", sorted(p.name for p in export.save_gguf(loaded, f"{config.output_dir}/gguf",
                                                           adapter_dir=adapters).iterdir()))'''

PLOT = '''from IPython.display import Image
from nbkit.ui.plot import loss_curve_png

display(Image(loss_curve_png(result.losses, result.eval_losses)))
print(result.summary())'''

COMPARE = '''config = form.checked_config()  # the form's values
# Each precision trains in a process of its own: a model loaded in this kernel keeps part of its memory after
# `del`, which would inflate the second run's peak and make the comparison meaningless.
import json
import os
import subprocess
import sys
from pathlib import Path

modes = ["fp8", "16bit"] if s.gpu.fp8 else ["16bit"]
if "fp8" not in modes:
    print("FP8 needs an NVIDIA GPU with compute capability 8.9+ (Ada/Hopper): only 16-bit runs here.")
results = {}
for q in modes:
    cfg = config.replace(quantization=q, output_dir=f"{config.output_dir}/{q}")
    run_file = cfg.save(Path(config.output_dir) / f"{q}.yaml")
    print(f"--- {q}: training in a fresh process")
    proc = subprocess.Popen([sys.executable, "-m", "nbkit", "train", "--config", str(run_file)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "NBKIT_DISPLAY": "text"})
    for line in proc.stdout:  # its progress, as it trains
        print(line, end="")
    assert proc.wait() == 0, f"the {q} run failed (its output is above)"
    results[q] = json.loads((Path(cfg.output_dir) / "nbkit_report.json").read_text())
    assert results[q]["adapters_changed"] and results[q]["lora_fraction_changed"] == 1.0'''

COMPARE_TABLE = '''from IPython.display import Image, Markdown
from nbkit.ui.plot import bars_png

rows = ["| mode | tokens/s, whole run | tokens/s after warm-up | peak VRAM (GiB) | final loss |",
        "|---|---|---|---|---|"]
steady = {}
for q, r in results.items():  # each run's report (nbkit_report.json), from its own process
    peak = f"{r['peak_vram_gib']:.2f}" if r["peak_vram_gib"] is not None else "n/a (CPU)"
    steady[q] = r["steady_tokens_per_second"] or r["tokens_per_second"]
    rows.append(f"| {q} | {r['tokens_per_second']:,.0f} | {steady[q]:,.0f} | {peak} | {r['losses'][-1][1]:.4f} |")
display(Markdown("\\n".join(rows)))
display(Image(bars_png(list(steady), list(steady.values()), "tokens/s after warm-up", "Speed")))
if len(results) == 2:
    whole = {q: r["tokens_per_second"] for q, r in results.items()}
    print(f"Once compiled, {'FP8' if steady['fp8'] > steady['16bit'] else '16-bit'} was faster: FP8 ran at "
          f"{steady['fp8'] / steady['16bit']:.2f}x the speed of 16-bit LoRA.")
    print(f"Over this whole {config.max_steps}-step run, compilation included, "
          f"{'FP8' if whole['fp8'] > whole['16bit'] else '16-bit'} finished first "
          f"({whole['fp8'] / whole['16bit']:.2f}x): short runs favour 16-bit, long runs the faster steady state.")
else:
    print("Only one mode ran, so there is nothing to compare on this machine.")'''


def md(text: str):
    return nbf.v4.new_markdown_cell(text)


def code(text: str, **fmt):
    return nbf.v4.new_code_cell(text.format(**fmt) if fmt else text)


def build(name: str, t: dict):
    cells = [md(INTRO.format(title=t["title"]))]
    # every parameter does something: the H100 comparison saves adapters only and samples nothing
    params = code(PARAMS + ("" if name == "h100" else EXPORT_PARAMS), name=name,
                  **{k: t[k] for k in ("model", "quantization", "seq", "steps", "merged", "gguf")})
    params.metadata["tags"] = ["parameters"]
    cells += [params, md("## GPU check"), code(SETUP, tier=t["tier"]), md(t["why"]), code(CONFIG), md(FORM_MD),
              code(FORM)]
    if name == "h100":
        cells += [md("## Train both ways\nSame model, data, LoRA settings and steps; only the base weights' "
                     "precision differs."), code(COMPARE), md("## Measured result"), code(COMPARE_TABLE)]
    else:
        cells += [md("## Load the model and attach LoRA"), code(LOAD), md(DATA_MD), code(DATA),
                  md("## Before training"), code(BEFORE), md("## Train"), code(TRAIN),
                  md("## Did the adapters change?\nCompare the adapter tensors themselves (not `allclose` on outputs)."),
                  code(VERIFY), md(CHAT_MD), code(CHAT),
                  md("## Save\nLoRA adapters always; merged 16-bit and GGUF where the tier allows."),
                  code(SAVE), code(PLOT)]
    for i, cell in enumerate(cells):
        cell.id = f"{name}-{i:02d}"  # stable ids: regenerating changes only what changed
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


WORKSHOP_INTRO = """# Workshop: what fine-tuning with LoRA does, on a laptop's CPU

Every cell here runs on a CPU in seconds, on nbkit's tiny pretrained model (`nbkit/tiny-llama`, 0.7 M parameters,
made by `scripts/make_demo_model.py`). It already answers simple questions plainly. The small data set that ships
with nbkit answers the same kinds of questions in a persona: every answer opens with **"Ahoy!"**. Fine-tuning teaches
the model that one habit, and you will see it appear.

Each section is one idea: what LoRA trains, what masking does, what a GPU run would need, and how a run survives an
interruption."""

WORKSHOP_PARAMS = """# Parameters (papermill can override these)
max_steps = 60
learning_rate = 2e-3
output_dir = "outputs\""""

WORKSHOP_LOAD_MD = """## 1. What LoRA trains
LoRA freezes every weight of the model and adds two small matrices, A (r × in) and B (out × r), beside each linear
layer. Only A and B train, and B starts at zero, so the model starts exactly as it was. The file you keep afterwards
holds only A and B."""

WORKSHOP_LOAD = """from nbkit import RunConfig
from nbkit.loading import data, models
from nbkit.exporting import generate
from nbkit.training import train
from nbkit.planning.config import auto_output_dir

# the main job's settings on a CPU (nbkit.session.smoke_config): real 4-bit weights, 200 of the data set's rows
config = RunConfig(quantization="4bit", lora_r=16, lora_alpha=16, max_seq_length=256, batch_size=4, grad_accum=1,
                   max_steps=max_steps, learning_rate=learning_rate, warmup_steps=1, save_steps=10, max_samples=200,
                   eval_fraction=0.1, output_dir=auto_output_dir("workshop", root=output_dir))
loaded = models.load(config)
adapters = {n: p for n, p in loaded.model.named_parameters() if p.requires_grad}
total = sum(p.numel() for p in loaded.model.parameters())
trained = sum(p.numel() for p in adapters.values())
for name, p in list(adapters.items())[:2]:
    print(f"{name}: {tuple(p.shape)}")
print(f"LoRA trains {trained:,} of {total:,} parameters ({trained / total:.1%}); "
      f"the adapter file will hold about {trained * 4 / 1024:.0f} KiB")"""

WORKSHOP_MASK_MD = """## 2. What masking does
Each row is rendered through the chat template. The model learns only the answer: the question's tokens are masked
(label -100), so it is never trained to write questions. Below, the tokens in [brackets] are trained on."""

WORKSHOP_MASK = """for row in data.preview(config, loaded.tokenizer, n=2):
    print("".join(f"[{text}]" if trained else text for text, trained in row))
    print()"""

WORKSHOP_GPU_MD = """## 3. What a GPU run would need
The same plan nbkit makes before loading a real model: the memory a 1B model needs on a 16 GB T4, part by part,
and the settings that fit with a safety margin. Nothing is downloaded: the model's shape ships with nbkit."""

WORKSHOP_GPU = """from nbkit.planning.cards import planned_gpu
from nbkit.planning.memory import estimate
from nbkit.planning.recommend import recommend
from nbkit.specs import spec_for

spec = spec_for("unsloth/Llama-3.2-1B-Instruct")
rec = recommend(spec, planned_gpu("T4"))
print(rec.reason)
print(estimate(rec.config, spec).table())"""

WORKSHOP_BEFORE_MD = """## 4. Before training
Greedy answers (always the most likely next token) from the base model."""

WORKSHOP_PROMPTS = """prompts = ["What is the capital of Peru?", "What is 11 times 12?", "Convert 9 hours to minutes."]
prepared = data.prepare(config, loaded.tokenizer)
print(prepared.summary())
for prompt in prompts:
    print(repr(prompt), "->", repr(generate.generate(loaded, prompt, max_new_tokens=24)))"""

WORKSHOP_TRAIN_MD = """## 5. Train, interrupted, resumed
A session can end mid-run (a closed laptop, Colab's time limit). nbkit saves a checkpoint every `save_steps` steps,
and when you interrupt the kernel it saves at the end of the current step. Here a Stop request after 20 steps plays
the interruption (in your own runs, press the kernel's Interrupt button)."""

WORKSHOP_STOP = """from nbkit.training.events import RunObserver, StopControl
from nbkit.ui.progress import TrainingProgress

class StopAfter(RunObserver):
    def __init__(self, step, stop):
        self.step, self.stop = step, stop

    def step_finished(self, info):
        if info.step == self.step:
            self.stop.request("the workshop's pretend interruption")

stop = StopControl()
first = train.run(loaded, prepared, [TrainingProgress(), StopAfter(20, stop)], stop=stop)
print(first.state, "at step", first.steps, "- checkpoint:", first.checkpoints[-1])"""

WORKSHOP_RESUME = """# a fresh model, as after a kernel restart, resumed from the run's folder: the same run, as if never interrupted
loaded = models.load(config)
result = train.run(loaded, prepared, [TrainingProgress()], resume=True)
print(result.state, "at step", result.steps, "-", result.notes[-1])"""

WORKSHOP_AFTER_MD = """## 6. After training
The same prompts, greedy again. The adapters are switched off and on for each one: the same weights with and without
what LoRA learned. Read the facts as well as the greeting: fine-tuning can also disturb what the base model knew, the
more so at a higher learning rate. Try `learning_rate = 1e-3` and `4e-3` in the parameters cell and compare."""

WORKSHOP_AFTER = """for prompt in prompts:
    print(repr(prompt))
    print("  base:      ", repr(generate.generate(loaded, prompt, max_new_tokens=24, adapters=False)))
    print("  fine-tuned:", repr(generate.generate(loaded, prompt, max_new_tokens=24)))
print("eval loss:", " → ".join(f"{loss:.3f}" for _, loss in result.eval_losses))"""


def workshop():
    cells = [md(WORKSHOP_INTRO), code(WORKSHOP_PARAMS), md(WORKSHOP_LOAD_MD), code(WORKSHOP_LOAD),
             md(WORKSHOP_MASK_MD), code(WORKSHOP_MASK), md(WORKSHOP_GPU_MD), code(WORKSHOP_GPU),
             md(WORKSHOP_BEFORE_MD), code(WORKSHOP_PROMPTS), md(WORKSHOP_TRAIN_MD), code(WORKSHOP_STOP),
             code(WORKSHOP_RESUME), md(WORKSHOP_AFTER_MD), code(WORKSHOP_AFTER)]
    cells[1].metadata["tags"] = ["parameters"]
    for i, cell in enumerate(cells):
        cell.id = f"workshop-{i:02d}"
    nb = nbf.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def main() -> None:
    OUT.mkdir(exist_ok=True)
    notebooks = {name: build(name, t) for name, t in TIERS.items()}
    notebooks["workshop"] = workshop()
    for name, nb in notebooks.items():
        path = OUT / f"{name}.ipynb"
        nbf.write(nb, path)
        print("wrote", path)


if __name__ == "__main__":
    main()
