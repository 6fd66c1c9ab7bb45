"""Shared by the GPU scripts: random-weight models of real architectures, synthetic batches, measurement."""
from __future__ import annotations

import gc
import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results"
ARCHS = {"1b": "unsloth/Llama-3.2-1B-Instruct", "3b": "unsloth/Llama-3.2-3B-Instruct",
         "8b": "unsloth/Meta-Llama-3.1-8B-Instruct", "32b": "unsloth/Qwen2.5-32B-Instruct-bnb-4bit",
         "70b": "unsloth/Llama-3.3-70B-Instruct-bnb-4bit",
         # the memory grid's other architectures (bench/grid.py)
         "qwen2.5-7b": "unsloth/Qwen2.5-7B-Instruct", "qwen2.5-14b": "unsloth/Qwen2.5-14B-Instruct",
         "qwen3-8b": "unsloth/Qwen3-8B", "mistral-7b": "unsloth/mistral-7b-instruct-v0.3",
         "gemma2-9b": "unsloth/gemma-2-9b-it", "phi3.5": "unsloth/Phi-3.5-mini-instruct"}


MODELS = "/tmp/nbkit-models"


def random_model_path(arch: str, root: str = MODELS) -> Path:
    return Path(root) / arch


def prequantized_path(arch: str, root: str = MODELS, storage: str = "bfloat16") -> Path:
    return Path(root) / (f"{arch}-bnb4" if storage == "bfloat16" else f"{arch}-bnb4-{storage}")


def _new_checkpoint(target: Path, arch: str):
    """(spec, tokenizer) for a checkpoint of `arch` to be built in `target`, or None when it is already there."""
    from nbkit.specs import spec_for
    from nbkit.loading.tiny import build_tokenizer

    if (target / "config.json").exists():
        return None
    target.mkdir(parents=True, exist_ok=True)
    return spec_for(ARCHS.get(arch, arch)), build_tokenizer(target)


def plain_spec(model: str):
    """The spec of `model` as the benchmarks' checkpoints load: random weights saved in bf16 (or pre-quantized by
    prequantized_model), quantized to plain 4-bit. A Hub id's spec otherwise plans for Unsloth's dynamic quant of
    it (nbkit.specs.as_unsloth_loads_it), which these runs never load."""
    from dataclasses import replace

    from nbkit.specs import spec_for

    return replace(spec_for(model), dynamic_4bit="")


def random_model(arch: str, root: str = MODELS) -> str:
    """Save a random-weight model with `arch`'s real config and model class (Llama, Qwen2 with its q/k/v biases,
    Qwen3 with its q/k norms, Mistral, Gemma 2 with its extra norms and soft-capping): speed and memory don't
    depend on weight values.

    The tokenizer is nbkit's tiny SentencePiece one: its ids fit any vocabulary, and the model keeps its real vocab size
    so logits cost what they cost in the real model.
    """
    import torch
    from transformers import AutoModelForCausalLM

    target = random_model_path(arch, root)
    new = _new_checkpoint(target, arch)
    if new is None:
        return str(target)
    spec, tok = new
    config = arch_config(spec, tok)
    t = time.time()
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target)
    tok.save_pretrained(target)
    del model
    gc.collect()
    torch.cuda.empty_cache()
    print(f"[random_model] {arch}: {spec.total_params / 1e9:.2f}B params saved in {time.time() - t:.0f}s", flush=True)
    return str(target)


def arch_config(spec, tok, **extra):
    """The transformers config of `spec`'s own model type, with the shape nbkit's spec reads."""
    from transformers import AutoConfig

    if spec.model_type == "llama":
        extra.setdefault("rope_theta", 500000.0)
    return AutoConfig.for_model(
        spec.model_type, vocab_size=spec.vocab_size, hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size, num_hidden_layers=spec.num_hidden_layers,
        num_attention_heads=spec.num_attention_heads, num_key_value_heads=spec.num_key_value_heads,
        head_dim=spec.head_dim, tie_word_embeddings=spec.tie_word_embeddings, max_position_embeddings=8192,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        dtype="bfloat16", **extra)


