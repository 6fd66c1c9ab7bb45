"""A run survives on the GPU, with Unsloth: Stop then resume, a forced out-of-memory step, the merged 16-bit export
of a 4-bit run reloaded in plain transformers, and GGUF without GitHub. Writes session_survival_<arch>_4bit.json.

1. stop/resume: an uninterrupted run, then the same run stopped at a step boundary and resumed from its
   checkpoint by a freshly loaded model; losses and final adapters compared.
2. forced OOM: after step 3 an observer lowers this process's memory cap so that the batch no longer fits; the
   run must continue from its last step with half the batch and twice the accumulation, and finish.
3. merged from 4-bit: save_merged of the 4-bit run, reloaded with transformers in bf16; greedy tokens compared
   with the in-memory model; peak GPU memory and disk the merge needed.
4. GGUF: save_gguf with no network (Unsloth's llama.cpp download fails; the converter carried in NBKIT_TOOLS).
"""
from __future__ import annotations

import json
import shutil
import time
import traceback
from pathlib import Path

from common import RESULTS, random_model, run_parser, scratch_dir, synthetic_data, write_json

GIB = 1024**3


def part(results: dict, name: str, fn) -> None:
    t = time.time()
    try:
        results[name] = {**fn(), "seconds": round(time.time() - t, 1), "ok": True}
    except Exception as exc:  # one broken part must not hide the others' results
        results[name] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:2000],
                         "trace": traceback.format_exc()[-3000:]}
    print(f"[{name}] {json.dumps(results[name], default=str)[:1500]}", flush=True)


