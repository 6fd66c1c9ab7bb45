"""Mixture-of-experts models on rehearsed cards: nbkit's plan vs the peaks, nbkit vs raw Unsloth, CUDA touched first.

python bench/moe.py [--parts nbkit-qwen3moe,raw-qwen3moe,touched-gptoss] [--layers qwen3moe=8,gptoss=4]
Each part is a process of its own, side by side on one GPU (memory only; the two Qwen3-MoE speed figures are taken
while the other parts run, and say so). Models are random weights of the curated configs (nbkit/specs/models.json)
at a reduced layer count (said in the result), saved in bf16 and quantized while loading, as Unsloth's notebooks
load a 16-bit checkpoint with load_in_4bit=True.
  nbkit-<arch>:   recommend() on the rehearsed card, then workflow.run (train, verify, after-sample, LoRA saved)
  raw-<arch>:     Unsloth's notebook recipe, same settings: FastLanguageModel 4-bit, get_peft_model with the seven
                  usual targets, SFTTrainer; tokens/s and peaks
  touched-<arch>: as nbkit-, but CUDA is touched before nbkit is imported (the allocator bullet of issue #38)
Writes bench/results/moe_device.json (and the children's logs to $OUT).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from common import MODELS, emit, mixed_data, scratch_dir, write_json

ARCH_IDS = {"qwen3moe": "unsloth/Qwen3-30B-A3B-Instruct-2507", "gptoss": "unsloth/gpt-oss-20b",
            "gemma3": "unsloth/gemma-3-4b-it", "gemma3-12b": "unsloth/gemma-3-12b-it",
            "gemma3-27b": "unsloth/gemma-3-27b-it", "mixtral": "unsloth/Mixtral-8x7B-Instruct-v0.1-bnb-4bit"}
# gpt-oss: Unsloth refuses a fused-expert checkpoint in fp16 (a T4) and asks for its pre-quantized upload, which
# this machine cannot download: the 16 GB tier's bf16 card
CARDS = {"qwen3moe": "RTX 4090 24GB", "gptoss": "RTX 4060 Ti 16GB", "gemma3": "T4", "gemma3-12b": "T4",
         "gemma3-27b": "RTX 4090 24GB", "mixtral": "A100 40GB"}


def build(arch: str, layers: int, root: str = MODELS) -> str:
    """A random-weight checkpoint of the curated config with `layers` decoder layers (0: all), bf16, under `root`."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from nbkit.specs import _curated
    from nbkit.loading.tiny import build_tokenizer

    target = Path(root) / f"{arch}-{layers or 'full'}"
    if (target / "config.json").exists():
        return str(target)
    target.mkdir(parents=True, exist_ok=True)
    tok = build_tokenizer(target)
    data = json.loads(json.dumps(_curated()[ARCH_IDS[arch]]))
    data = data.get("text_config", data) if "hidden_size" not in data else data
    data.pop("quantization_config", None)
    if layers:
        data["num_hidden_layers"] = layers
        if "layer_types" in data:
            data["layer_types"] = data["layer_types"][:layers]
    model_type = data.pop("model_type")
    config = AutoConfig.for_model(model_type, **data, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                                  pad_token_id=tok.pad_token_id, dtype="bfloat16")
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(target, max_shard_size="4GB")
    tok.save_pretrained(target)
    print(f"[build] {arch} {layers} layers: {sum(p.numel() for p in model.parameters()) / 1e9:.2f}B", flush=True)
    del model
    torch.cuda.empty_cache()
    return str(target)


def plan_for(path: str, card: str, steps: int):
    from nbkit.planning.cards import emulate
    from nbkit.planning.recommend import recommend
    from nbkit.specs import spec_for

    gpu = emulate(card)
    spec = spec_for(path)
    rec = recommend(spec, gpu)
    cfg = rec.config.replace(model=path, output_dir=scratch_dir("moe"), max_steps=steps, save_steps=0,
                             warmup_steps=1)
    return spec, rec, cfg


def part_nbkit(arch: str, path: str, steps: int, touched: bool) -> dict:
    import torch

    if touched:  # the user's own code used CUDA before nbkit was imported
        torch.zeros(1, device="cuda")
    from nbkit.loading import backend

    backend.ensure()
    from nbkit import workflow
    from nbkit.planning import allocator

    spec, rec, cfg = plan_for(path, CARDS[arch], steps)
    print(f"[plan] {spec.describe()}: {rec.reason}\n{rec.breakdown.table()}", flush=True)
    report = workflow.run(cfg, merged=False)
    out = report.to_dict()
    return {"spec": vars(spec), "describe": spec.describe(), "reason": rec.reason, "config": cfg.to_dict(),
            "predicted": rec.breakdown.as_dict(), "allocator": allocator.current(),
            "train_allocated_gib": report.train.peak_allocated_gib, "train_reserved_gib": report.train.peak_vram_gib,
            "tokens_per_second": report.train.tokens_per_second, "report": out,
            "adapter_files": sorted(p.name for p in Path(report.adapter_dir).iterdir())}


