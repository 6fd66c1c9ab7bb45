"""The measuring part of bench/moe_full.py: one full run (plan, workflow.run, exports) and the merged export's check.
Imported by moe_full.py's child processes only (each child: one model)."""
from __future__ import annotations

import json
import math
import time
from pathlib import Path

WORDS = ("river stone lantern garden copper window morning signal harbor meadow pencil orbit violet thunder "
         "candle forest anchor marble velvet summit").split()


def long_rows(model: str, seq: int, n: int, folder: Path) -> Path:
    """A JSONL of `n` instruction rows whose answers run past `seq` tokens: each trains cut to exactly `seq`, the
    worst case the plan is for. Twenty words over and over: few distinct tokens, which a random router sends to
    few experts."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model)
    sample = " ".join(WORDS * 10)
    per_word = len(tok(sample)["input_ids"]) / (len(WORDS) * 10)
    words = math.ceil((seq + 200) / per_word)
    path = folder / "long_rows.jsonl"
    with path.open("w") as f:
        for i in range(n):
            text = " ".join(WORDS[(i * 7 + j * 3) % len(WORDS)] for j in range(words))
            f.write(json.dumps({"instruction": f"Write passage {i}.", "output": text}) + "\n")
    return path


def part_full(path: str, card: str, steps: int, merged: bool, varied: bool = False, before: bool = True) -> dict:
    """recommend() on the rehearsed card, then workflow.run on full-length rows: plan vs peaks, answers, exports.
    `varied`: the workflow trains on random-id rows instead (those train.run's measurements used); `before=False`: no answers generated (the cause phase of moe_full.py
    asks whether generating before training changes what training holds)."""
    from nbkit.loading import backend

    backend.ensure()
    import torch

    from nbkit import workflow
    from nbkit.planning.cards import emulate, end_rehearsal
    from nbkit.planning.recommend import recommend
    from nbkit.specs import spec_for

    from common import scratch_dir

    gpu = emulate(card)
    spec = spec_for(path)
    rec = recommend(spec, gpu)
    plan = rec.breakdown
    out = {"card": card, "describe": spec.describe(), "layers": spec.num_hidden_layers, "reason": rec.reason,
           "fits": getattr(rec, "fits", None), "predicted": plan.as_dict(),
           "planned_allocated_gib": getattr(plan, "allocated", None), "planned_reserved_gib": plan.reserved,
           "spec": vars(spec)}
    print(f"[plan] {spec.describe()} on {card}: {rec.reason}\n{plan.table()}", flush=True)
    work = Path(scratch_dir("full"))
    cfg0 = rec.config
    data_file = long_rows(path, cfg0.max_seq_length, cfg0.batch_size * cfg0.grad_accum * steps + 2, work)
    if varied:  # the rows train.run measured the plan on: random ids over ~1000 tokens, every one labelled
        from nbkit.loading import data

        from common import synthetic_data

        data.prepare = lambda config, tokenizer: synthetic_data(len(data_file.read_text().splitlines()),
                                                               config.max_seq_length)
    if not before:
        from nbkit.exporting import generate

        generate.generate = lambda *args, **kwargs: "(not generated: cause phase)"
    cfg = cfg0.replace(model=path, output_dir=str(work / "run"), max_steps=steps, save_steps=0, warmup_steps=1,
                       dataset=str(data_file))
    out["config"] = cfg.to_dict()
    t = time.perf_counter()
    report = workflow.run(cfg, merged=merged)
    out["workflow_seconds"] = time.perf_counter() - t
    out["process_allocated_gib"] = torch.cuda.max_memory_allocated() / 1024**3
    out["process_reserved_gib"] = torch.cuda.max_memory_reserved() / 1024**3
    r = report.to_dict()
    out.update({"train_allocated_gib": report.train.peak_allocated_gib, "train_reserved_gib": report.train.peak_vram_gib,
                "tokens_per_second": report.train.tokens_per_second, "summary": report.summary(),
                "ok": report.ok, "report": {k: v for k, v in r.items() if k != "config"},
                "adapter_files": sorted(p.name for p in Path(report.adapter_dir).iterdir())})
    if merged and report.merged_dir:
        end_rehearsal()
        torch.cuda.empty_cache()
        out["merged_files"] = sorted(p.name for p in Path(report.merged_dir).iterdir())
        out["merged_vs_base"] = tensor_changes(path, report.merged_dir)
        out["merged_answer"] = merged_answer(report.merged_dir, report.sample_after)
    return out


def kind_of(name: str) -> str:
    for key, kind in ((".experts.", "experts"), ("self_attn", "attention"), ("mlp.gate.", "router"),
                      ("router", "router"), ("embed", "embeddings"), ("lm_head", "lm_head"), ("norm", "norms"),
                      ("mlp.", "mlp")):
        if key in name:
            return kind
    return "other"


def tensor_changes(source: str, merged: str) -> dict:
    """Per kind of weight (attention, experts, router, ...): how many tensors the merge changed and by how much
    (largest |merged - base| over largest |base|), and the names in one folder only."""
    from safetensors import safe_open

    def index(folder):
        found = {}
        for f in sorted(Path(folder).glob("*.safetensors")):
            with safe_open(str(f), "pt") as h:
                found.update({k: f for k in h.keys()})
        return found

    a, b = index(source), index(merged)
    kinds: dict[str, dict] = {}
    for name in sorted(a.keys() & b.keys()):
        with safe_open(str(a[name]), "pt") as ha, safe_open(str(b[name]), "pt") as hb:
            x, y = ha.get_tensor(name).float(), hb.get_tensor(name).float()
        k = kinds.setdefault(kind_of(name), {"tensors": 0, "changed": 0, "largest_relative_change": 0.0,
                                            "shape_mismatch": 0})
        k["tensors"] += 1
        if x.shape != y.shape:
            k["shape_mismatch"] += 1
            continue
        diff = (x - y).abs().max().item() / max(x.abs().max().item(), 1e-12)
        k["changed"] += diff > 0
        k["largest_relative_change"] = max(k["largest_relative_change"], diff)
    return {"kinds": kinds, "only_in_base": sorted(a.keys() - b.keys())[:12],
            "only_in_merged": sorted(b.keys() - a.keys())[:12]}


def merged_answer(folder: str, trained_answer: str) -> dict:
    """The merged folder loaded as a user would (transformers, no peft), answering the workflow's prompt greedily."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from nbkit.workflow import DEFAULT_PROMPT

    try:
        tok = AutoTokenizer.from_pretrained(folder)
        model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.bfloat16, device_map="cuda")
        ids = tok.apply_chat_template([{"role": "user", "content": DEFAULT_PROMPT}], add_generation_prompt=True,
                                      return_tensors="pt", return_dict=True).to("cuda")
        new = model.generate(**ids, max_new_tokens=24, do_sample=False)[0, ids["input_ids"].shape[1]:]
        answer = tok.decode(new, skip_special_tokens=True)
        return {"answer": answer, "trained_answer": trained_answer[:200],
                "same_start": answer[:40] == trained_answer[:40]}
    except Exception as exc:  # noqa: BLE001 — a merged folder that does not load is the finding
        return {"error": f"{type(exc).__name__}: {str(exc)[:400]}"}