def main() -> None:
    ap = run_parser(__doc__, steps=12, seq=1024, batch=8, quant="4bit")
    ap.add_argument("--parts", default="stop_resume,forced_oom,merged_from_4bit,gguf_offline",
                    help="which parts to run; the others keep their results from an earlier run's JSON")
    args = ap.parse_args()
    from nbkit.loading import backend

    backend.ensure()
    import torch

    from nbkit.exporting import export
    from nbkit.loading import models
    from nbkit.training import train
    from nbkit.planning.config import RunConfig
    from nbkit.training.events import RunObserver, StopControl
    from nbkit.exporting.verify import snapshot

    path = random_model(args.arch)
    data = synthetic_data(args.batch * args.steps, args.seq)

    def config(**changes):
        base = dict(model=path, quantization=args.quant, max_seq_length=args.seq, batch_size=args.batch,
                    grad_accum=1, max_steps=args.steps, save_steps=4, learning_rate=5e-4, warmup_steps=1,
                    save_minutes=0, output_dir=scratch_dir("survive"))
        return RunConfig(**{**base, **changes})

    name = f"session_survival_{args.arch}_{args.quant}.json"
    earlier = RESULTS / name
    results: dict = json.loads(earlier.read_text()) if earlier.exists() else {}
    results.update({"args": vars(args), "gpu": torch.cuda.get_device_name()})
    state: dict = {}

    def stop_resume():
        cfg = config()
        loaded = models.load(cfg, check_memory=False)
        ref = train.run(loaded, data)
        ref_lora = snapshot(loaded.model)
        del loaded
        torch.cuda.empty_cache()

        class StopAt(RunObserver):
            def __init__(self, stop):
                self.stop = stop

            def step_finished(self, info):
                if info.step == 5:
                    self.stop.request("bench stop")

        cfg2 = config()
        loaded = models.load(cfg2, check_memory=False)
        stop = StopControl()
        first = train.run(loaded, data, [StopAt(stop)], stop=stop)
        del loaded
        torch.cuda.empty_cache()
        loaded = models.load(cfg2, check_memory=False)
        second = train.run(loaded, data, resume=True)
        lora = snapshot(loaded.model)
        del loaded
        torch.cuda.empty_cache()
        worst_loss = max(abs(a[1] - b[1]) for a, b in zip(ref.losses, second.losses))
        worst_lora = max((lora[k] - ref_lora[k]).abs().max().item() for k in ref_lora)
        scale = max(v.abs().max().item() for v in ref_lora.values())
        return {"stopped_at": first.steps, "stopped": first.stopped, "resumed_from": second.resumed_from,
                "steps": second.steps, "ref_losses": ref.losses, "resumed_losses": second.losses,
                "max_loss_diff": worst_loss, "max_lora_diff": worst_lora, "max_lora_abs": scale,
                "checkpoints": first.checkpoints}

    def forced_oom():
        # a larger step than the others, so that activations dominate what a step needs
        cfg = config(batch_size=args.batch * 2, max_seq_length=args.seq * 2)
        rows = synthetic_data(cfg.batch_size * args.steps, cfg.max_seq_length)
        loaded = models.load(cfg, check_memory=False)
        total = torch.cuda.mem_get_info()[1]

        class LowerCap(RunObserver):
            """Step 2 ends: measure step 3. Step 3 ends: cap this process at what lies allocated between steps
            plus 70% of what step 3 needed on top, and empty the cache, so that the next step must allocate
            anew under the cap: batch B no longer fits, B/2 does."""

            def step_finished(self, info):
                if info.step == 2:
                    torch.cuda.synchronize()
                    state["between_steps"] = torch.cuda.memory_allocated()
                    torch.cuda.reset_peak_memory_stats()
                elif info.step == 3 and "cap" not in state:
                    torch.cuda.synchronize()
                    need = torch.cuda.max_memory_allocated() - state["between_steps"]
                    cap = state["between_steps"] + 0.7 * need
                    state["cap"], state["step_need"] = cap / GIB, need / GIB
                    torch.cuda.set_per_process_memory_fraction(cap / total)
                    torch.cuda.empty_cache()

        result = train.run(loaded, rows, [LowerCap()])
        torch.cuda.set_per_process_memory_fraction(1.0)
        out = {"cap_gib": state.get("cap"), "step_need_gib": state.get("step_need"),
               "between_steps_gib": state.get("between_steps", 0) / GIB, "steps": result.steps,
               "notes": result.notes, "start_batch": cfg.batch_size, "final_batch": loaded.config.batch_size,
               "final_grad_accum": loaded.config.grad_accum, "losses": result.losses}
        del loaded
        torch.cuda.empty_cache()
        return out

    def merged_from_4bit():
        """A 4-bit run with adapters trained hard enough to move the outputs, merged and reloaded in plain
        transformers (bf16). A random-weight model's next-token scores are nearly flat, so greedy tokens alone
        say little: the whole logits are compared too, against the adapters-off model as the yardstick."""
        from transformers import AutoModelForCausalLM

        cfg = config(learning_rate=1e-2, max_steps=10, save_steps=0)
        loaded = models.load(cfg, check_memory=False)
        train.run(loaded, data)
        state["merge_loaded"] = loaded
        tok = loaded.tokenizer
        ids = torch.tensor([data.train[0]["input_ids"][:256]], device="cuda")
        from unsloth import FastLanguageModel

        FastLanguageModel.for_inference(loaded.model)
        with torch.no_grad():
            mem_logits = loaded.model(input_ids=ids).logits.float()
            with loaded.model.disable_adapter():
                base_logits = loaded.model(input_ids=ids).logits.float()
            mem_tokens = loaded.model.generate(input_ids=ids[:, :32], max_new_tokens=24, do_sample=False,
                                               pad_token_id=tok.pad_token_id)[0, 32:].tolist()
        FastLanguageModel.for_training(loaded.model)
        out = Path(scratch_dir("merged")) / "merged_16bit"
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
        t = time.time()
        export.save_merged(loaded, out)
        merge_s = time.time() - t
        peak_alloc = torch.cuda.max_memory_allocated() / GIB
        peak_reserved = torch.cuda.max_memory_reserved() / GIB
        disk = sum(p.stat().st_size for p in out.rglob("*") if p.is_file()) / GIB
        reloaded = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16, device_map={"": 0}).eval()
        with torch.no_grad():
            new_logits = reloaded(input_ids=ids).logits.float()
            new_tokens = reloaded.generate(input_ids=ids[:, :32], max_new_tokens=24, do_sample=False,
                                           pad_token_id=tok.pad_token_id)[0, 32:].tolist()
        same = next((i for i, (a, b) in enumerate(zip(mem_tokens, new_tokens)) if a != b), len(mem_tokens))

        def rel(a, b):
            return ((a - b).norm() / b.norm()).item()

        dtypes = sorted({str(p.dtype) for p in reloaded.parameters()})
        del reloaded
        torch.cuda.empty_cache()
        state["merged"] = out
        return {"merge_seconds": merge_s, "allocated_before_gib": before / GIB, "peak_allocated_gib": peak_alloc,
                "peak_reserved_gib": peak_reserved, "disk_gib": disk, "dtypes": dtypes,
                "logits_rel_err_merged_vs_in_memory": rel(new_logits, mem_logits),
                "logits_rel_err_adapters_off_vs_in_memory": rel(base_logits, mem_logits),
                "top1_agreement_merged_vs_in_memory": (new_logits.argmax(-1) == mem_logits.argmax(-1))
                .float().mean().item(),
                "top1_agreement_adapters_off_vs_in_memory": (base_logits.argmax(-1) == mem_logits.argmax(-1))
                .float().mean().item(),
                "in_memory_tokens": mem_tokens, "reloaded_tokens": new_tokens, "same_greedy_prefix": same,
                "identical_greedy": mem_tokens == new_tokens}

    def gguf_offline():
        loaded = state["merge_loaded"]
        out = Path(scratch_dir("gguf")) / "gguf"
        t = time.time()
        export.save_gguf(loaded, out, "q8_0")
        files = {p.name: p.stat().st_size / GIB for p in out.iterdir()}
        return {"seconds_total": time.time() - t, "files_gib": files}

    chosen = args.parts.split(",")
    for label, fn in (("stop_resume", stop_resume), ("forced_oom", forced_oom),
                      ("merged_from_4bit", merged_from_4bit), ("gguf_offline", gguf_offline)):
        if label in chosen and (label != "gguf_offline" or "merge_loaded" in state):
            part(results, label, fn)
    shutil.rmtree(state.get("merged", "/nonexistent"), ignore_errors=True)
    write_json(name, results)


if __name__ == "__main__":
    main()