def part_raw(arch: str, path: str, steps: int, quant: str = "") -> dict:
    """Unsloth's notebook recipe on the same model and settings nbkit's plan picked (`quant` overrides its
    quantization)."""
    from unsloth import FastLanguageModel
    import torch
    from trl import SFTConfig, SFTTrainer

    from common import observe, step_timer

    spec, rec, cfg = plan_for(path, CARDS[arch], steps)
    cfg = cfg.replace(quantization=quant or cfg.quantization)
    model, tok = FastLanguageModel.from_pretrained(path, max_seq_length=cfg.max_seq_length,
                                                   load_in_4bit=cfg.quantization == "4bit", dtype=None)
    model = FastLanguageModel.get_peft_model(
        model, r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0, bias="none", random_state=cfg.seed,
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        use_gradient_checkpointing="unsloth")
    lora = sum(p.numel() for p in model.parameters() if p.requires_grad)
    load_alloc = torch.cuda.max_memory_allocated() / 1024**3
    load_reserved = torch.cuda.max_memory_reserved() / 1024**3
    data = mixed_data(steps * cfg.batch_size * cfg.grad_accum + 16, cfg.max_seq_length).train
    timer = step_timer()
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=data, callbacks=[observe(timer)],
                         args=SFTConfig(per_device_train_batch_size=cfg.batch_size, max_steps=steps,
                                        gradient_accumulation_steps=cfg.grad_accum, learning_rate=2e-4,
                                        max_length=cfg.max_seq_length, logging_steps=1, report_to="none",
                                        optim="adamw_8bit", output_dir=scratch_dir("raw"), bf16=True,
                                        warmup_steps=1, seed=cfg.seed))
    torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t
    tokens = sum(len(r) for r in data["input_ids"][:steps * cfg.batch_size * cfg.grad_accum])
    after = None
    try:  # raw Unsloth's generate after SFTTrainer.train() (issue #37 saw it fail)
        FastLanguageModel.for_inference(model)
        ids = tok("Hello", return_tensors="pt").to("cuda")
        after = tok.decode(model.generate(**ids, max_new_tokens=8)[0])
    except Exception as exc:  # noqa: BLE001 — recorded: it is what raw Unsloth does
        after = f"FAILED: {type(exc).__name__}: {str(exc)[:200]}"
    return {"lora_params": lora, "load_allocated_gib": load_alloc, "load_reserved_gib": load_reserved,
            "config": cfg.to_dict(),
            "train_allocated_gib": torch.cuda.max_memory_allocated() / 1024**3,
            "train_reserved_gib": torch.cuda.max_memory_reserved() / 1024**3,
            "tokens_per_second_wall": tokens / seconds, "steady_step_seconds": timer.steady(), "after": after}


def part_shapes(arch: str, path: str, quant: str, shapes: str) -> dict:
    """Peaks at several full-length shapes (rows of exactly seq tokens, padding-free) on the arch's rehearsed card:
    what is per token and what is fixed, beside the plan for each shape."""
    from nbkit.loading import backend

    backend.ensure()
    import torch

    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.cards import emulate
    from nbkit.planning.config import RunConfig
    from nbkit.planning.memory import estimate
    from nbkit.specs import spec_for

    from common import free_cuda, synthetic_data

    emulate(CARDS[arch])
    spec = spec_for(path)
    pairs = [tuple(int(x) for x in s.split("x")) for s in shapes.split(",")]
    cfg = RunConfig(model=path, quantization=quant, max_seq_length=max(s for s, _ in pairs), max_steps=2,
                    warmup_steps=0, save_steps=0, output_dir=scratch_dir("shapes"))
    loaded = models.load(cfg, check_memory=False)
    rows = [{"load_allocated_gib": torch.cuda.max_memory_allocated() / 1024**3,
             "load_reserved_gib": torch.cuda.max_memory_reserved() / 1024**3,
             "lora_params": sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)}]
    for seq, batch in pairs:
        free_cuda()
        loaded.config = cfg.replace(max_seq_length=seq, batch_size=batch, grad_accum=1)
        try:
            res = train.run(loaded, synthetic_data(batch * 2, seq), output_dir=scratch_dir("shape"))
            status = "ok"
        except Exception as exc:  # noqa: BLE001 — an OOM is a data point
            status, res = f"error: {type(exc).__name__}: {str(exc)[:200]}", None
        plan = estimate(loaded.config, spec, "unsloth")
        rows.append({"seq": seq, "batch": batch, "status": status, "bf16": loaded.gpu.bf16,
                     "allocated_gib": torch.cuda.max_memory_allocated() / 1024**3,
                     "reserved_gib": torch.cuda.max_memory_reserved() / 1024**3,
                     "planned_allocated_gib": plan.allocated, "planned_reserved_gib": plan.reserved,
                     "tok_s": res.tokens_per_second if res else None})
        print(json.dumps(rows[-1]), flush=True)
    return {"quant": quant, "spec": vars(spec), "shapes": rows}