def prequantized_model(arch: str, root: str = MODELS, storage: str = "bfloat16") -> str:
    """A random-weight checkpoint of `arch`'s shape saved already quantized (bitsandbytes NF4, double quantization),
    as the Hub's "-bnb-4bit" uploads are, built one projection at a time on the GPU: a 70B model's bf16 checkpoint
    (140 GB) would not fit the disk, its 4-bit one (about 39 GB) does. `storage` is the packed weights' dtype:
    bfloat16 as sharding needs, uint8 as the one-GPU uploads have it."""
    import torch
    from bitsandbytes.functional import quantize_4bit
    from safetensors.torch import save_file
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    target = prequantized_path(arch, root, storage)
    new = _new_checkpoint(target, arch)
    if new is None:
        return str(target)
    spec, tok = new
    quant_storage = getattr(torch, storage)
    quant = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                               bnb_4bit_compute_dtype=torch.bfloat16, bnb_4bit_quant_storage=quant_storage)
    config = arch_config(spec, tok)
    with torch.device("meta"):  # names and shapes of the real model class, nothing allocated
        skeleton = AutoModelForCausalLM.from_config(config)
    linears = {f"{name}.weight" for name, m in skeleton.named_modules()
               if isinstance(m, torch.nn.Linear) and ".layers." in name}
    t = time.time()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    gen = torch.Generator(device=device).manual_seed(0)
    shard, size, weight_map, files = {}, 0, {}, 0

    def flush():
        nonlocal shard, size, files
        if shard:
            files += 1
            name = f"model-{files:05d}.safetensors"
            save_file(shard, str(target / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in shard})
            shard, size = {}, 0

    def put(name, tensor):
        nonlocal size
        shard[name] = tensor.contiguous().cpu()
        size += tensor.numel() * tensor.element_size()
        if size > 4 * 1024**3:
            flush()

    for name, param in skeleton.state_dict().items():
        if name == "lm_head.weight" and spec.tie_word_embeddings:
            continue
        if name in linears:
            weight = torch.randn(*param.shape, device=device, dtype=torch.bfloat16, generator=gen) * 0.02
            packed, state = quantize_4bit(weight, blocksize=64, compress_statistics=True, quant_type="nf4",
                                          quant_storage=quant_storage)
            put(name, packed)
            for key, value in state.as_dict(packed=True).items():
                put(f"{name}.{key}", value)
        elif name.endswith(".bias"):
            put(name, torch.zeros(*param.shape, dtype=torch.bfloat16))
        elif "embed_tokens" in name or "lm_head" in name:
            put(name, torch.randn(*param.shape, device=device, dtype=torch.bfloat16, generator=gen) * 0.02)
        else:  # norms
            put(name, torch.ones(*param.shape, dtype=torch.bfloat16))
    flush()
    total = sum((target / f).stat().st_size for f in set(weight_map.values()))
    (target / "model.safetensors.index.json").write_text(json.dumps(
        {"metadata": {"total_size": total}, "weight_map": weight_map}, indent=1))
    config.quantization_config = quant.to_dict()
    config.save_pretrained(target)
    tok.save_pretrained(target)
    print(f"[prequantized_model] {arch}: {spec.total_params / 1e9:.1f}B params, {total / 1e9:.1f} GB in "
          f"{time.time() - t:.0f}s", flush=True)
    return str(target)


def synthetic_data(n_rows: int, seq: int, vocab: int = 1000, seed: int = 0):
    """Rows of exactly `seq` tokens, every one labelled: the worst case the memory model plans for."""
    from nbkit.training.probe import synthetic_rows

    return synthetic_rows(n_rows, seq, vocab, seed)


def mixed_data(n_rows: int, seq: int, vocab: int = 1000, seed: int = 0):
    """Rows as real instruction data comes: lognormal lengths (median 400 tokens, about 5% longer than 2048 and
    cut to `seq`), the first 40% of each row a prompt that is masked out of the loss."""
    import random

    import datasets

    from nbkit.loading.data import IGNORE, PreparedData

    rng = random.Random(seed)
    ids, labels = [], []
    for _ in range(n_rows):
        n = max(16, min(seq, int(rng.lognormvariate(5.99, 1.0))))  # e^5.99 = 400
        row = [rng.randrange(10, vocab) for _ in range(n)]
        cut = int(0.4 * n)
        ids.append(row)
        labels.append([IGNORE] * cut + row[cut:])
    ds = datasets.Dataset.from_dict({"input_ids": ids, "attention_mask": [[1] * len(r) for r in ids],
                                     "labels": labels})
    return PreparedData(ds, None, "mixed", n_rows)


