"""Steady-state training speed: nbkit's workflow (progress display on) vs raw Unsloth (same settings, no nbkit).

python bench/throughput.py --arch 1b --quant 16bit --seq 2048 --batch 4 --steps 8
Both runs use the same random-weight model, synthetic rows of exactly `seq` tokens, LoRA r=16 on all linear
layers and TRL's SFTTrainer; speed is the median step time after 2 warm-up (compilation) steps. The raw run goes
first; its compiled kernels may be cached for the nbkit run, so read a ratio near 1 as "no slower". Writes bench/results/throughput_<arch>_<quant>.json.
"""
from __future__ import annotations

import argparse
from common import free_cuda, print_table, random_model, step_timer, synthetic_data, write_json


def raw_unsloth(path, args, data):
    from trl import SFTConfig, SFTTrainer
    from unsloth import FastLanguageModel

    model, tok = FastLanguageModel.from_pretrained(model_name=path, max_seq_length=args.seq,
                                                   load_in_4bit=args.quant == "4bit", dtype=None)
    model = FastLanguageModel.get_peft_model(
        model, r=16, lora_alpha=16, lora_dropout=0.0, bias="none", use_gradient_checkpointing="unsloth",
        target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"])
    timer = step_timer()
    trainer = SFTTrainer(model=model, processing_class=tok, train_dataset=data.train, callbacks=[timer],
                         args=SFTConfig(output_dir="/tmp/raw", per_device_train_batch_size=args.batch,
                                        gradient_accumulation_steps=1, max_steps=args.steps, learning_rate=2e-4,
                                        optim="adamw_8bit", logging_steps=1, report_to="none", bf16=True,
                                        max_length=args.seq, save_strategy="no"))
    trainer.train()
    return timer


def with_nbkit(path, args, data):
    from nbkit import models, train
    from nbkit.config import RunConfig

    cfg = RunConfig(model=path, quantization=args.quant, max_seq_length=args.seq, batch_size=args.batch,
                    grad_accum=1, max_steps=args.steps, save_steps=0, output_dir="/tmp/nbk")
    loaded = models.load(cfg, check_memory=False)
    timer = step_timer()
    train.run(loaded, data, callbacks=[timer], progress=True)  # the progress display stays on
    return timer


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--arch", default="1b")
    ap.add_argument("--quant", default="16bit")
    ap.add_argument("--seq", type=int, default=2048)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--steps", type=int, default=8)
    args = ap.parse_args()
    from nbkit import backend

    backend.ensure()
    path = random_model(args.arch)
    data = synthetic_data(args.batch * args.steps, args.seq)
    rows = []
    for name, fn in (("raw unsloth", raw_unsloth), ("nbkit", with_nbkit)):
        free_cuda()
        timer = fn(path, args, data)
        step = timer.steady()
        rows.append({"run": name, "steps_timed": len(timer.times) - 2, "median_step_s": step,
                     "tokens_per_s": args.batch * args.seq / step})
    rows.append({"run": "nbkit / raw", "tokens_per_s": rows[1]["tokens_per_s"] / rows[0]["tokens_per_s"]})
    print_table(rows, ["run", "steps_timed", "median_step_s", "tokens_per_s"])
    write_json(f"throughput_{args.arch}_{args.quant}.json", {"args": vars(args), "rows": rows})


if __name__ == "__main__":
    main()