def part_speed(arch: str, path: str, steps: int, quant: str) -> dict:
    """nbkit's train.run on the mixed-length rows raw Unsloth gets (part_raw), same settings: peaks and tokens/s."""
    from nbkit.loading import backend

    backend.ensure()
    import torch

    from nbkit.loading import models
    from nbkit.training import train

    from common import step_timer

    spec, rec, cfg = plan_for(path, CARDS[arch], steps)
    cfg = cfg.replace(quantization=quant)
    loaded = models.load(cfg, check_memory=False)
    load = {"load_allocated_gib": torch.cuda.max_memory_allocated() / 1024**3,
            "load_reserved_gib": torch.cuda.max_memory_reserved() / 1024**3}
    data = mixed_data(steps * cfg.batch_size * cfg.grad_accum + 16, cfg.max_seq_length)
    timer = step_timer()
    torch.cuda.reset_peak_memory_stats()
    res = train.run(loaded, data, [timer])
    return {**load, "config": cfg.to_dict(), "train_allocated_gib": res.peak_allocated_gib,
            "train_reserved_gib": res.peak_vram_gib, "tokens_per_second_wall": res.tokens_per_second,
            "steady_step_seconds": timer.steady(), "tokens": res.tokens,
            "lora_params": sum(p.numel() for p in loaded.model.parameters() if p.requires_grad)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--parts", default="nbkit-qwen3moe,raw-qwen3moe,touched-gptoss")
    ap.add_argument("--layers", default="qwen3moe=8,gptoss=4,gemma3=0")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--out", default="moe_device.json")
    ap.add_argument("--part-timeout", type=int, default=420)
    ap.add_argument("--shapes", default="2048x1,2048x4,2048x8")
    ap.add_argument("--then", default="", help="parts run one at a time after --parts (speed: alone on the GPU)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    args = ap.parse_args()
    layers = {k: int(v) for k, v in (p.split("=") for p in args.layers.split(","))}
    if args.one:
        kind, arch, path = json.loads(args.one)
        try:
            if kind.startswith("shapes"):
                result = part_shapes(arch, path, kind.split("_")[1], args.shapes)
            elif kind.startswith("speed"):
                result = part_speed(arch, path, args.steps, kind.split("_")[1])
            elif kind.startswith("raw"):
                result = part_raw(arch, path, args.steps, *kind.split("_")[1:])
            else:
                result = part_nbkit(arch, path, args.steps, touched=kind == "touched")
        except Exception as exc:  # noqa: BLE001 — the failure is the result
            import traceback

            traceback.print_exc()
            result = {"error": f"{type(exc).__name__}: {str(exc)[:600]}"}
        emit(result)
        return
    os.environ.pop("PYTORCH_CUDA_ALLOC_CONF", None)
    parts = [p.split("-", 1) for p in args.parts.split(",") if p]
    later = [p.split("-", 1) for p in args.then.split(",") if p]
    paths = {arch: build(arch, layers.get(arch, 0)) for arch in dict.fromkeys(a for _, a in parts + later)}
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    results = collect(start(parts, paths, args, out), args, layers, shared=len(parts) > 1)
    for one in later:  # alone on the GPU: their speeds are comparable
        results += collect(start([one], paths, args, out), args, layers, shared=False)
    write_json(args.out, {"args": vars(args), "results": results})


def start(parts, paths, args, out: Path) -> list:
    procs = []
    for kind, arch in parts:
        log = out / f"moe-{kind}-{arch}.log"
        cmd = [sys.executable, __file__, "--steps", str(args.steps), "--shapes", args.shapes,
               "--one", json.dumps([kind, arch, paths[arch]])]
        procs.append((kind, arch, log, subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT)))
    return procs


def collect(procs, args, layers, shared: bool) -> list[dict]:
    results = []
    for kind, arch, log, proc in procs:
        try:
            proc.wait(timeout=args.part_timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        text = log.read_text(errors="replace")
        found = [json.loads(x[7:]) for x in text.splitlines() if x.startswith("RESULT ")]
        results.append({"part": kind, "arch": arch, "layers": layers.get(arch, 0), "card": CARDS[arch],
                        "shared_gpu": shared, **(found[0] if found else {"error": "no result", "tail": text[-800:]})})
        print(json.dumps({k: v for k, v in results[-1].items() if k not in ("report", "spec", "predicted")})[:1500],
              flush=True)
    return results


if __name__ == "__main__":
    main()