def make_data(kind: str, n_rows: int, seq: int):
    """'uniform' (every row exactly `seq` tokens: the worst case memory plans for) or 'mixed' (real lengths)."""
    return mixed_data(n_rows, seq) if kind == "mixed" else synthetic_data(n_rows, seq)


def step_timer(warmup: int = 2):
    """CUDA-synchronised step times; `steady()` is the median after `warmup` (compilation) steps. An nbkit run
    observer: pass it to train.run, or `observe(timer)` to a trainer nbkit did not build."""
    from nbkit.training.results import StepTimer

    return StepTimer(warmup)


def observe(*observers):
    """The callback that lets nbkit observers (the step timer) watch any HF Trainer: the baselines are timed by the
    very same code as nbkit's own runs."""
    from nbkit.training.events import RunEvents
    from nbkit.training.trainer_bridge import bridge

    return bridge(RunEvents(observers))


def scratch_dir(name: str) -> str:
    """A fresh, empty output folder: each nbkit run claims its own."""
    import tempfile

    return tempfile.mkdtemp(prefix=f"nbkit-{name}-")


def free_cuda() -> None:
    import torch

    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()


def gpu_used_gib() -> float:
    import torch

    free, total = torch.cuda.mem_get_info()
    return (total - free) / 1024**3


def write_json(name: str, payload) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / name
    path.write_text(json.dumps(payload, indent=2, default=str))
    out = os.environ.get("OUT")
    if out and not name.startswith("_"):  # '_' files are a child's partial results, merged by its parent  # the device tool brings back files written under $OUT
        Path(out, name).write_text(path.read_text())
    return path


def summarise(rows: list[dict], keys: tuple[str, ...], done: str) -> list[dict]:
    """Per variant over its repeats (the rows that have `done`: the others failed): the median of each figure in
    `keys`, and its min-max as `<key>_range`."""
    import statistics

    out = []
    for v in dict.fromkeys(r["variant"] for r in rows):
        finished = [r for r in rows if r["variant"] == v and done in r]
        if not finished:
            continue
        row = {"run": finished[0]["run"], "variant": v, "repeats": len(finished)}
        for key in keys:
            values = [r[key] for r in finished]
            row[key] = statistics.median(values)
            row[key + "_range"] = [min(values), max(values)]
        out.append(row)
    return out


def print_table(rows: list[dict], cols: list[str]) -> None:
    widths = {c: max(len(c), *(len(_fmt(r.get(c))) for r in rows)) for c in cols}
    print("  ".join(c.ljust(widths[c]) for c in cols))
    for r in rows:
        print("  ".join(_fmt(r.get(c)).ljust(widths[c]) for c in cols))


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.2f}"
    return "" if v is None else str(v)


def run_parser(doc: str | None, steps: int, seq: int = 2048, batch: int = 4, quant: str = "16bit"):
    """The shape arguments every GPU script takes (model architecture, quantization, rows, steps)."""
    import argparse

    ap = argparse.ArgumentParser(description=doc)
    ap.add_argument("--arch", default="1b")
    ap.add_argument("--quant", default=quant)
    ap.add_argument("--seq", type=int, default=seq)
    ap.add_argument("--batch", type=int, default=batch)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--lengths", choices=["uniform", "mixed"], default="uniform",
                    help="uniform: every row `seq` tokens; mixed: lognormal lengths as real data has")
    return ap


def emit(result: dict) -> None:
    """How a child process hands its result to the parent: one line on stdout."""
    print("RESULT " + json.dumps(result), flush=True)


def child_result(cmd: list[str], timeout: int, env: dict | None = None) -> tuple[int, dict | None, str]:
    """Run a measuring child process (one model per process) and read back what it emit()ted.
    Returns (exit code, result or None, combined output); a time-out returns 124 and what was printed."""
    import subprocess

    try:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                              timeout=timeout)
        rc, out = proc.returncode, proc.stdout
    except subprocess.TimeoutExpired as exc:
        rc, out = 124, exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
    found = [json.loads(line[7:]) for line in out.splitlines() if line.startswith("RESULT ")]
    return rc, (found[0] if found else None), out
